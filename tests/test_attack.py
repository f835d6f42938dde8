"""The attack cases of issue #25, one test per numbered case: each lost data, misled, or printed a traceback before."""
import errno, json, os, signal, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from btc_rl.core import remove_orphan_tmp
from btc_rl.checkpoint import load_checkpoint, save_checkpoint, model_from_checkpoint
from btc_rl.cli import main
from btc_rl.rl_run import reinforce_finetune
from conftest import ROOT, tiny_rl

BIN = Path(sys.executable).parent

def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)

def _cli(args, capsys) -> str:
    "Run btc-rl in-process; the error it must end with: exit 2, one line on stderr, no traceback."
    with pytest.raises(SystemExit) as e: _quiet(main, [str(a) for a in args])
    err = capsys.readouterr().err.strip()
    lines = [l for l in err.replace("\r", "\n").splitlines() if l.startswith("btc-rl")]   # progress bars aside
    assert e.value.code == 2 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]

# 1 -----------------------------------------------------------------------------------------------------------------
def test_01_symlink_at_the_lock_path_is_refused(tiny):
    victim = tiny / "victim.txt"; victim.write_text("precious")
    os.symlink(victim, tiny / "sym.pt.lock")
    with pytest.raises(ValueError, match="must be a regular file"): _quiet(reinforce_finetune, tiny_rl(tiny, "sym.pt", steps=1),
                                                                           progress=False)
    assert victim.read_text() == "precious"

# 2 -----------------------------------------------------------------------------------------------------------------
def test_02_a_non_default_tokenizer_never_rebuilds_the_default_checkpoints(tmp_path, monkeypatch):
    from btc_rl.pipeline import ensure_prerequisites, Layout
    from btc_rl.reinforce import RLConfig
    from btc_rl.tokenizer import build_tokenizer, TokenizerConfig
    import btc_rl.pipeline as PL
    from test_trust import _small_builders
    monkeypatch.chdir(tmp_path); _small_builders(monkeypatch)
    _quiet(ensure_prerequisites, RLConfig(context_len=24, horizon=8), progress=False, log=lambda m: None)   # the defaults
    before = {p: Path(p).read_bytes() for p in ("checkpoints/pretrain.pt", "checkpoints/sft_btc.pt")}
    _quiet(build_tokenizer, None, "data", "models/tok_b.pt", TokenizerConfig(codebook_size=16, steps=40, seed=1), 40,
           progress=False)
    cfg = RLConfig(context_len=24, horizon=8, tokenizer="models/tok_b.pt")
    built = _quiet(ensure_prerequisites, cfg, progress=False, log=lambda m: None)
    assert all(Path(p).read_bytes() == b for p, b in before.items())          # the default pipeline is untouched
    assert cfg.checkpoint_in == str(Layout.beside("models/tok_b.pt").sft) and Path(cfg.checkpoint_in).is_file()
    assert [b.split(" ")[0] for b in built] == ["models/tok_b.pt.pretrain.pt", "models/tok_b.pt.sft.pt"]

# 3 -----------------------------------------------------------------------------------------------------------------
def test_03_orphan_cleanup_keeps_a_concurrent_runs_temporary_files(tmp_path):
    other = tmp_path / ".rl_btc_mse.pt.ab12cd34.tmp"; other.write_text("rl_btc_mse is writing this")
    mine = tmp_path / ".rl_btc.pt.ef56gh78.tmp"; mine.write_text("a killed writer's")
    assert remove_orphan_tmp(tmp_path / "rl_btc.pt") == [mine] and other.exists()

# 4 -----------------------------------------------------------------------------------------------------------------
def test_04_a_sweep_keeps_results_until_replaced_and_reports_the_error(tiny, tmp_path):
    from btc_rl.sweep import sweep, sweep_grid
    jobs, _ = sweep_grid(seeds=[0], rewards=["return_mse"], baselines=["loo"], group_sizes=[1], steps=2, batch_episodes=4,
                         context_len=24, horizon=8, eval_every=1, eval_episodes=4, eval_samples=2, data_dir=str(tiny),
                         tokenizer=str(tiny / "tok.pt"), checkpoint_in=str(tiny / "sft.pt"), device="cpu")
    res = sweep(jobs, tmp_path / "sw", executor="local", timeout_min=10)
    assert not res.failed and len(res.table) == 1
    job = tmp_path / "sw" / res.table.job.iloc[0]
    first = (job / "rl.summary.json").read_text()
    res2 = sweep([{**jobs[0], "checkpoint_in": str(tmp_path / "missing.pt")}], tmp_path / "sw", executor="local", timeout_min=10)
    assert len(res2.failed) == 1 and "missing.pt" in res2.failed[0][1] and "Error" in res2.failed[0][1]
    assert "log" not in res2.failed[0][1].lower()                              # the error, not where the logs are
    assert (job / "rl.summary.json").read_text() == first and len(res2.table) == 0   # kept, but not reported as this sweep's

