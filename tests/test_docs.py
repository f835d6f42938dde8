"""The docs site: builds offline from the notebooks with the README's command, and shows what it should
(checked in the built HTML and, where rendering matters, in headless Chromium)."""
import base64, io, json, re, shutil, subprocess, sys, tempfile
from html.parser import HTMLParser
from pathlib import Path
import pytest
from conftest import ROOT

BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb"))
SHOTS = ROOT / "docs" / "_build" / "screenshots"              # screenshots for review (git-ignored)

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("sphinx", reason="docs extra not installed: pip install -e '.[docs]'")
    pytest.importorskip("myst_nb", reason="docs extra not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("html")
    p = subprocess.run([str(BIN / "sphinx-build"), "-b", "html", "-q", str(ROOT / "docs"), str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    return out

def chromium(*args, timeout=120) -> str:
    if CHROMIUM is None: pytest.skip("chromium not installed (apt-get install chromium): rendering check skipped")
    p = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tempfile.mkdtemp()}", "--virtual-time-budget=10000", *args],
                       capture_output=True, text=True, timeout=timeout)
    return p.stdout

class _Text(HTMLParser):
    "The text a reader sees in the article: without code blocks, collapsed sources, scripts and styles."
    SKIP = {"pre", "script", "style", "details", "code"}
    def __init__(self):
        super().__init__(); self.depth, self.parts = 0, []
    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP: self.depth += 1
    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth: self.depth -= 1
    def handle_data(self, data):
        if not self.depth: self.parts.append(data)

def visible_text(html: str) -> str:
    t = _Text(); t.feed(html.split('<article', 1)[-1].split('</article>', 1)[0]); return "".join(t.parts)

# ------------------------------------------------------------------------------------------------- the build
def test_every_notebook_has_a_page(site):
    for nb in NOTEBOOKS:
        assert (site / "nbs" / f"{nb}.html").exists(), nb
    for page in ("api.html", "method.html", "index.html", "search.html"): assert (site / page).exists(), page

def test_navigation_lists_the_notebooks_in_learning_order(site):
    html = (site / "api.html").read_text()                               # the current page's own link is "#"
    nav = html.split('class="bd-docs-nav', 1)[1].split("</nav>", 1)[0]
    hrefs = re.findall(r'href="([^"#]+)"', nav)
    order = [Path(h).stem for h in hrefs]
    for a, b in [("01_data", "02_tokenizer"), ("05_rewards", "method"), ("method", "06_reinforce"), ("08c_evaluate", "09_cli")]:
        assert order.index(a) < order.index(b), order
    assert {"01_data", "07_variance", "08c_evaluate", "10_rl_study", "train", "plots"} <= set(order)

def test_pages_hide_nbdev_directives_and_hidden_cells(site):
    for page in (site / "nbs").glob("*.html"):
        html = page.read_text()
        assert "#| export" not in html and "#| hide" not in html and "#| notest" not in html and "#| echo" not in html, page.name
        assert "from fastcore.test import" not in html, page.name                 # a `#| hide` cell

def test_no_raw_table_pipes_on_any_page(site):
    pages = list((site / "nbs").glob("*.html")) + [site / "api.html", site / "method.html"]
    for page in pages:
        text = visible_text(page.read_text())
        bad = [l for l in text.splitlines() if re.search(r"\|\s*:?-{3,}:?\s*\|", l)]
        assert not bad, f"{page.name}: a markdown table rendered as text: {bad[0][:120]}"

def test_notebook_tables_are_well_formed():
    "Every markdown table in the notebooks: a header, a delimiter row, and the same number of cells in every row."
    def cells(row):
        row = re.sub(r"`[^`]*`", "x", row.replace("\\|", ""))           # escaped pipes and code spans are not separators
        return row.strip().strip("|").count("|") + 1
    for nb in NOTEBOOKS:
        for c in json.loads((ROOT / "nbs" / f"{nb}.ipynb").read_text())["cells"]:
            if c["cell_type"] != "markdown": continue
            lines, src = [], "".join(c["source"]).replace("```", "\0").split("\0")
            text = "".join(s for i, s in enumerate(src) if i % 2 == 0)        # outside code fences
            blocks = re.findall(r"(?:^\|.*\|[ \t]*\n?)+", text, flags=re.M)
            for b in blocks:
                rows = b.strip("\n").splitlines()
                assert len(rows) >= 2 and re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", rows[1].strip()), \
                    f"{nb} cell {c['id']}: table without a delimiter row (a blank line splitting a table?): {rows[0][:80]}"
                n = cells(rows[0])
                for r in rows[1:]:
                    assert cells(r) == n, f"{nb} cell {c['id']}: {cells(r)} cells instead of {n} (a | inside $...$?): {r[:100]}"

def test_display_math_stands_in_its_own_paragraph():
    "A `$$...$$` block inside a paragraph renders as text with stray dollar signs: it needs a blank line (or the cell's edge) on each side."
    for nb in NOTEBOOKS:
        for c in json.loads((ROOT / "nbs" / f"{nb}.ipynb").read_text())["cells"]:
            if c["cell_type"] != "markdown": continue
            lines, fenced, i = "".join(c["source"]).splitlines(), False, 0
            while i < len(lines):
                l = lines[i].strip()
                if l.startswith("```"): fenced = not fenced
                if fenced or not l.startswith("$$"): i += 1; continue
                j = i if "$$" in l[2:] else next((k for k in range(i + 1, len(lines)) if "$$" in lines[k]), len(lines) - 1)
                before, after = lines[i - 1].strip() if i else "", lines[j + 1].strip() if j + 1 < len(lines) else ""
                assert before == "" and after == "", f"{nb} cell {c['id']}: display math inside a paragraph: {l[:80]}"
                i = j + 1

def test_evaluation_page_shows_its_results_as_tables(site):
    html = (site / "nbs" / "08c_evaluate.html").read_text()
    outputs = re.findall(r'<div class="cell_output[^"]*">(.*?)(?=<div class="cell[ "]|</article>)', html, flags=re.S)
    tables = [t for o in outputs for t in re.findall(r"<table.*?</table>", o, flags=re.S)]
    numeric = [t for t in tables if len(re.findall(r"<td[^>]*>\s*(?:<p>)?\s*-?\d+\.\d+", t)) >= 5]
    assert len(numeric) >= 2, f"the evaluation page needs its result and bootstrap tables; found {len(numeric)} numeric output tables"

def test_results_render_as_tables_where_notebooks_print_them(site):
    for nb in ("06b_rl_run", "train"):
        html = (site / "nbs" / f"{nb}.html").read_text()
        out = "".join(re.findall(r'<div class="cell_output.*?(?=<div class="cell[ "]|</article>)', html, flags=re.S))
        assert "<table" in out, f"{nb}: the run summary is not a table"

# ------------------------------------------------------------------------------------------------- API
def test_api_reference_documents_the_exports_with_parameter_tables(site):
    api = lambda m: (site / "api" / f"{m}.html").read_text()
    for name in ("btc_rl.tokenizer.load_tokenizer", "btc_rl.checkpoint.load_checkpoint", "btc_rl.rl_run.reinforce_finetune",
                 "btc_rl.pipeline.ensure_prerequisites", "btc_rl.scoring.crps_discrete", "btc_rl.study.run_study"):
        assert f'id="{name}"' in api(name.split(".")[1]), name
    for name in ("btc_rl.data.load_prices", "btc_rl.data.synthetic_prices", "btc_rl.tokenizer.build_tokenizer",
                 "btc_rl.reinforce.RLConfig", "btc_rl.evaluate.EvalConfig"):        # definitions with docments
        html = api(name.split(".")[1])
        assert f'id="{name}"' in html, name
        entry = html.split(f'id="{name}"', 1)[1].split('<dl class="py', 1)[0]
        assert 'class="docments' in entry and "<table" in entry, f"{name}: no parameter table"

def test_api_has_one_page_per_module_and_every_entry_links_to_its_source(site):
    modules = sorted(p.stem for p in (ROOT / "btc_rl").glob("*.py") if not p.stem.startswith("_"))
    index = (site / "api.html").read_text()
    for m in modules:
        html = (site / "api" / f"{m}.html").read_text()
        assert f'href="api/{m}.html"' in index, f"api.html does not link the {m} page"
        entries = re.findall(r'<dt class="sig sig-object py" id="(btc_rl\.[^"]+)">(.*?)</dt>', html, flags=re.S)
        assert entries, f"api/{m}.html documents nothing"
        for name, dt in entries:
            assert "viewcode-link" in dt, f"{name}: no [source] link"

def test_notebook_pages_show_exports_as_show_doc_entries(site):
    html = (site / "nbs" / "06b_rl_run.html").read_text()
    sec = html.split('id="reinforce-finetune"', 1)[1][:20000]
    assert "def reinforce_finetune(" in re.sub(r"<[^>]+>", "", sec[:3000]), "signature missing"
    assert '<details class="nbdev-source">' in sec, "the source should be one click away"
    html = (site / "nbs" / "06_reinforce.html").read_text()
    cfg = html.split('id="rlconfig"', 1)[1].split('<details class="nbdev-source">', 1)[0]
    assert "class RLConfig(" in re.sub(r"<[^>]+>", "", cfg) and '<table class="docments' in cfg, "RLConfig: signature and docments table"
    assert "optimizer steps" in visible_text(html)                        # a docment of RLConfig, in its table
    for page in (site / "nbs").glob("*.html"):                              # exported code sits in collapsed blocks only
        assert "# %% " not in page.read_text(), page.name

def test_method_page_links_every_name_to_its_api_entry(site):
    html = (site / "method.html").read_text()
    for name in ("btc_rl.rewards.crps", "btc_rl.rewards.energy", "btc_rl.rewards.pnl", "btc_rl.rewards.token_acc",
                 "btc_rl.rewards.return_mse", "btc_rl.reinforce.advantages", "btc_rl.reinforce.kl_loss",
                 "btc_rl.rewards.group_baseline", "btc_rl.reinforce.RLConfig"):
        m, obj = name.split(".")[1], name
        assert re.search(rf'href="api/{m}\.html#{re.escape(obj)}"', html), f"method.html: no link to {name}"
    text = re.sub(r"<[^>]+>", " ", html.split("<article", 1)[1])
    for word in ("group_norm", "ema", "loo", "KL", "proper", "group rollouts"):
        assert word.lower() in text.lower(), word

def test_no_nan_in_any_rendered_table(site):
    pages = list((site / "nbs").glob("*.html")) + [site / "method.html"]
    for page in pages:
        for t in re.findall(r"<table.*?</table>", page.read_text(), flags=re.S):
            if 'class="docments' in t[:200]: continue                      # parameter docs may say what NaN means
            text = lambda h: " ".join(re.sub(r"<[^>]+>", " ", h).split())
            cells = [text(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", t, flags=re.S)]
            bad = [c for c in cells if re.fullmatch(r"[-+]?nan\s*%?", c, flags=re.I)]   # a NaN value, not prose about NaN
            assert not bad, f"{page.name}: a table shows NaN: {text(t)[:200]}"

def test_figures_have_alt_text_that_says_what_they_show(site):
    for page in (site / "nbs").glob("*.html"):
        for img in re.findall(r"<img[^>]*>", page.read_text()):
            alt = re.search(r'alt="([^"]*)"', img)
            assert alt and len(alt.group(1)) > 20, f"{page.name}: an image without alt text: {img[:120]}"
            assert not re.fullmatch(r"[0-9a-f]{16,}", alt.group(1).split("/")[-1].split(".")[0]), f"{page.name}: hash alt {alt.group(1)}"

# ------------------------------------------------------------------------------------------------- offline
def test_search_and_math_are_offline(site):
    assert (site / "searchindex.js").exists() and (site / "search.html").exists()
    assert re.search(r'"reinforc', (site / "searchindex.js").read_text()), "REINFORCE is not in the search index"
    for page in ("nbs/06_reinforce.html", "method.html"):
        html = (site / page).read_text()
        scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', html, flags=re.I)
        assert scripts and not any(s.startswith(("http:", "https:", "//")) for s in scripts), scripts

# ------------------------------------------------------------------------------------------------- rendered (Chromium)
def test_math_is_typeset(site):
    for page in ("nbs/06_reinforce.html", "method.html"):
        dom = chromium("--dump-dom", (site / page).as_uri())
        assert "mjx-container" in dom, f"{page}: MathJax did not render the equations"

def test_search_finds_reinforce(site):
    dom = chromium("--dump-dom", (site / "search.html").as_uri() + "?q=REINFORCE")
    results = re.findall(r'<li[^>]*class="[^"]*kind-[^"]*"', dom) or re.findall(r"<li><a[^>]+href=\"[^\"]+\.html", dom)
    assert results, "search.html?q=REINFORCE lists no results"

def test_variance_figures_are_wide_enough_to_read(site):
    js = ("document.querySelectorAll('div.cell_output img').forEach(i=>"
          "i.setAttribute('data-rendered-width',Math.round(i.getBoundingClientRect().width)))")
    dom = _probe(site / "nbs" / "07_variance.html", js, "--window-size=1400,1800")
    widths = [int(w) for w in re.findall(r'data-rendered-width="(\d+)"', dom)]
    assert len(widths) >= 2, "the variance page needs the variance-vs-batch-size and training-curve plots"
    assert min(widths) >= 800, f"figures rendered {widths} px wide at a 1400 px window (want >= 800)"

def _probe(page: Path, js: str, *args) -> str:
    "Chromium's DOM of `page` after `js` ran on load (a copy beside the page, so relative paths still resolve)."
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(page.read_text().replace("</body>", f"<script>window.addEventListener('load',()=>{{{js}}})</script></body>"))
    return chromium(*args, "--run-all-compositor-stages-before-draw", "--dump-dom", probe.as_uri())

def test_the_front_page_opens_with_the_verdict_table_from_the_json(site):
    vj = json.loads((ROOT / "docs" / "results" / "verdict.json").read_text())
    js = ("const t=document.querySelector('article table');if(t){document.body.setAttribute('data-top',"
          "Math.round(t.getBoundingClientRect().top));document.body.setAttribute('data-cells',JSON.stringify("
          "[...t.querySelectorAll('tr')].map(r=>[...r.children].map(c=>c.textContent.trim()))))}")
    dom = _probe(site / "nbs" / "index.html", js, "--window-size=1280,800")
    top = re.search(r'data-top="(-?\d+)"', dom)
    assert top, "the front page has no table"
    assert int(top.group(1)) < 800, f"the verdict table starts {top.group(1)} px down, below the first screen"
    rows = json.loads(html_unescape(re.search(r"data-cells=\"([^\"]*)\"", dom).group(1)))
    head, body = rows[0], rows[1:]
    assert head[:3] == ["assets", "horizon", "policy"] and {"vs static", "vs GARCH-t", "vs GJR-t", "vs SFT"} <= set(head)
    h, checked = vj["h"], 0
    for r in body:
        scope, hz, policy = r[:3]
        key_hz = "1d" if hz == "1 day" else h
        for col, cell in zip(head[3:], r[3:]):
            if col == "vs SFT":
                if not policy.startswith("RL"): assert cell == ""; continue
                d = vj["numbers"][f"{scope} | RL - SFT | {key_hz}"]
                want = (-d["estimate"], -d["hi"], -d["lo"])                 # RL - SFT (% of SFT) shown as a skill
            else:
                d = vj["numbers"][f"{scope} | {policy} | {col} | {key_hz}"]
                want = (100 * d["estimate"], 100 * d["lo"], 100 * d["hi"])
            got = [float(x) for x in re.findall(r"[-+]?\d+\.\d+", cell.replace("\u2212", "-"))]
            assert got == pytest.approx(want, abs=0.0051), f"{scope} / {hz} / {policy} / {col}: {cell} vs {want}"
            checked += 1
    assert checked >= 2 * 2 * 3 * 3, checked

def html_unescape(s: str) -> str:
    import html
    return html.unescape(s)

def test_no_horizontal_scroll_at_phone_width(site):
    "At 420 px (an iframe: headless Chromium's window is at least 500 px wide) nothing makes the page scroll sideways."
    for page in ("index", "07_variance", "08c_evaluate", "10_rl_study", "../method"):
        p = site / "nbs" / f"{page}.html"
        wrap = p.with_name(f"_phone_{p.name}")
        js = ("const d=document.getElementById('f').contentDocument;"
              "document.body.setAttribute('data-sw',d.documentElement.scrollWidth)")
        wrap.write_text(f"<html><body><iframe id='f' src='{p.name}' width='420' height='900'></iframe><script>"
                        f"document.getElementById('f').addEventListener('load',()=>{{{js}}})</script></body></html>")
        dom = chromium("--allow-file-access-from-files", "--window-size=800,1000", "--run-all-compositor-stages-before-draw",
                       "--dump-dom", wrap.as_uri())
        sw = re.search(r'data-sw="(\d+)"', dom)
        assert sw, f"{page}: the page did not load in the phone-width frame"
        assert int(sw.group(1)) <= 420, f"{page}: the page scrolls sideways at 420 px ({sw.group(1)} px wide)"

def test_evaluation_page_screenshot(site):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for nb in ("08c_evaluate", "index"):
        shot = SHOTS / f"{nb}.png"
        chromium(f"--screenshot={shot}", "--window-size=1400,2400", (site / "nbs" / f"{nb}.html").as_uri())
        assert shot.exists() and shot.stat().st_size > 20_000, shot
    print(f"screenshots for review: {SHOTS}")

# ------------------------------------------------------------------------------------------------- run cards
def _git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)

def _code_cells(text: str) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "code"]

def run_cards() -> dict:
    "notebook -> (commit, dirty) of the run card in its stored outputs."
    cards = {}
    for nb in NOTEBOOKS:
        for c in json.loads((ROOT / "nbs" / f"{nb}.ipynb").read_text())["cells"]:
            for o in c.get("outputs", []):
                d = o.get("data", {})
                text = "".join(d.get("text/markdown", d.get("text/plain", [])))
                m = re.search(r"\| git commit \| (\S+)( \(uncommitted changes\))? \|", text)
                if m: cards[nb] = (m.group(1), bool(m.group(2)))
    return cards

def test_every_run_card_names_the_code_of_head_and_a_clean_tree():
    if _git("rev-parse", "HEAD").returncode: pytest.skip("not a git checkout: run cards cannot be compared with HEAD")
    cards = run_cards()
    with_outputs = {nb for nb in NOTEBOOKS if any(c.get("outputs") for c in
                                                  json.loads((ROOT / "nbs" / f"{nb}.ipynb").read_text())["cells"])}
    assert with_outputs <= set(cards), f"notebooks with outputs and no run card: {sorted(with_outputs - set(cards))}"
    checked = set()
    for nb, (commit, dirty) in cards.items():
        assert not dirty, f"{nb}: its outputs come from uncommitted code ({commit}); commit, then regenerate"
        if commit in checked: continue
        checked.add(commit)
        if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode:
            if _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
                pytest.skip(f"shallow clone: the run cards' commit {commit} is not here")
            pytest.fail(f"{nb}: run card commit {commit} is not in this repository")
        changed = _git("diff", "--name-only", commit, "HEAD", "--", "btc_rl").stdout.split()
        assert not changed, f"{nb}: run at {commit}, and btc_rl/ has changed since: {changed[:5]}"
        for p in sorted((ROOT / "nbs").glob("*.ipynb")):
            old = _git("show", f"{commit}:nbs/{p.name}")
            head = _git("show", f"HEAD:nbs/{p.name}")
            if head.returncode: continue                                    # not committed yet: another test's concern
            assert old.returncode == 0 and _code_cells(old.stdout) == _code_cells(head.stdout), \
                f"{nb}: run at {commit}, and the code cells of nbs/{p.name} have changed since"

# ------------------------------------------------------------------------------------------------- notebook size
def test_notebooks_stay_small():
    "No notebook over 300 KB; figures go through `btc_rl.plots.use_plot_style` (palette PNGs)."
    from PIL import Image
    big = {}
    for nb in NOTEBOOKS:
        p = ROOT / "nbs" / f"{nb}.ipynb"
        if p.stat().st_size > 300_000: big[nb] = p.stat().st_size
    if not big: return
    def stale(nb):                                          # figures stored before the plot style (full-color PNGs)
        for c in json.loads((ROOT / "nbs" / f"{nb}.ipynb").read_text())["cells"]:
            for o in c.get("outputs", []):
                png = o.get("data", {}).get("image/png")
                if png and Image.open(io.BytesIO(base64.b64decode("".join(png)))).mode != "P": return True
        return False
    if all(stale(nb) for nb in big):
        pytest.xfail(f"over 300 KB with outputs stored before the plot style; re-execute: {big}")
    pytest.fail(f"notebooks over 300 KB: {big}")
