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
