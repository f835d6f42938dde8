"""Write README.md from nbs/index.ipynb (markdown cells as they are; nbdev's Quarto-based
`nbdev_readme` is not available offline). `--check` exits 1 if README.md is out of date."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def render() -> str:
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    parts = ["<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->"]
    for c in nb["cells"]:
        src = "".join(c["source"]).strip()
        if c["cell_type"] == "markdown" and src: parts.append(src)
        elif c["cell_type"] == "code" and src and not src.startswith("#|"): parts.append(f"```python\n{src}\n```")
    return "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text: sys.exit("README.md is out of date: run python tools/make_readme.py")
    else: readme.write_text(text); print(f"wrote {readme}")
