"""The docs site: builds offline from the notebooks with the README's command, and shows what it should."""
import re, shutil, subprocess, sys, tempfile
from pathlib import Path
import pytest
from conftest import ROOT

BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("sphinx", reason="docs extra not installed: pip install -e '.[docs]'")
    pytest.importorskip("myst_nb", reason="docs extra not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("html")
    p = subprocess.run([str(BIN / "sphinx-build"), "-b", "html", "-q", str(ROOT / "docs"), str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    return out

def test_every_notebook_has_a_page(site):
    for nb in (ROOT / "nbs").glob("*.ipynb"):
        assert (site / "nbs" / f"{nb.stem}.html").exists(), nb.stem
    assert (site / "api.html").exists() and (site / "index.html").exists()

def test_api_reference_documents_the_exports(site):
    api = (site / "api.html").read_text()
    for name in ("btc_rl.data.load_prices", "btc_rl.tokenizer.load_tokenizer", "btc_rl.model.load_checkpoint",
                 "btc_rl.reinforce.reinforce_finetune", "btc_rl.rewards.return_mse"):
        assert f'id="{name}"' in api, name

def test_pages_hide_nbdev_directives_and_hidden_cells(site):
    for page in (site / "nbs").glob("*.html"):
        html = page.read_text()
        assert "#| export" not in html and "#| hide" not in html and "#| notest" not in html, page.name
        assert "from fastcore.test import" not in html, page.name                 # a `#| hide` cell

def test_variance_page_holds_its_plots(site):
    html = (site / "nbs" / "07_variance.html").read_text()
    imgs = re.findall(r'<img[^>]+src="([^"]+\.png)"', html)
    assert len(imgs) >= 2, "the variance page needs the variance-vs-batch-size and training-curve plots"
    for src in imgs: assert (site / "nbs" / src).resolve().exists(), src

def test_search_and_math_are_offline(site):
    assert (site / "searchindex.js").exists() and (site / "search.html").exists()
    html = (site / "nbs" / "06_reinforce.html").read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', html, flags=re.I)
    assert scripts and not any(s.startswith(("http:", "https:", "//")) for s in scripts), scripts

def test_math_renders_and_variance_page_screenshot(site, tmp_path):
    if CHROMIUM is None: pytest.skip("chromium not installed (apt-get install chromium): rendering check skipped")
    url = (site / "nbs" / "06_reinforce.html").as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tempfile.mkdtemp()}", "--virtual-time-budget=10000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    assert "mjx-container" in dom, "MathJax did not render the equations"
    shot = tmp_path / "variance.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tempfile.mkdtemp()}", "--virtual-time-budget=10000",
                    f"--screenshot={shot}", "--window-size=1280,1600", (site / "nbs" / "07_variance.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000
