"""Write README.md from nbs/index.ipynb: its markdown cells, and the markdown output of its cells tagged `readme` (the
verdict table), as stored; markdown cells tagged `no-readme` stay on the docs page only (nbdev's Quarto-based
`nbdev_readme` is not available offline). Links into the docs site are made relative to the repository. `--check` exits 1 if README.md is out of date."""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _links(md: str) -> str:
    "Links of the docs site (nbs/x.ipynb, method.md) as paths of the repository."
    md = re.sub(r"\]\(\.\./(method\.md)\)", r"](docs/\1)", md)
    return re.sub(r"\]\((\w+\.ipynb)\)", r"](nbs/\1)", md)

def render() -> str:
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    parts = ["<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->"]
    for c in nb["cells"]:
        src = "".join(c["source"]).strip()
        tags = c.get("metadata", {}).get("tags", [])
        if c["cell_type"] == "markdown" and src and "no-readme" not in tags: parts.append(_links(src))
        elif c["cell_type"] == "code" and "readme" in tags:
            for o in c.get("outputs", []):
                md = o.get("data", {}).get("text/markdown")
                if md: parts.append("".join(md).strip())
    return "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text: sys.exit("README.md is out of date: run python tools/make_readme.py")
    else: readme.write_text(text); print(f"wrote {readme}")
