"""Trustworthy runs: every bad input fails fast with a message that names it, artifacts follow the data,
nothing is lost or silently overwritten, and every output records its provenance."""
import json, os, signal, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from btc_rl.core import OutputLock, parse_bool
from btc_rl.data import load_prices, load_btc, find_csv, synthetic_prices, download_prices
from btc_rl.checkpoint import load_checkpoint, model_from_checkpoint
from btc_rl.reinforce import RLConfig
from btc_rl.rl_run import reinforce_finetune
from btc_rl.pipeline import ensure_prerequisites
from btc_rl.cli import main
from btc_rl.train import pretrain as _pretrain
from conftest import ROOT, tiny_rl

BIN = Path(sys.executable).parent

def _days(n, start="2020-01-01", fmt="%Y-%m-%d", close=None):
    d = pd.date_range(start, periods=n)
    c = close if close is not None else 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.02, n)))
    return "Date,Close\n" + "".join(f"{x.strftime(fmt)},{v}\n" for x, v in zip(d, c))

def _hourly():
    d = pd.date_range("2020-01-01", periods=200, freq="h")
    return "Date,Close\n" + "".join(f"{x},{100 + i * 0.01}\n" for i, x in enumerate(d))

def _yf_bom():
    body = "Price,Close,Open\nTicker,BTC-USD,BTC-USD\nDate,,\n" + "".join(f"2024-01-{i:02d},{100 + i},{100 + i}\n" for i in range(1, 11))
    return "\ufeff" + body

def _huge_close():
    return "Date,Close\n2020-01-01,100\n2020-01-02,1e300\n2020-01-03,101\n"

def _gap_btc():
    d = list(pd.date_range("2020-01-01", periods=30)) + list(pd.date_range("2020-03-15", periods=30))
    return "Date,Close\n" + "".join(f"{x.date()},{100 + i}\n" for i, x in enumerate(d))

FILE_CASES = [  # (name, writer, loader, expected message)
    ("hourly bars", lambda p: p.write_text(_hourly()), load_prices, "daily bars are needed"),
    ("ambiguous dd/mm dates", lambda p: p.write_text(_days(12, fmt="%d/%m/%Y")), load_prices, "ambiguous dates like '01/01/2020'"),
    ("a close of 1e300", lambda p: p.write_text(_huge_close()), load_prices, "exceeds the bound 2"),
    ("Latin-1 header", lambda p: p.write_bytes("Date,Cl\xf4ture,Close\n2020-01-01,1,1\n".encode("latin-1")), load_prices, "not UTF-8 text"),
    ("six-week gap in BTC", lambda p: p.write_text(_gap_btc()), lambda p: load_btc(p), "gaps in BTC's daily series (BTC trades every day), first 2020-01-30..2020-03-15"),
    ("infinite close", lambda p: p.write_text("Date,Close\n2020-01-01,1\n2020-01-02,inf\n2020-01-03,1\n"), load_prices, "infinite Close values"),
]

