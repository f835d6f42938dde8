"""Sphinx config for the btc_rl docs site, built offline from the notebooks in nbs/:

    sphinx-build -b html docs docs/_build/html

Notebooks are rendered from their stored outputs (never executed here). Before the build, a copy of each
notebook is written to docs/nbs/ (git-ignored), cleaned the way nbdev's own docs are:

- nbdev's `#|` directive lines are dropped, and so are cells marked `#| hide` and the `default_exp` cells;
- a cell marked `#| echo: false` shows its outputs only (`#| output: false`: its source only);
- an exported cell (`#| export`) that defines functions or classes is shown as nbdev's `show_doc` shows it:
  for each public definition its signature, its docstring and a parameter table built from the docments
  (the comment after each parameter), with the cell's source one click away in a collapsed block.

Markdown outputs (result objects' `_repr_markdown_`, pandas `to_markdown`) are parsed as MyST, so their
tables render as tables. The API page (`api.md`, autodoc) gets the same parameter tables."""
import ast, html, importlib, inspect, json, re, shutil, sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
# learning order of the left navigation: the numbered notebooks in order, the method page (docs/method.md) before
# the REINFORCE notebook, then the job notebook `train`, the plot style, and the API page (docs/api.md)
def _order() -> list[str]:
    nbs = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb"))
    numbered = [n for n in nbs if n[:2].isdigit()]
    first06 = next((n for n in numbered if n.startswith("06")), None)
    out = ["index"] + [x for n in numbered for x in (["../method", n] if n == first06 else [n])]
    if "../method" not in out: out.append("../method")
    return out + [n for n in ("train", "plots") if n in nbs] + [n for n in nbs if n not in out and n not in ("train", "plots")] + ["../api"]
ORDER = _order()

# ---------------------------------------------------------------------------------------------------------
# show_doc: signature + docstring + docments table, as nbdev renders an exported definition
def _anno(a) -> str:
    if a is inspect.Parameter.empty: return ""
    if isinstance(a, str): return a
    return inspect.formatannotation(a)

def _default(d) -> str:
    if d is inspect.Parameter.empty: return ""
    return repr(d) if not hasattr(d, "__dataclass_fields__") else f"{type(d).__name__}()"

def _docments(obj) -> dict:
    "name -> (type, default, comment) from fastcore's docments; {} when there is nothing to document."
    try:
        from fastcore.docments import docments
        dm = docments(obj, full=True)
    except Exception: return {}
    out = {}
    for k, v in dm.items():
        if k in ("self", "cls"): continue
        if k == "return":
            if v.get("docment") or v.get("anno") not in (None, inspect.Signature.empty, inspect.Parameter.empty):
                out["return"] = (_anno(v.get("anno", inspect.Parameter.empty)), "", v.get("docment") or "")
            continue
        out[k] = (_anno(v.get("anno", inspect.Parameter.empty)), _default(v.get("default", inspect.Parameter.empty)),
                  v.get("docment") or "")
    return out

def _html_md(s: str) -> str:
    "Escape `s` for HTML, with markdown code spans as <code>."
    s = html.escape(s.replace("\n", " ").strip())
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

def params_table_md(obj) -> str:
    "nbdev's show_doc table of `obj`'s parameters (type, default, docment), as raw HTML; '' without docments."
    rows = _docments(obj)
    if not any(c for k, (t, d, c) in rows.items() if k != "return"): return ""
    code = lambda x: f"<code>{html.escape(x)}</code>" if x else ""
    body = "".join(f"<tr><td>{'<strong>Returns</strong>' if k == 'return' else code(k)}</td><td>{code(t)}</td><td>{code(d)}</td>"
                   f"<td>{_html_md(c)}</td></tr>" for k, (t, d, c) in rows.items())
    return ('<table class="docments table"><thead><tr><th></th><th>Type</th><th>Default</th><th>Details</th></tr></thead>'
            f"<tbody>{body}</tbody></table>")

def _signature(node: ast.AST, obj, qual: str) -> str:
    "`name(params) -> ret`, one parameter a line when long."
    if isinstance(node, ast.ClassDef):
        try: sig = inspect.signature(obj)
        except Exception: return f"class {qual}"
        ps = []
        for p in sig.parameters.values():
            s = p.name + (f": {_anno(p.annotation)}" if p.annotation is not p.empty else "")
            if p.default is not p.empty: s += f" = {_default(p.default)}"
            ps.append(s)
        head, ret = f"class {qual}", ""
    else:
        a = node.args
        ps = [ast.unparse(x) for x in a.posonlyargs]
        if a.posonlyargs: ps.append("/")
        defaults = [None] * (len(a.args) - len(a.defaults)) + list(a.defaults)
        for x, d in zip(a.args, defaults):
            if x.arg in ("self", "cls"): continue
            ps.append(ast.unparse(x) + (f" = {ast.unparse(d)}" if d is not None else ""))
        if a.vararg: ps.append("*" + ast.unparse(a.vararg))
        elif a.kwonlyargs: ps.append("*")
        for x, d in zip(a.kwonlyargs, a.kw_defaults):
            ps.append(ast.unparse(x) + (f" = {ast.unparse(d)}" if d is not None else ""))
        if a.kwarg: ps.append("**" + ast.unparse(a.kwarg))
        head, ret = ("async def " if isinstance(node, ast.AsyncFunctionDef) else "def ") + qual, \
                    (f" -> {ast.unparse(node.returns)}" if node.returns else "")
    one = f"{head}({', '.join(ps)}){ret}"
    if len(one) <= 100: return one
    return f"{head}(\n" + "".join(f"    {p},\n" for p in ps) + f"){ret}"