# 5 -----------------------------------------------------------------------------------------------------------------
def _popen(args):
    return subprocess.Popen([BIN / "btc-rl", *map(str, args)], stderr=subprocess.PIPE, text=True)

def test_05_sigterm_saves_like_ctrl_c(tiny):
    out = tiny / "term.pt"
    p = _popen(["rl", "--steps", "100000", "--batch-episodes", "4", "--context-len", "24", "--horizon", "8",
                "--eval-every", "100000", "--eval-episodes", "4", "--eval-samples", "2", "--in", tiny / "sft.pt", "--out", out,
                "--tokenizer", tiny / "tok.pt", "--data-dir", tiny, "--device", "cpu", "--save-every", "100000", "--no-progress"])
    lock = Path(str(out) + ".lock")
    for _ in range(600):
        if lock.exists(): break
        time.sleep(0.1)
    time.sleep(4)                                                              # inside the training loop
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130, err[-2000:]
    ck = load_checkpoint(out)
    assert 1 <= ck["step"] < 100000 and f"saved at step {ck['step']}" in err and "SIGTERM" in err

def test_05_sigterm_stops_stage_1_with_a_message(tiny):
    p = _popen(["pretrain", "--steps", "100000", "--batch-size", "8", "--seq-len", "24", "--context", "0",
                "--tokenizer", tiny / "tok.pt", "--data-dir", tiny, "--out", tiny / "pre_term.pt", "--no-progress"])
    time.sleep(6)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-2000:]

# 6 -----------------------------------------------------------------------------------------------------------------
def test_06_an_output_that_is_an_input_is_refused(tiny, tmp_path, capsys):
    ck = tiny / "sft.pt"; before = ck.read_bytes()
    err = _cli(["evaluate", "--ckpt", ck, "--sft", "", "--out", ck, "--tokenizer", tiny / "tok.pt", "--data-dir", tiny], capsys)
    assert "is an input of this run" in err and ck.read_bytes() == before
    data = tmp_path / "d"; data.mkdir(); csv = data / "BTC-USD_x.csv"; csv.write_text("Date,Close\n2020-01-01,1\n")
    err = _cli(["tokenizer", "--data-dir", data, "--out", csv], capsys)
    assert "holds the data" in err and csv.read_text() == "Date,Close\n2020-01-01,1\n"

# 7 -----------------------------------------------------------------------------------------------------------------
def test_07_side_files_are_named_from_the_whole_output_name(tiny):
    for out in ("rl_lr0.001", "rl_lr0.0003"):
        _quiet(reinforce_finetune, tiny_rl(tiny, out, steps=1, eval_every=1), progress=False)
    for out in ("rl_lr0.001", "rl_lr0.0003"):
        assert json.loads((tiny / f"{out}.summary.json").read_text())["run_id"] == load_checkpoint(tiny / out)["run_id"]
    assert not (tiny / "rl_lr0.summary.json").exists()

# 8 -----------------------------------------------------------------------------------------------------------------
def test_08_a_learning_rate_that_blows_up_fails_with_the_step_and_keeps_the_last_finite_checkpoint(tiny):
    out = tiny / "blow.pt"
    _quiet(reinforce_finetune, tiny_rl(tiny, "blow.pt", steps=2, save_every=1), progress=False)
    before = load_checkpoint(out)
    with pytest.raises(ValueError, match=r"step 1: .*logits explode.*blow.pt is unchanged"):
        _quiet(reinforce_finetune, tiny_rl(tiny, "blow.pt", steps=6, save_every=1, lr=1e30), progress=False, overwrite=True)
    assert load_checkpoint(out)["run_id"] == before["run_id"]                 # the last finite checkpoint is still there
    from btc_rl.train import LMConfig, pretrain
    with pytest.raises(ValueError, match=r"step \d+: .*(not finite|non-finite).*nothing written"):
        _quiet(pretrain, tiny / "tok.pt", tiny / "pre_blow.pt", data_dir=tiny,
               cfg=LMConfig(steps=20, batch_size=8, seq_len=24, context=0, eval_every=10, lr=1e30), progress=False)
    assert not (tiny / "pre_blow.pt").exists()

# 9 -----------------------------------------------------------------------------------------------------------------
def test_09_a_checkpoint_scaled_out_of_range_is_refused_by_name(tiny, capsys):
    ck = load_checkpoint(tiny / "sft.pt")
    ck["model"] = {k: v * 1e30 if v.is_floating_point() else v for k, v in ck["model"].items()}
    torch.save(ck, tiny / "huge.pt")
    err = _cli(["evaluate", "--ckpt", tiny / "huge.pt", "--sft", "", "--tokenizer", tiny / "tok.pt", "--data-dir", tiny,
                "--out", tiny / "huge_eval.json", "--horizon", "8", "--paths", "4"], capsys)
    assert "huge.pt: its next-token" in err

# 10 ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting,msg", [("reward=crps", "reward: set by the grid"), ("stpes=2", "stpes: not a parameter")])
def test_10_sweep_settings_that_would_be_ignored_are_errors(setting, msg, tmp_path, capsys):
    assert msg in _cli(["sweep", "--folder", tmp_path, "--set", setting], capsys)

