"""Sphinx config for the btc_rl docs site, built offline from the notebooks in nbs/:

    sphinx-build -b html docs docs/_build/html

Notebooks are rendered from their stored outputs (never executed here). Before the build, a copy of each
notebook is written to docs/nbs/ (git-ignored) without nbdev's `#|` directive lines and without cells marked
`#| hide` (and without the empty `default_exp` cells), so pages show what a reader needs."""
import json, re, shutil, sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
ORDER = ["index", "01_data", "02_tokenizer", "03_model", "04_pretrain_sft", "05_rewards", "06_reinforce",
         "07_variance", "08_evaluate", "09_cli", "train"]

def _clean(nb: dict, name: str) -> dict:
    cells = []
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "raw": continue                                   # nbdev front matter
        if c["cell_type"] == "code":
            lines = src.splitlines()
            flags = " ".join(l[2:] for l in lines if l.startswith("#|"))
            if re.search(r"\b(hide|default_exp)\b", flags): continue
            src = "\n".join(l for l in lines if not l.startswith("#|")).strip("\n")
            if not src.strip() and not c.get("outputs"): continue
            c = {**c, "source": src}
        cells.append(c)
    if name == "index":
        pages = [p for p in ORDER[1:] if (ROOT / "nbs" / f"{p}.ipynb").exists()] + ["../api"]
        cells.append({"cell_type": "markdown", "id": "toctree", "metadata": {}, "source":
                      "```{toctree}\n:maxdepth: 1\n:caption: Notebooks\n\n" + "\n".join(pages) + "\n```"})
    return {**nb, "cells": cells}

def _prepare() -> None:
    out = DOCS / "nbs"
    shutil.rmtree(out, ignore_errors=True); out.mkdir()
    for p in sorted((ROOT / "nbs").glob("*.ipynb")):
        (out / p.name).write_text(json.dumps(_clean(json.loads(p.read_text()), p.stem)))

_prepare()

def _root_redirect(app, exception) -> None:
    "docs/_build/html/index.html: the site opens at the index notebook's page."
    if exception is None and app.builder.format == "html":
        (Path(app.outdir) / "index.html").write_text(
            '<!DOCTYPE html><meta charset="utf-8"><title>btc_rl</title>'
            '<meta http-equiv="refresh" content="0; url=nbs/index.html"><a href="nbs/index.html">btc_rl documentation</a>\n')

def setup(app):
    app.connect("build-finished", _root_redirect)

project = "btc_rl"
author = "btc_rl developers"
copyright = "2026, btc_rl developers"
root_doc = "nbs/index"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx-mathjax-offline"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "conf.py"]
nb_execution_mode = "off"                       # outputs come from the real-data runs stored in nbs/
myst_enable_extensions = ["dollarmath", "amsmath"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "pydata_sphinx_theme"
html_title = "btc_rl"
html_theme_options = {"navigation_with_keys": True, "show_toc_level": 2}
suppress_warnings = ["mystnb.unknown_mime_type", "misc.highlighting_failure"]