def _entry(node, obj, qual: str, level: int) -> str:
    doc = inspect.cleandoc(ast.get_docstring(node) or "")
    parts = [f"{'#' * min(level, 6)} {qual}", "", "```python", _signature(node, obj, qual), "```", ""]
    if doc: parts += [doc, ""]
    if obj is not None and not isinstance(node, ast.ClassDef) or (obj is not None and hasattr(obj, "__dataclass_fields__")):
        t = params_table_md(obj)
    elif obj is not None: t = params_table_md(obj.__init__) if "__init__" in vars(obj) else ""
    else: t = ""
    if t: parts += [t, ""]
    return "\n".join(parts)

def _public(node) -> bool: return not node.name.startswith("_")

def show_doc_md(src: str, module, level: int) -> str | None:
    "The markdown that replaces an exported cell's source; None if it defines nothing public."
    try: tree = ast.parse(src)
    except SyntaxError: return None
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    entries = []
    for node in tree.body:
        if not isinstance(node, defs) or not _public(node): continue
        obj = getattr(module, node.name, None) if module is not None else None
        entries.append(_entry(node, obj, node.name, level))
        if isinstance(node, ast.ClassDef):
            for m in node.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(m) and ast.get_docstring(m):
                    mobj = inspect.getattr_static(obj, m.name, None) if obj is not None else None
                    mobj = getattr(mobj, "__func__", mobj)
                    if isinstance(mobj, property): mobj = None
                    entries.append(_entry(m, mobj, f"{node.name}.{m.name}", level + 1))
    if not entries: return None
    return ("\n".join(entries) + '\n<details class="nbdev-source">\n<summary>Source</summary>\n\n'
            + "```python\n" + src + "\n```\n\n</details>\n")

# ---------------------------------------------------------------------------------------------------------
# notebook cleaning
def _flags(lines) -> dict:
    "nbdev / Quarto cell directives: `#| export` -> {'export': True}, `#| echo: false` -> {'echo': 'false'}."
    out = {}
    for l in lines:
        if not l.startswith("#|"): continue
        body = l[2:].strip()
        if ":" in body:
            k, v = body.split(":", 1); out[k.strip()] = v.strip().lower()
        else:
            for w in body.split(): out[w] = True
    return out

def _import_module(nb: dict):
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        m = re.search(r"^#\|\s*default_exp\s+(\S+)", src, flags=re.M)
        if c["cell_type"] == "code" and m:
            try: return importlib.import_module(f"btc_rl.{m.group(1)}")
            except Exception as e: print(f"docs: cannot import btc_rl.{m.group(1)} ({e}); exported cells shown as source")
    return None

def _alt(text: str, title: str) -> str:
    "Alt text of a figure: the first sentence of the prose before it (math and markup stripped), and the page."
    t = re.sub(r"\$[^$]*\$", "", re.sub(r"[`*_#>\[\]]|\(\.\./[^)]*\)|\([^)]*\.ipynb\)", "", text))
    t = re.sub(r"\s+", " ", t).strip()
    first = re.split(r"(?<=[.:;])\s", t, maxsplit=1)[0].strip(" :;") if t else ""
    return f"Figure ({title}): {first[:240]}" if first else f"Figure of the {title} notebook"