# 11 ----------------------------------------------------------------------------------------------------------------
def test_11_splits_are_flagged_and_an_unreadable_asset_is_skipped(tmp_path):
    from btc_rl.data import load_assets, synthetic_prices
    days = pd.bdate_range("2020-01-01", periods=300)
    c = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, 300)))
    seven, ten = c.copy(), c.copy(); seven[150:] /= 7; ten[150:] /= 10
    for name, close in (("SEVEN", seven), ("TEN", ten)):
        pd.DataFrame({"Date": days, "Close": close, "Volume": 1e6}).to_csv(tmp_path / f"{name}_x.csv", index=False)
    (tmp_path / "BAD_x.csv").write_text("this is not a price file\n")
    btc = synthetic_prices(400, seed=1); btc.attrs["source"] = "a real file"
    with pytest.warns(UserWarning) as rec: assets = load_assets(btc, tmp_path)
    msgs = [str(w.message) for w in rec]
    assert sorted(assets) == ["BTC-USD", "SEVEN"]
    assert any(m.startswith("SEVEN_x.csv") and f"move on {days[150].date()}" in m for m in msgs)
    assert any(m.startswith("TEN_x.csv: skipped") for m in msgs) and any(m.startswith("BAD_x.csv: skipped") for m in msgs)

# 12 ----------------------------------------------------------------------------------------------------------------
def test_12_a_full_disk_says_so_and_keeps_the_previous_file(tiny, tmp_path, monkeypatch):
    src = load_checkpoint(tiny / "sft.pt"); model = model_from_checkpoint(src)
    out = tmp_path / "ck.pt"
    save_checkpoint(out, model, "sft", src["tokenizer"], src["data"])
    before = out.read_bytes()
    def full(obj, f, *a, **k): raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ValueError, match=f"no space left on device while writing {out}; the previous file is unchanged"):
        save_checkpoint(out, model, "sft", src["tokenizer"], src["data"])
    assert out.read_bytes() == before and not list(tmp_path.glob(".ck.pt.*.tmp"))

# 13 ----------------------------------------------------------------------------------------------------------------
def test_13_slurm_without_slurm_says_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(BIN))                                       # no sbatch, no srun
    for cmd in (["sweep", "--folder", tmp_path], ["study", "--folder", tmp_path]):
        assert "sbatch and srun are not on the PATH" in _cli([*cmd, "--executor", "slurm"], capsys)

# 14 ----------------------------------------------------------------------------------------------------------------
BAD = {  # subcommand: [(bad path, bad number, bad choice or value)]
    "download": [["--data-dir", "{f}"], ["--start", "yesterday"], ["../../x"]],
    "tokenizer": [["--csv", "{d}/missing.csv"], ["--steps", "x"], ["--codebook-size", "-3"]],
    "pretrain": [["--tokenizer", "{d}/missing.pt"], ["--lr", "fast"], ["--device", "tpu"]],
    "sft": [["--in", "{d}/missing.pt"], ["--steps", "1.5"], ["--dropout", "2"]],
    "rl": [["--in", "{d}/missing.pt"], ["--horizon", "-1"], ["--reward", "sharpe"]],
    "evaluate": [["--ckpt", "{d}/missing.pt"], ["--paths", "many"], ["--period", "future"]],
    "forecast": [["--ckpt", "{d}/missing.pt"], ["--horizon", "x"], ["--asset", "NOPE"]],
    "sweep": [["--folder", "{f}/x"], ["--seeds", "one"], ["--rewards", "sharpe"]],
    "study": [["--folder", "{f}/x", "--recipe", "no such recipe"], ["--folds", "twenty"], ["--executor", "cloud"]],
}

@pytest.mark.parametrize("cmd,which", [(c, i) for c in BAD for i in range(3)])
def test_14_every_subcommand_answers_bad_input_with_one_line(cmd, which, tiny, tmp_path, capsys):
    f = tmp_path / "a_file"; f.write_text("x")
    extra = {"evaluate": ["--tokenizer", tiny / "tok.pt", "--data-dir", tiny, "--sft", ""], "forecast": ["--tokenizer", tiny / "tok.pt",
             "--data-dir", tiny, "--ckpt", tiny / "sft.pt"], "rl": ["--tokenizer", tiny / "tok.pt", "--data-dir", tiny],
             "sft": ["--tokenizer", tiny / "tok.pt", "--data-dir", tiny], "pretrain": ["--data-dir", tiny],
             "tokenizer": ["--out", tmp_path / "t.pt"]}.get(cmd, [])
    if cmd == "evaluate" and which != 0: extra += ["--ckpt", tiny / "sft.pt"]
    args = [cmd, *extra, *[a.format(d=tmp_path, f=f) for a in BAD[cmd][which]]]
    if cmd == "download" and which == 0: args.append("BTC-USD")
    err = _cli(args, capsys)
    assert err.startswith(f"btc-rl") and "error" in err
