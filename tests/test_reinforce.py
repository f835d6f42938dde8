import warnings
import pandas as pd
import pytest
import torch
from btc_rl.model import GPT, GPTConfig
from btc_rl.checkpoint import load_checkpoint
from btc_rl.reinforce import advantages, reinforce_finetune, sample_windows, RLConfig
import btc_rl.reinforce as rf
from conftest import tiny_rl
from enumeration import exact_expected_reward, mc_gradient, _flat_grad

class UnitTok:
    "Stand-in tokenizer: token k decodes to a return of k - 1 (one day per token)."
    def decode(self, ids): return ids.float() - 1

def _close(est, se, want) -> bool:
    "Every coordinate within 4 Monte Carlo standard errors + 1e-4."
    return bool(((est - want).abs() <= 4 * se + 1e-4).all())

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
    est, se = mc_gradient(pol, ctx, tgt, baseline, B, estimates=2**14, seed=B)
    want = g * (1 - 1 / B) if baseline == "mean" else g
    assert g.norm() > 1e-3
    assert ((est - want).abs() <= 4 * se + 1e-4).all(), float(((est - want).abs() / se).max())

def test_mean_baseline_bias_is_detectable(tiny_policy):
    pol, ctx, tgt, g = tiny_policy
    est, se = mc_gradient(pol, ctx, tgt, "mean", 2, estimates=2**14, seed=5)
    assert not ((est - g).abs() <= 4 * se + 1e-4).all()

def _exact_grad(pol, ctx, tgt, reward, **kw):
    pol.zero_grad(); exact_expected_reward(pol, ctx, tgt, reward, UnitTok(), **kw).backward()
    g = _flat_grad(pol).clone(); pol.zero_grad(); return g

GROUP_CASES = [  # reward, baseline, B (episodes per estimate), G (futures per context), extra reward options
    ("token_acc", "group", 8, 4, {}), ("token_acc", "exact", 8, 4, {}), ("return_mse", "group", 8, 2, {}), ("pnl", "group", 8, 4, {}),
    ("crps", "none", 4, 2, {}), ("crps", "group", 4, 2, {}), ("crps", "group", 8, 4, {}), ("crps", "none", 8, 4, {}),
    ("crps", "group", 8, 4, {"crps_mode": "daily"}), ("energy", "group", 4, 2, {}), ("energy", "group", 8, 4, {}),
]

@pytest.mark.parametrize("reward,baseline,B,G,kw", GROUP_CASES)
def test_group_estimates_match_exact_gradient(tiny_policy, reward, baseline, B, G, kw):
    """Groups of G futures of one context; the average of 2^14 estimates equals the exact gradient of the expected reward,
    or for crps / energy of -CRPS(pi, y) / -ES(pi, y) computed from the enumerated distribution (scale 1)."""
    pol, ctx, tgt, _ = tiny_policy
    g = _exact_grad(pol, ctx, tgt, reward, **kw)
    est, se = mc_gradient(pol, ctx, tgt, baseline, B, estimates=2**14, seed=7 * B + G, reward=reward, tokenizer=UnitTok(), group_size=G, **kw)
    assert g.norm() > 1e-2
    assert _close(est, se, g), float(((est - g).abs() / se).max())

@pytest.mark.parametrize("reward,G", [("crps", 2), ("crps", 4), ("energy", 2)])
def test_naive_group_baseline_is_biased_for_proper_rewards(tiny_policy, reward, G):
    """The leave-one-out mean of the other members' credits depends on the member's own sample: the estimate then follows
    -E d(X, y) + (1 - 1/(G-1)) E d(X, X') / 2, not -CRPS. The test rejects it against grad(-CRPS) and accepts the predicted bias."""
    pol, ctx, tgt, _ = tiny_policy
    g = _exact_grad(pol, ctx, tgt, reward)
    biased = _exact_grad(pol, ctx, tgt, reward, spread=1 - 1 / (G - 1))
    est, se = mc_gradient(pol, ctx, tgt, "group", 2 * G, estimates=2**13, seed=11 + G, reward=reward, tokenizer=UnitTok(),
                          group_size=G, proper_baseline=False)
    assert not _close(est, se, g)
    assert _close(est, se, biased), float(((est - biased).abs() / se).max())

def test_group_reward_needs_a_group(tiny_policy):
    pol, ctx, tgt, _ = tiny_policy
    with pytest.raises(ValueError, match="needs group_size >= 2"):
        mc_gradient(pol, ctx, tgt, "none", 4, estimates=32, reward="crps", tokenizer=UnitTok(), group_size=1)
    with pytest.raises(ValueError, match="needs group_size >= 2"): RLConfig(reward="energy", batch_episodes=8).validate()

def test_advantages():
    R = torch.tensor([1.0, 2.0, 6.0])
    torch.testing.assert_close(advantages(R, "mean"), torch.tensor([-2.0, -1.0, 3.0]))
    torch.testing.assert_close(advantages(R, "loo"), torch.tensor([-3.0, -1.5, 4.5]))
    torch.testing.assert_close(advantages(R, "none"), R)
    with pytest.raises(ValueError, match="unknown baseline"): advantages(R, "ema")
    R4 = torch.tensor([1.0, 3.0, 10.0, 14.0])
    torch.testing.assert_close(advantages(R4, "group", 2), torch.tensor([-2.0, 2.0, -4.0, 4.0]))
    torch.testing.assert_close(advantages(R4, "group_norm", 2), torch.tensor([-1.0, 1.0, -1.0, 1.0]) / 2**0.5, atol=1e-5, rtol=0)
    torch.testing.assert_close(advantages(R4, "exact", 2), advantages(R4, "group", 2))
    torch.testing.assert_close(advantages(R4, "group", 2, torch.ones(4)), R4 - 1)
    with pytest.raises(ValueError, match="group_size >= 2"): advantages(R4, "group", 1)

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