def _clean(nb: dict, name: str) -> dict:
    cells, module, level, prose = [], _import_module(nb), 1, ""
    title = next((re.sub(r"^#\s*", "", "".join(c["source"]).splitlines()[0]) for c in nb["cells"]
                  if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("# ")), name)
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "raw": continue                                   # nbdev front matter
        if c["cell_type"] == "markdown":
            hs = re.findall(r"^(#{1,6}) ", src, flags=re.M)
            if hs: level = len(hs[-1])
            body = "\n".join(l for l in src.splitlines() if not l.startswith(("#", "|", "$$"))).strip()
            if body: prose = body
        if c["cell_type"] == "code":
            lines = src.splitlines()
            flags = _flags(lines)
            if flags.get("hide") is True or "default_exp" in flags or flags.get("include") == "false": continue
            src = "\n".join(l for l in lines if not l.startswith("#|")).strip("\n")
            if not src.strip() and not c.get("outputs"): continue
            if (flags.get("export") is True or flags.get("exports") is True) and not c.get("outputs"):
                md = show_doc_md(src, module, level + 1)
                if md is not None:
                    cells.append({"cell_type": "markdown", "id": c.get("id", "") + "-doc", "metadata": {}, "source": md})
                    continue
            tags = list(c.get("metadata", {}).get("tags", []))
            if flags.get("echo") == "false": tags.append("remove-input")
            if flags.get("output") == "false": tags.append("remove-output")
            meta = dict(c.get("metadata", {}))
            images = [o for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
            if images:                                                         # the figure stays, its code folds away
                if "remove-input" not in tags: tags.append("hide-input")
                meta["mystnb"] = {**meta.get("mystnb", {}), "image": {"alt": _alt(prose, title)}}
            c = {**c, "source": src, "metadata": {**meta, "tags": tags}}
        cells.append(c)
    if name == "index":
        pages = ORDER[1:]
        cells.append({"cell_type": "markdown", "id": "toctree", "metadata": {}, "source":
                      "```{toctree}\n:hidden:\n:maxdepth: 1\n:caption: Notebooks\n\n" + "\n".join(pages) + "\n```"})
    return {**nb, "cells": cells}

API_MODULES = sorted(p.stem for p in (ROOT / "btc_rl").glob("*.py") if not p.stem.startswith("_"))

def _prepare() -> None:
    out = DOCS / "nbs"
    shutil.rmtree(out, ignore_errors=True); out.mkdir()
    for p in sorted((ROOT / "nbs").glob("*.ipynb")):
        (out / p.name).write_text(json.dumps(_clean(json.loads(p.read_text()), p.stem)))
    api = DOCS / "api"                                                         # one page per module
    shutil.rmtree(api, ignore_errors=True); api.mkdir()
    for m in API_MODULES:
        doc = (importlib.import_module(f"btc_rl.{m}").__doc__ or "").strip()
        (api / f"{m}.md").write_text(f"# `btc_rl.{m}`\n\n{doc}\n\n```{{eval-rst}}\n.. automodule:: btc_rl.{m}\n"
                                     "   :members:\n```\n")

_prepare()

# ---------------------------------------------------------------------------------------------------------
# API page: the docments of every function and class as a table under its docstring
def _autodoc_params(app, what, name, obj, options, lines) -> None:
    if what not in ("function", "method", "class"): return
    target = obj
    if what == "class" and not hasattr(obj, "__dataclass_fields__"):
        target = obj.__init__ if "__init__" in vars(obj) else None
    if target is None: return
    rows = _docments(target)
    if not any(c for k, (t, d, c) in rows.items() if k != "return"): return
    def cell(s):                                   # docments are markdown-ish: `x` -> ``x``, a bare * or | is not markup
        s = re.sub(r"(?<![`\\])`([^`]+)`(?!`)", r"``\1``", s.replace("\n", " ").strip())
        parts = s.split("``")                       # escape * outside literals only
        return "``".join(p if i % 2 else p.replace("*", "\\*").replace("|", "\\|") for i, p in enumerate(parts)) or " "
    def lit(s): return f"``{s}``" if s else ""
    lines += ["", ".. list-table::", "   :header-rows: 1", "   :class: docments", "",
              "   * - ", "     - **Type**", "     - **Default**", "     - **Details**"]
    for k, (t, d, c) in rows.items():
        lines += [f"   * - {'**Returns**' if k == 'return' else lit(k)}", f"     - {lit(t) or ' '}", f"     - {lit(d) or ' '}",
                  f"     - {cell(c)}"]
    lines.append("")

def _root_redirect(app, exception) -> None:
    "docs/_build/html/index.html: the site opens at the index notebook's page."
    if exception is None and app.builder.format == "html":
        (Path(app.outdir) / "index.html").write_text(
            '<!DOCTYPE html><meta charset="utf-8"><title>btc_rl</title>'
            '<meta http-equiv="refresh" content="0; url=nbs/index.html"><a href="nbs/index.html">btc_rl documentation</a>\n')

def setup(app):
    app.connect("autodoc-process-docstring", _autodoc_params)
    app.connect("build-finished", _root_redirect)

project = "btc_rl"
author = "btc_rl developers"
copyright = "2026, btc_rl developers"
root_doc = "nbs/index"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "sphinx-mathjax-offline"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "conf.py", "_templates"]
nb_execution_mode = "off"                       # outputs come from the real-data runs stored in nbs/
nb_render_markdown_format = "myst"              # markdown outputs (result tables) with tables and math, not CommonMark
myst_enable_extensions = ["dollarmath", "amsmath"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"                 # types also sit in the docments table
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["btc_rl.css"]
html_theme = "pydata_sphinx_theme"
html_title = "btc_rl"
# the front page and the result pages give their wide tables the whole width (no "on this page" column)
WIDE_PAGES = ["nbs/index", "nbs/07_variance", "nbs/08c_evaluate", "nbs/10_rl_study"]
html_theme_options = {"navigation_with_keys": True, "show_toc_level": 2, "navbar_center": [],
                      "secondary_sidebar_items": {"**": ["page-toc"], **{p: [] for p in WIDE_PAGES}},
                      "footer_start": ["copyright"], "footer_end": []}
html_sidebars = {"**": ["sidebar-nav-all"]}     # every page: the notebooks in learning order
suppress_warnings = ["mystnb.unknown_mime_type", "misc.highlighting_failure"]
