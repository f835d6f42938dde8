import json, os, subprocess, sys
from pathlib import Path
import pytest
from btc_rl.cli import main
from btc_rl.checkpoint import load_checkpoint
from conftest import ROOT

BIN = Path(sys.executable).parent

@pytest.mark.parametrize("args,msg", [
    (["--horizon", "0"], "horizon=0"), (["--context-len", "-3"], "context_len=-3"),
    (["--reward", "sharpe"], "argument --reward: invalid choice"), (["--baseline", "ema"], "argument --baseline: invalid choice"),
    (["--batch-episodes", "0"], "batch_episodes=0"), (["--baseline", "loo", "--batch-episodes", "1"], "leave-one-out"),
    (["--temperature", "0"], "temperature=0.0"), (["--device", "tpu"], "device='tpu'"),
    (["--baseline", "exact", "--reward", "return_mse"], "only for reward token_acc"),
    (["--reward", "crps"], "needs group_size >= 2"), (["--group-size", "3"], "multiple of group_size=3"),
    (["--reward", "crps", "--group-size", "2", "--baseline", "mean"], "use baseline group"),
])
def test_bad_parameters_fail_fast_without_traceback(args, msg, capsys, tmp_path):
    with pytest.raises(SystemExit) as e: main(["rl", "--out", str(tmp_path / "never.pt")] + args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err and "Traceback" not in err and err.startswith("btc-rl rl: error:")
    assert not (tmp_path / "never.pt").exists()

def test_bad_csv_via_cli(tmp_path):
    bad = tmp_path / "BTC-USD_bad.csv"; bad.write_text("Date,Close\n2024-01-01,1\n2024-01-01,2\n")
    p = subprocess.run([BIN / "btc-rl", "tokenizer", "--csv", str(bad), "--out", str(tmp_path / "t.pt")], capture_output=True, text=True)
    assert p.returncode == 2 and "duplicate dates" in p.stderr and "Traceback" not in p.stderr

def test_seed_smoke_command_through_cli(tiny):
    out = tiny / "cli_rl.pt"
    p = subprocess.run([BIN / "btc-rl", "rl", "--steps", "3", "--batch-episodes", "4", "--context-len", "24", "--horizon", "8",
                        "--reward", "return_mse", "--in", str(tiny / "sft.pt"), "--out", str(out), "--tokenizer", str(tiny / "tok.pt"),
                        "--data-dir", str(tiny), "--device", "cpu", "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and "return_mse" in p.stdout
    ck = load_checkpoint(out)
    assert ck["config"]["horizon"] == 8 and ck["step"] == 3
    assert (tiny / "cli_rl.metrics.csv").exists() and json.loads((tiny / "cli_rl.summary.json").read_text())["steps"] == 3

def _papermill(tiny, out_nb, **params):
    cmd = [str(BIN / "papermill"), str(ROOT / "nbs" / "train.ipynb"), str(out_nb), "--cwd", str(ROOT)]
    base = dict(steps=3, batch_episodes=4, context_len=24, horizon=8, eval_every=1, data_dir=str(tiny),
                tokenizer=str(tiny / "tok.pt"), checkpoint_in=str(tiny / "sft.pt"), checkpoint_out=str(tiny / "job.pt"))
    for k, v in {**base, **params}.items(): cmd += ["-p", k, str(v)]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}            # the kernel's inline backend renders the plots
    return subprocess.run(cmd, capture_output=True, text=True, env=env)

def test_papermill_job_injects_parameters(tiny, tmp_path):
    out = tmp_path / "out.ipynb"
    p = _papermill(tiny, out, reward="return_mse")
    assert p.returncode == 0, p.stderr[-3000:]
    nb = json.loads(out.read_text())
    tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
    i = tags.index(["parameters"])
    assert "injected-parameters" in tags[i + 1]
    assert "reward = \"return_mse\"" in "".join(nb["cells"][i + 1]["source"])
    assert any("image/png" in o.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert load_checkpoint(tiny / "job.pt")["config"]["reward"] == "return_mse"

def test_failing_papermill_job_exits_nonzero_and_shows_the_cell(tiny, tmp_path):
    out = tmp_path / "fail.ipynb"
    p = _papermill(tiny, out, reward="bogus")
    assert p.returncode != 0
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors and "reward='bogus'" in errors[0]["evalue"]
    assert "An Exception was encountered" in json.dumps(nb)

def test_evaluate_command_reports_baselines(tiny, tmp_path):
    out = tmp_path / "eval.json"
    p = subprocess.run([BIN / "btc-rl", "evaluate", "--ckpt", str(tiny / "sft.pt"), "--sft", "", "--tokenizer", str(tiny / "tok.pt"),
                        "--data-dir", str(tiny), "--assets", "all", "--horizon", "8", "--context-len", "24", "--paths", "20",
                        "--stride", "10", "--out", str(out), "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {"static empirical", "rolling 20-day normal", "GARCH(1,1)-t", "GJR-GARCH(1,1)-t", "SFT"} <= set(res["summary"]["pooled"])
    assert res["meta"]["n_paths"] == 20 and len(res["meta"]["assets"]) == 4 and "pooled over assets" in p.stdout
    assert (tmp_path / "eval.scores.csv.gz").is_file()
    bad = subprocess.run([BIN / "btc-rl", "evaluate", "--ckpt", str(tiny / "sft.pt"), "--paths", "1", "--tokenizer", str(tiny / "tok.pt"),
                          "--data-dir", str(tiny)], capture_output=True, text=True)
    assert bad.returncode == 2 and "n_paths=1" in bad.stderr and "Traceback" not in bad.stderr
