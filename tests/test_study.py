"""The walk-forward study at toy size: 3 synthetic assets besides BTC, 2 folds, through the job machinery; and no fold
ever fits anything on rows after its training end."""
import json, warnings
import numpy as np
import pandas as pd
import pytest
import torch
from btc_rl.data import synthetic_prices
from btc_rl.tokenizer import TokenizerConfig, load_tokenizer
from btc_rl.train import LMConfig
from btc_rl.model import GPTConfig
from btc_rl.pipeline import Layout, ensure_stages
from btc_rl.checkpoint import load_checkpoint
from btc_rl.evaluate import EvalConfig

TINY_STAGES = dict(tokenizer_kw=dict(cfg=TokenizerConfig(codebook_size=16, steps=60), gap_days=40),
                   pretrain_kw=dict(model_cfg=GPTConfig(vocab_size=16, block_size=32, n_layer=1, n_head=2, n_embd=16),
                                    cfg=LMConfig(steps=12, batch_size=8, seq_len=24, context=16, eval_every=6, rescale=0.0)),
                   sft_kw=dict(cfg=LMConfig(steps=6, batch_size=8, seq_len=24, context=16, eval_every=3, btc_share=1.0,
                                            rescale=0.0)))
TINY_RL = dict(steps=2, batch_episodes=8, group_size=4, context_len=16, horizon=8, eval_episodes=8, eval_samples=2,
               eval_every=1, save_every=2)
TINY_EVAL = EvalConfig(assets="all", horizon=8, n_paths=4, stride=10, baseline_paths=16, context_len=16)

def test_two_folds_of_three_synthetic_assets(tmp_path):
    from btc_rl.study import StudyConfig, run_study, fold_results, verdict
    cfg = StudyConfig(str(tmp_path / "study"), folds=(2021, 2022), seeds=(0, 1), recipe="crps, all assets", eval=TINY_EVAL,
                      data_dir=str(tmp_path), stages=TINY_STAGES, rl=TINY_RL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run_study(cfg, executor="local", timeout_min=10)
    assert out["recipe"] == "crps, all assets" and not out["failed"]
    for y in (2021, 2022):
        ev = json.loads((tmp_path / "study" / f"fold_{y}" / "evaluation.json").read_text())
        assert ev["meta"]["end"] == f"{y}-12-31" and len(ev["meta"]["assets"]) == 4
        assert set(ev["summary"]["pooled"]) >= {"pretrained", "SFT", "RL seed 0", "RL seed 1", "GARCH(1,1)-t"}
    res = fold_results(tmp_path / "study")
    assert list(res.index) == [2021, 2022] and len(res[f"{res.attrs['h']} seeds"].iloc[0]) == 2
    v = verdict(res)
    assert v["folds"] == 2 and isinstance(v["target met"], bool)
    from btc_rl.study import walk_forward, verdict_numbers, verdict_table, verdict_sentence
    wf = walk_forward(tmp_path / "study")
    assert wf.meta["folds"] == ["2021", "2022"] and "RL (seed mean)" in wf.models
    vn = verdict_numbers(wf)
    t = verdict_table(vn, wf.h)
    assert t.shape == (12, 7) and not t.isna().any().any()
    rl = t[(t.policy == "RL (seed mean)") & (t.assets == "all assets") & (t.horizon == "1 day")].iloc[0]
    d = vn["all assets | RL - SFT | 1d"]                          # RL - SFT in % of SFT's CRPS, shown as a skill
    assert rl["vs SFT"] == f"{-d['estimate']:+.2f} [{-d['hi']:+.2f}, {-d['lo']:+.2f}]"
    assert (t[t.policy != "RL (seed mean)"]["vs SFT"] == "").all()
    assert "Stage 3 RL" in verdict_sentence(vn, wf.meta["folds"], wf.h)
    first = (tmp_path / "study" / "fold_2021" / "evaluation.json").stat().st_mtime
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_study(cfg, executor="local", timeout_min=10)                       # again: every part is kept
    assert (tmp_path / "study" / "fold_2021" / "evaluation.json").stat().st_mtime == first

def _write(folder, factor_after=None, when=None):
    "BTC and two assets as CSV files; with factor_after, every close after `when` is scaled by a random walk."
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed, vol in (("BTC-USD", 0, 0.035), ("AAA", 1, 0.015), ("BBB", 2, 0.02)):
        df = synthetic_prices(2600, seed=seed, daily_vol=vol)
        if factor_after is not None:
            late = df.index > pd.Timestamp(when)
            df.loc[late, "Close"] *= np.exp(np.cumsum(np.random.default_rng(9).normal(0, 0.05, int(late.sum()))))
        df.attrs = {}
        df.to_csv(folder / f"{name}_x.csv")

def _fold(folder, year=2020):
    lay = Layout.folder(folder / "fold")
    ensure_stages(lay, data_dir=folder, test_end=f"{year}-12-31", progress=False, log=lambda m: None, **TINY_STAGES)
    return lay

def test_a_fold_never_fits_on_rows_after_its_training_end(tmp_path):
    """Changing every row after a fold's validation end leaves its tokenizer, stage 1, stage 2 and Stage 3 bit for bit
    the same; changing every row after its training end leaves its tokenizer and the Stage 3 episodes the same (stages 1
    and 2 read the validation year only to stop early)."""
    from btc_rl.rl_run import reinforce_finetune
    from btc_rl.reinforce import RLConfig, EpisodeSource
    from btc_rl.corpus import load_corpus
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _write(tmp_path / "a")
        lay_a = _fold(tmp_path / "a")
        s = load_tokenizer(lay_a.tokenizer).meta["splits"]
        _write(tmp_path / "b", True, s["val_end"]); lay_b = _fold(tmp_path / "b")
        _write(tmp_path / "c", True, s["train_end"]); lay_c = _fold(tmp_path / "c")
        rl = {}
        for k, lay in (("a", lay_a), ("b", lay_b)):
            c = RLConfig(**TINY_RL, reward="crps", assets="all", data_dir=str(tmp_path / k), tokenizer=str(lay.tokenizer),
                         checkpoint_in=str(lay.sft), checkpoint_out=str(tmp_path / k / "fold" / "rl.pt"))
            reinforce_finetune(c, progress=False)
            rl[k] = load_checkpoint(tmp_path / k / "fold" / "rl.pt")["model"]
        tok = {k: load_tokenizer(lay.tokenizer) for k, lay in (("a", lay_a), ("b", lay_b), ("c", lay_c))}
        eps = {k: EpisodeSource.from_corpus(load_corpus(tok[k], None, tmp_path / k), tok[k], ["BTC-USD", "AAA", "BBB"])
               for k in ("a", "c")}
    assert tok["a"].fingerprint() == tok["b"].fingerprint() == tok["c"].fingerprint()
    for f in ("pretrain", "sft"):
        wa, wb = load_checkpoint(getattr(lay_a, f))["model"], load_checkpoint(getattr(lay_b, f))["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f
    assert all(torch.equal(rl["a"][k], rl["b"][k]) for k in rl["a"])
    assert torch.equal(eps["a"].ids, eps["c"].ids) and torch.equal(eps["a"].returns, eps["c"].returns)
    g = lambda: torch.Generator().manual_seed(0)
    assert torch.equal(eps["a"].sample(32, 16, 8, g()).realized, eps["c"].sample(32, 16, 8, g()).realized)