@pytest.mark.parametrize("name,write,load,msg", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_files_fail_with_their_message(tmp_path, name, write, load, msg):
    p = tmp_path / "BTC-USD_x.csv"; write(p)
    with pytest.raises(ValueError) as e: load(p)
    assert msg in str(e.value) and str(p) in str(e.value), str(e.value)

def test_day_first_dates_are_read_right_and_said(tmp_path):
    p = tmp_path / "x.csv"; p.write_text(_days(40, start="2014-09-18", fmt="%d/%m/%Y"))
    with pytest.warns(UserWarning, match="day-first"): df = load_prices(p)
    assert df.index[0] == pd.Timestamp("2014-09-18") and df.index[-1] == pd.Timestamp("2014-10-27")

def test_yfinance_file_with_bom_reads(tmp_path):
    p = tmp_path / "x.csv"; p.write_text(_yf_bom(), encoding="utf-8")
    assert load_prices(p)["Close"].iloc[-1] == 110.0

@pytest.mark.parametrize("tz", ["+09:00", "-05:00"])
def test_timezone_suffix_keeps_the_date_as_written(tmp_path, tz):
    p = tmp_path / "x.csv"
    p.write_text("Date,Close\n" + "".join(f"2024-01-{i:02d} 00:00:00{tz},{100 + i}\n" for i in range(1, 6)))
    assert list(load_prices(p).index.day) == [1, 2, 3, 4, 5]

def test_two_btc_files_are_refused_by_name(tmp_path):
    for n in ("BTC-USD_a.csv", "BTC-USD_b.csv"): (tmp_path / n).write_text(_days(10))
    with pytest.raises(ValueError, match="2 BTC-USD files in .*: BTC-USD_a.csv, BTC-USD_b.csv"): find_csv("BTC-USD", tmp_path)

def test_download_ticker_cannot_escape_the_data_folder(tmp_path):
    with pytest.raises(ValueError, match="not a ticker symbol"): download_prices("../../x", data_dir=tmp_path, downloader=lambda *a, **k: None)

def test_late_listed_asset_is_skipped_with_one_warning(tmp_path):
    from btc_rl.tokenizer import build_tokenizer, TokenizerConfig
    btc = synthetic_prices(1200, seed=1); btc.attrs = {}; btc.to_csv(tmp_path / "BTC-USD_x.csv")
    late = synthetic_prices(60, seed=2, start="2018-01-01"); late.attrs = {}; late.to_csv(tmp_path / "LATE_x.csv")
    with pytest.warns(UserWarning, match="LATE: 0 training-period days .* skipped"):
        tok = build_tokenizer(data_dir=tmp_path, out=tmp_path / "t.pt", cfg=TokenizerConfig(codebook_size=8, steps=20), gap_days=40, progress=False)
    assert tok.meta["skipped_assets"] == ["LATE"]

# --- parameters, checkpoints and outputs through the command line: one line on stderr, exit 2, before any work ---

def _cli_err(args, capsys):
    with pytest.raises(SystemExit) as e: main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    return err

def _bad_ckpts(d: Path) -> dict:
    good = load_checkpoint(d / "sft.pt")
    (d / "bad_zero.pt").touch()
    nan = {**good, "model": {k: v.clone() for k, v in good["model"].items()}}; nan["model"]["lm_head.weight"][0, 0] = float("nan")
    torch.save(nan, d / "bad_nan.pt")
    torch.save({k: v for k, v in good.items() if k != "model"}, d / "bad_nokey.pt")
    shape = {**good, "model_config": {**good["model_config"], "n_embd": 32}}; torch.save(shape, d / "bad_shape.pt")
    return good

CLI_CASES = [  # (name, extra args; {d}: the tiny fixture folder, expected message)
    ("lr inf", ["--lr", "inf"], "lr=inf: must be finite"),
    ("temperature 1e-40", ["--temperature", "1e-40"], "temperature=1e-40: must be >= 0.001"),
    ("seed 1e20", ["--seed", str(10**20)], f"seed={10**20}: must lie in [0, 2**63 - 1]"),
    ("zero-byte --in", ["--in", "{d}/bad_zero.pt"], "zero.pt: checkpoint file is empty"),
    ("--in of another shape", ["--in", "{d}/bad_shape.pt"], "shape.pt: weights do not fit the model config"),
    ("NaN weights", ["--in", "{d}/bad_nan.pt"], "nan.pt: non-finite weights (NaN or inf) in lm_head.weight"),
    ("missing keys", ["--in", "{d}/bad_nokey.pt"], "nokey.pt: incomplete checkpoint, missing model"),
    ("--in typo", ["--in", "{d}/sft_typo.pt"], "sft_typo.pt': file not found (only"),
    ("--tokenizer typo", ["--tokenizer", "{d}/tok_typo.pt"], "tok_typo.pt': file not found (only the default models/tokenizer_model.pt"),
    ("batch too big for memory", ["--batch-episodes", str(10**9)], "batch_episodes=1000000000 (or eval_episodes x eval_samples) needs about"),
    ("--out under a file", ["--out", "{d}/sft.pt/rl.pt"], "sft.pt is a file, not a folder"),
    ("--out a directory", ["--out", "{d}"], "is a directory"),
    ("--out empty", ["--out", ""], "is empty"),
    ("device cuda without a GPU", ["--device", "cuda"], "device='cuda' but no CUDA GPU is available"),
]

@pytest.mark.parametrize("name,args,msg", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_rl_inputs_fail_before_any_work(tiny, capsys, name, args, msg):
    if "cuda" in name and torch.cuda.is_available(): pytest.skip("a GPU is present")
    if not (tiny / "bad_zero.pt").exists(): _bad_ckpts(tiny)   # own names: the fixture folder is shared
    base = ["rl", "--steps", "2", "--batch-episodes", "4", "--context-len", "24", "--horizon", "8", "--eval-episodes", "4",
            "--eval-samples", "2", "--data-dir", str(tiny), "--tokenizer", str(tiny / "tok.pt"), "--in", str(tiny / "sft.pt"),
            "--out", str(tiny / "never.pt"), "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        err = _cli_err(base + [a.format(d=tiny) for a in args], capsys)
    assert msg in err, err
    assert not (tiny / "never.pt").exists()

# --- nothing lost ---

def test_parse_bool_reads_papermill_strings():
    assert parse_bool("false") is False and parse_bool("True") is True and parse_bool(0) is False
    with pytest.raises(ValueError, match="resume='maybe'"): parse_bool("maybe", "resume")

def test_finished_checkpoint_is_not_overwritten_and_locked_output_is_refused(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reinforce_finetune(tiny_rl(tiny, "once.pt", steps=2), progress=False)
        with pytest.raises(ValueError, match="already holds a rl checkpoint .* --overwrite"):
            reinforce_finetune(tiny_rl(tiny, "once.pt", steps=2), progress=False)
        first = load_checkpoint(tiny / "once.pt")["run_id"]
        reinforce_finetune(tiny_rl(tiny, "once.pt", steps=2), progress=False, overwrite=True)
        assert load_checkpoint(tiny / "once.pt")["run_id"] != first
        with OutputLock(tiny / "busy.pt"):
            with pytest.raises(ValueError, match="another run is writing it"):
                reinforce_finetune(tiny_rl(tiny, "busy.pt", steps=2), progress=False)

def test_orphan_temporaries_are_removed_and_sidecars_are_complete(tiny):
    (tiny / ".orph.pt.abc.tmp").write_bytes(b"half a checkpoint"); (tiny / ".orph.metrics.csv.x.tmp").write_text("half")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reinforce_finetune(tiny_rl(tiny, "orph.pt", steps=3), progress=False)
    assert not list(tiny.glob(".orph*.tmp"))
    m = pd.read_csv(tiny / "orph.metrics.csv"); s = json.loads((tiny / "orph.summary.json").read_text())
    assert m.step.tolist() == [1, 2, 3] and (m.run_id == s["run_id"]).all()
    assert s["provenance"]["torch"] == torch.__version__ and "git_commit" in s["provenance"] and s["data_files"]

def test_resume_by_content_not_path(tiny, monkeypatch):
    monkeypatch.chdir(tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reinforce_finetune(tiny_rl(tiny, "rel.pt", steps=2, checkpoint_out="rel.pt"), progress=False)       # relative path
        res = reinforce_finetune(tiny_rl(tiny, "rel.pt", steps=4, checkpoint_out=str(tiny / "rel.pt")), resume=True, progress=False)
    assert res.summary["steps"] == 4

def test_ctrl_c_saves_then_exits_130(tiny):
    out = tiny / "intr.pt"
    p = subprocess.Popen([BIN / "btc-rl", "rl", "--steps", "100000", "--batch-episodes", "4", "--context-len", "24", "--horizon", "8",
                          "--eval-every", "100000", "--eval-episodes", "4", "--eval-samples", "2", "--in", str(tiny / "sft.pt"),
                          "--out", str(out), "--tokenizer", str(tiny / "tok.pt"), "--data-dir", str(tiny), "--device", "cpu",
                          "--save-every", "100000", "--no-progress"], stderr=subprocess.PIPE, text=True)
    lock = Path(str(out) + ".lock")
    for _ in range(600):
        if lock.exists(): break
        time.sleep(0.1)
    time.sleep(4)                                                              # inside the training loop
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130, err[-2000:]
    ck = load_checkpoint(out)
    assert 1 <= ck["step"] < 100000 and f"saved at step {ck['step']}" in err

def test_papermill_job_checks_parameters_in_its_first_cell(tiny, tmp_path):
    nb = tmp_path / "o.ipynb"
    p = subprocess.run([BIN / "papermill", ROOT / "nbs" / "train.ipynb", nb, "--cwd", ROOT, "-p", "steps", "abc",
                        "-p", "data_dir", str(tmp_path), "-p", "tokenizer", str(tmp_path / "never_tok.pt")], capture_output=True, text=True)
    assert p.returncode != 0 and "steps='abc': must be an integer" in p.stderr + nb.read_text()
    assert not (tmp_path / "never_tok.pt").exists()

# --- artifacts follow the data ---

def _small_builders(monkeypatch):
    "Make the pipeline build at toy size (the same code paths, smaller configs)."
    import btc_rl.pipeline as PL
    from btc_rl.tokenizer import TokenizerConfig
    from btc_rl.train import LMConfig
    from btc_rl.model import GPTConfig
    bt, pre, sft = PL.build_tokenizer, PL.pretrain, PL.sft
    lm = LMConfig(steps=10, batch_size=8, seq_len=24, context=0, eval_every=10)
    monkeypatch.setattr(PL, "build_tokenizer", lambda csv, d, out, progress=True, **kw: bt(
        csv, d, out, TokenizerConfig(codebook_size=16, steps=50, seed=kw.get("seed", 0)), 40, progress=False, test_end=kw.get("test_end")))
    monkeypatch.setattr(PL, "pretrain", lambda tok, out, csv, d, progress=True, distributed=True: pre(
        tok, out, csv, d, GPTConfig(vocab_size=16, block_size=64, n_layer=1, n_head=2, n_embd=16), lm, progress=False,
        distributed=distributed))
    monkeypatch.setattr(PL, "sft", lambda tok, pre_, out, csv, d, progress=True, distributed=True: sft(
        tok, pre_, out, csv, d, lm, progress=False, distributed=distributed))

def test_artifacts_follow_the_data(tmp_path, monkeypatch):
    """A data-less run builds on the synthetic sample; once real data arrive, the next run rebuilds all three
    artifacts (saying why) and a stage run directly refuses the stale file with the command to run."""
    monkeypatch.chdir(tmp_path); _small_builders(monkeypatch)
    cfg = RLConfig(context_len=24, horizon=8)
    log = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(ensure_prerequisites(cfg, log=log.append)) == 3
        assert ensure_prerequisites(cfg, log=log.append) == []                 # nothing stale: nothing built
        old = load_checkpoint("checkpoints/sft_btc.pt")["run_id"]
        Path("data").mkdir(exist_ok=True)
        real = synthetic_prices(1300, seed=7, start="2016-01-01"); real.attrs = {}; real.to_csv("data/BTC-USD_2016_x.csv")
        from btc_rl.tokenizer import load_tokenizer
        with pytest.raises(ValueError, match="models/tokenizer_model.pt was built from other data .*BTC-USD: built from SYNTHETIC.*btc-rl tokenizer"):
            _pretrain(out="checkpoints/x.pt", progress=False)
        built = ensure_prerequisites(cfg, log=log.append)
    assert [b.split(" ")[0] for b in built] == ["models/tokenizer_model.pt", "checkpoints/pretrain.pt", "checkpoints/sft_btc.pt"]
    assert "BTC-USD: built from SYNTHETIC" in built[0]
    ck = load_checkpoint("checkpoints/sft_btc.pt")
    assert ck["run_id"] != old and ck["data"]["source"].startswith("BTC-USD_2016_x.csv")
    assert load_tokenizer("models/tokenizer_model.pt").meta["splits"]["test_end"] == str(real.index[-1].date())

@pytest.mark.parametrize("kw", [dict(), dict(reward="crps", group_size=2, top_k=5, temperature=0.8)])
def test_the_same_seed_gives_the_same_checkpoint_bit_for_bit(tiny, kw):
    "A run is a function of its seed: two runs with one seed store identical weights, another seed does not."
    from btc_rl.checkpoint import load_checkpoint
    from btc_rl.rl_run import reinforce_finetune
    w = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reinforce_finetune(tiny_rl(tiny, f"det_{len(kw)}{name}.pt", steps=6, seed=seed, **kw), progress=False)
        w[name] = load_checkpoint(tiny / f"det_{len(kw)}{name}.pt")["model"]
    assert all(torch.equal(w["a"][k], w["b"][k]) for k in w["a"])
    assert not all(torch.equal(w["a"][k], w["c"][k]) for k in w["a"])
