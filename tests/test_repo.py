"""The repository's own contracts: notebooks and package agree, README is generated, names line up."""
import json, shutil, subprocess, sys
from dataclasses import fields
from pathlib import Path
from btc_rl.reinforce import RLConfig
from conftest import ROOT

def test_nbdev_export_leaves_package_unchanged(tmp_path):
    for name in ("nbs", "settings.ini", "pyproject.toml"): 
        src = ROOT / name
        shutil.copytree(src, tmp_path / name) if src.is_dir() else shutil.copy(src, tmp_path / name)
    shutil.copytree(ROOT / "btc_rl", tmp_path / "btc_rl")
    subprocess.run([str(Path(sys.executable).parent / "nbdev_export")], cwd=tmp_path, check=True)
    for f in sorted((ROOT / "btc_rl").glob("*.py")):
        assert (tmp_path / "btc_rl" / f.name).read_text() == f.read_text(), f"{f.name} is out of sync with nbs/: run nbdev_export"
    assert sorted(p.name for p in (tmp_path / "btc_rl").glob("*.py")) == sorted(p.name for p in (ROOT / "btc_rl").glob("*.py"))

def test_readme_is_generated_from_index():
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_readme.py"), "--check"], check=True)

def test_job_parameters_are_rlconfig_fields():
    nb = json.loads((ROOT / "nbs" / "train.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    names = {line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines() if "=" in line}
    assert names - {"resume", "overwrite"} <= {f.name for f in fields(RLConfig)}
    assert {"reward", "baseline", "steps", "batch_episodes", "context_len", "horizon", "lr", "temperature", "top_k", "seed",
            "device", "csv", "checkpoint_in", "checkpoint_out"} <= names

def test_code_dirty_counts_code_not_stored_outputs(tmp_path, monkeypatch):
    "Running a notebook rewrites its outputs: the run card must still call the checkout clean; a code edit is dirty."
    import btc_rl.core as core
    def git(*a):
        p = subprocess.run(["git", "-C", str(tmp_path), *a], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None
    nb = lambda src, out: json.dumps({"cells": [{"cell_type": "code", "source": [src], "metadata": {}, "outputs": out,
                                                 "execution_count": None}], "metadata": {}, "nbformat": 4,
                                      "nbformat_minor": 5})
    (tmp_path / "nbs").mkdir(); (tmp_path / "btc_rl").mkdir()
    (tmp_path / "nbs" / "a.ipynb").write_text(nb("x = 1", []))
    (tmp_path / "btc_rl" / "a.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("notes\n")
    git("init", "-q"); git("add", "-A"); git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(core, "_git", git)
    assert core.code_dirty() is False
    (tmp_path / "nbs" / "a.ipynb").write_text(nb("x = 1", [{"output_type": "stream", "name": "stdout", "text": ["1"]}]))
    (tmp_path / "notes.md").write_text("other notes\n")                       # not code
    assert core.code_dirty() is False
    (tmp_path / "nbs" / "a.ipynb").write_text(nb("x = 2", []))
    assert core.code_dirty() is True
    (tmp_path / "nbs" / "a.ipynb").write_text(nb("x = 1", []))
    (tmp_path / "btc_rl" / "a.py").write_text("x = 2\n")
    assert core.code_dirty() is True

# The package's layers, bottom to top (issue 22): a module imports only from its own layer or below, never in a cycle.
LAYERS = [{"core", "model", "plots"}, {"distributed", "data", "tokenizer"},
          {"corpus", "checkpoint", "rewards", "scoring", "baselines", "intervals"}, {"train", "reinforce"},
          {"evaluate", "rl_run", "forecast", "variance"}, {"pipeline", "sweep", "recipe_search"}, {"study"}, {"cli"}]

def _imports() -> dict[str, set[str]]:
    "module -> the btc_rl modules it imports, anywhere in its source (inside functions too)."
    import ast
    out = {}
    for f in sorted((ROOT / "btc_rl").glob("*.py")):
        if f.stem.startswith("_"): continue
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module if node.level == 0 else f"btc_rl.{node.module}"
                if mod.startswith("btc_rl.") and node.level <= 1: deps.add(mod.split(".")[1])
        out[f.stem] = deps - {f.stem}
    return out

def _violations(imports: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    "What breaks the layering: modules without a layer, imports from a higher layer, and a cycle if there is one."
    from graphlib import CycleError, TopologicalSorter
    layer = {m: i for i, ms in enumerate(layers) for m in ms}
    out = [f"{m}: no layer" for m in sorted(set(imports) - set(layer))]
    out += [f"{m} imports {d} from a higher layer" for m, ds in imports.items() for d in ds
            if layer.get(d, -1) > layer.get(m, -1)]
    try: tuple(TopologicalSorter(imports).static_order())
    except CycleError as e: out.append("import cycle: " + " -> ".join(reversed(e.args[1])))   # A -> B: A imports B
    return out

def test_the_import_graph_is_layered_and_acyclic():
    assert _violations(_imports(), LAYERS) == []

def test_the_layer_check_finds_an_upward_import_and_a_cycle():
    fake = {"core": {"train"}, "train": {"scoring"}, "scoring": {"train"}}
    found = _violations(fake, [{"core"}, {"scoring", "train"}])
    cycles = [f.removeprefix("import cycle: ").split(" -> ") for f in found if f.startswith("import cycle: ")]
    assert "core imports train from a higher layer" in found and [set(c) for c in cycles] == [{"train", "scoring"}]
