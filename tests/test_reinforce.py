import warnings
import pandas as pd
import pytest
import torch
from btc_rl.model import GPT, GPTConfig
from btc_rl.checkpoint import load_checkpoint
from btc_rl.reinforce import (advantages, exact_expected_reward, mc_gradient, _flat_grad, reinforce_finetune,
                              sample_windows)
import btc_rl.reinforce as rf
from conftest import tiny_rl

@pytest.fixture(scope="module")
def tiny_policy():
    torch.manual_seed(3)
    pol = GPT(GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=1, n_embd=4))
    with torch.no_grad():
        for p in pol.parameters(): p.mul_(40)
    ctx, tgt = torch.tensor([[2]]), torch.tensor([[0, 1]])
    pol.zero_grad(); exact_expected_reward(pol, ctx, tgt).backward()
    return pol, ctx, tgt, _flat_grad(pol).clone()

@pytest.mark.parametrize("baseline,B", [("none", 2), ("none", 8), ("loo", 2), ("loo", 8), ("mean", 2), ("mean", 8), ("exact", 2), ("exact", 8)])
def test_reinforce_matches_exact_gradient(tiny_policy, baseline, B):
    """Average of 2^14 REINFORCE estimates vs the exact gradient by enumeration (3 tokens, horizon 2).
    Tolerance: every coordinate within 4 Monte Carlo standard errors + 1e-4. The mean baseline's
    expectation is (1 - 1/B) times the gradient."""
    pol, ctx, tgt, g = tiny_policy
    est, se = mc_gradient(pol, ctx, tgt, baseline, B, groups=2**14, seed=B)
    want = g * (1 - 1 / B) if baseline == "mean" else g
    assert g.norm() > 1e-3
    assert ((est - want).abs() <= 4 * se + 1e-4).all(), float(((est - want).abs() / se).max())

def test_mean_baseline_bias_is_detectable(tiny_policy):
    pol, ctx, tgt, g = tiny_policy
    est, se = mc_gradient(pol, ctx, tgt, "mean", 2, groups=2**14, seed=5)
    assert not ((est - g).abs() <= 4 * se + 1e-4).all()

def test_advantages():
    R = torch.tensor([1.0, 2.0, 6.0])
    torch.testing.assert_close(advantages(R, "mean"), torch.tensor([-2.0, -1.0, 3.0]))
    torch.testing.assert_close(advantages(R, "loo"), torch.tensor([-3.0, -1.5, 4.5]))
    torch.testing.assert_close(advantages(R, "none"), R)
    with pytest.raises(ValueError, match="unknown baseline"): advantages(R, "ema")

def test_windows_stay_inside_and_fail_when_too_long():
    ids = torch.arange(50)
    c, t = sample_windows(ids, 200, 10, 5, torch.Generator().manual_seed(0))
    assert int(t.max()) <= 49 and torch.equal(t[:, 0], c[:, -1] + 1)
    with pytest.raises(ValueError, match="longer than the training period"): sample_windows(ids, 1, 40, 11, torch.Generator())

def test_same_seed_same_checkpoint_and_resume_equals_straight_run(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reinforce_finetune(tiny_rl(tiny, "a.pt", steps=20), progress=False)
        reinforce_finetune(tiny_rl(tiny, "b.pt", steps=20), progress=False)
        reinforce_finetune(tiny_rl(tiny, "c.pt", steps=10), progress=False)
        res = reinforce_finetune(tiny_rl(tiny, "c.pt", steps=20), resume=True, progress=False)
    a, b, c = (load_checkpoint(tiny / f"{n}.pt") for n in "abc")
    start = load_checkpoint(tiny / "sft.pt")["model"]
    assert any(not torch.equal(a["model"][k], start[k]) for k in start)       # training moved the weights
    for other in (b, c):
        assert all(torch.equal(a["model"][k], other["model"][k]) for k in a["model"])
    assert c["step"] == 20 and len(res.history) == 20
    assert pd.read_csv(tiny / "c.metrics.csv")["step"].tolist() == list(range(1, 21))
    with pytest.raises(ValueError, match="different settings"):
        reinforce_finetune(tiny_rl(tiny, "c.pt", steps=30, lr=1e-2), resume=True, progress=False)

def test_checkpoint_records_config_reward_and_source(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reinforce_finetune(tiny_rl(tiny, "m.pt", steps=3, reward="return_mse", baseline="loo"), progress=False)
    ck = load_checkpoint(tiny / "m.pt")
    assert ck["stage"] == "rl" and ck["config"]["reward"] == "return_mse" and ck["config"]["baseline"] == "loo"
    assert ck["data"]["source"].startswith("SYNTHETIC") and ck["metrics"]["summary"]["reward"] == "return_mse"
    assert set(ck["metrics"]["history"]) >= {"reward_mean", "reward_std", "loss", "grad_norm", "entropy", "kl_ref", "tokens_per_s",
                                              "val_reward", "val_reward_ref", "skipped"}
    assert ck["optimizer"] is not None and ck["rng"] is not None

def test_non_finite_reward_skips_the_step(tiny, monkeypatch):
    real, calls = rf.compute_reward, {"n": 0}
    def poisoned(name, sampled, target, tok=None):
        R = real(name, sampled, target, tok)
        if sampled.shape[0] == 4:                                              # training batches (validation uses 8 x 2)
            calls["n"] += 1
            if calls["n"] in (2, 3): R = R * float("nan")
        return R
    monkeypatch.setattr(rf, "compute_reward", poisoned)
    with pytest.warns(UserWarning, match="step skipped"):
        res = reinforce_finetune(tiny_rl(tiny, "nan.pt", steps=5), progress=False)
    assert res.history["skipped_step"].tolist() == [0, 1, 1, 0, 0] and res.summary["skipped_steps"] == 2
    ck = load_checkpoint(tiny / "nan.pt")
    assert all(torch.isfinite(v).all() for v in ck["model"].values())

def test_tokenizer_mismatch_is_refused(tiny):
    from btc_rl.tokenizer import build_tokenizer, TokenizerConfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_tokenizer(data_dir=tiny, out=tiny / "tok8.pt", cfg=TokenizerConfig(codebook_size=8, steps=50), gap_days=40, progress=False)
    with pytest.raises(ValueError, match="different tokenizer.*vocab_size 16 vs 8"):
        reinforce_finetune(tiny_rl(tiny, "x.pt", steps=1, tokenizer=str(tiny / "tok8.pt")), progress=False)