def test_group_run_records_reward_baseline_and_group_size(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = reinforce_finetune(tiny_rl(tiny, "g.pt", steps=3, reward="crps", baseline="group", group_size=2, kl_coef=0.1), progress=False)
    ck = load_checkpoint(tiny / "g.pt")
    assert (ck["config"]["reward"], ck["config"]["baseline"], ck["config"]["group_size"], ck["config"]["kl_coef"]) == ("crps", "group", 2, 0.1)
    assert ck["metrics"]["summary"]["group_size"] == 2 and res.history["frac_reward_zero_std"].between(0, 1).all()
    assert res.history["val_reward"].dropna().lt(0).all()                      # minus a CRPS
    assert "group size G | 2" in res._repr_markdown_()
    assert res.summary["kl_ref_step"] == 3 and "(step 3)" in res._repr_markdown_()   # kl_coef > 0: the KL is measured every step

def test_kl_penalty_keeps_the_policy_closer(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = reinforce_finetune(tiny_rl(tiny, "k0.pt", steps=8, reward="return_mse", lr=3e-2, kl_every=1), progress=False)
        held = reinforce_finetune(tiny_rl(tiny, "k1.pt", steps=8, reward="return_mse", lr=3e-2, kl_coef=10.0), progress=False)
    assert held.history["kl_ref"].iloc[-1] < free.history["kl_ref"].iloc[-1]

def test_checkpoint_records_config_reward_and_source(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reinforce_finetune(tiny_rl(tiny, "m.pt", steps=3, reward="return_mse", baseline="loo"), progress=False)
    ck = load_checkpoint(tiny / "m.pt")
    assert ck["stage"] == "rl" and ck["config"]["reward"] == "return_mse" and ck["config"]["baseline"] == "loo"
    assert ck["data"]["source"].startswith("SYNTHETIC") and ck["metrics"]["summary"]["reward"] == "return_mse"
    assert set(ck["metrics"]["history"]) >= {"reward_mean", "reward_std", "frac_reward_zero_std", "loss", "grad_norm", "entropy", "kl_ref", "tokens_per_s",
                                              "val_reward", "val_reward_ref", "skipped"}
    assert ck["optimizer"] is not None and ck["rng"] is not None

def test_non_finite_reward_skips_the_step(tiny, monkeypatch):
    real, calls = rf.compute_reward, {"n": 0}
    def poisoned(name, sampled, target, tok=None, *a, **kw):
        R = real(name, sampled, target, tok, *a, **kw)
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

@pytest.mark.parametrize("reward,baseline,G", [("crps", "group", 4), ("energy", "none", 2), ("token_acc", "exact", 2),
                                               ("return_mse", "group_norm", 4), ("pnl", "loo", 1)])
def test_rl_step_update_is_minus_the_surrogate_gradient(tiny, reward, baseline, G):
    "rl_step (SGD, lr 1, no clipping, no KL) moves the weights by exactly minus the gradient of surrogate_loss on its batch."
    import copy
    from btc_rl.checkpoint import model_from_checkpoint
    from btc_rl.tokenizer import load_tokenizer
    from btc_rl.rewards import compute_reward, group_baseline
    tok, ck = load_tokenizer(tiny / "tok.pt"), load_checkpoint(tiny / "sft.pt")
    pol, ref = model_from_checkpoint(ck, "cpu").eval(), model_from_checkpoint(ck, "cpu").eval()
    ids = torch.randint(0, 16, (200,), generator=torch.Generator().manual_seed(0))
    cfg = tiny_rl(tiny, reward=reward, baseline=baseline, group_size=G, batch_episodes=8, grad_clip=1e9).validate()
    stepped = copy.deepcopy(pol)
    rf.rl_step(stepped, ref, torch.optim.SGD(stepped.parameters(), lr=1.0), ids, cfg, tok, torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)                                     # replay the step's batch
    ctx, tgt = sample_windows(ids, 8 // G, cfg.context_len, cfg.horizon, gen)
    ctx, tgt = ctx.repeat_interleave(G, 0), tgt.repeat_interleave(G, 0)
    toks, _ = pol.sample(ctx, cfg.horizon, cfg.temperature, None, gen)
    R = compute_reward(reward, toks, tgt, tok, G)
    b = group_baseline(reward, toks, tgt, tok, G) if baseline == "group" else None
    lp, logp = rf.sequence_logprobs(pol, ctx, toks)
    pol.zero_grad(); rf.surrogate_loss(lp, logp, R, tgt, baseline, G, b).backward()
    for p1, p0 in zip(stepped.parameters(), pol.parameters()):
        torch.testing.assert_close(p1.detach(), p0.detach() - (p0.grad if p0.grad is not None else 0), rtol=1e-4, atol=1e-6)

def test_reference_logits_in_pieces_match_one_pass():
    "The starting policy's pass in pieces (3 here, two futures per context) gives the one-pass logits."
    from btc_rl.reinforce import reference_logits
    torch.manual_seed(0)
    ref = GPT(GPTConfig(vocab_size=8, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    ctx, toks = torch.randint(0, 8, (5, 12)), torch.randint(0, 8, (10, 6))
    with torch.no_grad(): whole = ref.continue_logits(ref.prefill(ctx), toks, 2)
    got = reference_logits(ref, ctx, toks, 2, tokens=36)                        # 36 // (12 + 6) = 2 contexts per piece
    assert got.shape == (10, 6, 8) and got.dtype == torch.float32
    torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-6)
