"""Stage 3's estimator against exact expectations on a policy small enough to enumerate, and rl_step against them."""
import copy, warnings
import pandas as pd
import pytest
import torch
from btc_rl.checkpoint import load_checkpoint
from btc_rl.reinforce import (BASELINES, GROUP_REWARD_BASELINES, RLConfig, EpisodeSource, advantages, exact_objective,
                              expected_surrogate, flat_grad)
from btc_rl.rewards import GROUP_REWARDS
from btc_rl.rl_run import reinforce_finetune
import btc_rl.reinforce as rf
from conftest import tiny_rl
from enumeration import UnitTok, tiny_policy, mc_updates, kl_direct, flat

CTX, TGT = torch.tensor([[2]]), torch.tensor([[0, 1]])
REAL = torch.tensor([[-0.3, 0.6]])          # the realized returns: not the target tokens' codewords (-1, 0)

@pytest.fixture(scope="module")
def pol():
    return tiny_policy()

def _exact(pol, reward="token_acc", **kw):
    return flat_grad(pol, exact_objective(pol, CTX, TGT, reward, UnitTok(), REAL, **kw))

def _expected(pol, reward, baseline, B, G=1, **kw):
    return flat_grad(pol, expected_surrogate(pol, CTX, TGT, reward, baseline, B, G, UnitTok(), REAL, **kw))

def _accepted(reward, baseline, B, G) -> bool:
    try: RLConfig(reward=reward, baseline=baseline, batch_episodes=B, group_size=G).validate(); return True
    except ValueError: return False

@pytest.mark.parametrize("reward", GROUP_REWARDS)
@pytest.mark.parametrize("baseline", [b for b in BASELINES if b != "exact"])
def test_group_rewards_accept_exactly_the_unbiased_baselines(pol, reward, baseline):
    """For crps / energy every baseline the config accepts gives the exact gradient of -CRPS / -ES in expectation
    (enumerating every batch of B = 4 futures in groups of 2), and every one it refuses is measurably biased."""
    g, e = _exact(pol, reward), _expected(pol, reward, baseline, 4, 2)
    unbiased = float((e - g).norm() / g.norm()) < 1e-4                          # float32 rounding: ~1e-6; a bias: > 1e-2
    assert _accepted(reward, baseline, 4, 2) == unbiased == (baseline in GROUP_REWARD_BASELINES), float((e - g).norm() / g.norm())

def test_refusal_says_why():
    with pytest.raises(ValueError, match="depends on the other futures of its group.*use baseline group"):
        RLConfig(reward="crps", baseline="loo", group_size=2, batch_episodes=4).validate()
    assert RLConfig(reward="crps", group_size=2, batch_episodes=4).validate().baseline == "group"

_PER_EPISODE = [(r, b, B, G) for r in ("token_acc", "return_mse", "pnl")
                for b, B, G in [("none", 2, 1), ("loo", 3, 1), ("mean", 2, 1), ("mean", 4, 1), ("group", 4, 2),
                                ("exact", 3, 1), ("exact", 4, 2)] if b != "exact" or r == "token_acc"]

@pytest.mark.parametrize("reward,baseline,B,G", _PER_EPISODE)
def test_per_episode_rewards_exact_expectation(pol, reward, baseline, B, G):
    "The unbiased baselines give the exact gradient; the batch mean gives (1 - 1/B) of it (exact: token_acc only)."
    g = _exact(pol, reward)
    want = g * (1 - 1 / B) if baseline == "mean" else g
    torch.testing.assert_close(_expected(pol, reward, baseline, B, G), want, rtol=1e-4, atol=1e-6 * float(g.abs().max()))

def test_the_enumeration_detects_the_mean_baseline_shrinkage(pol):
    g = _exact(pol, "return_mse")
    assert not torch.allclose(_expected(pol, "return_mse", "mean", 2), g, rtol=1e-2)

def test_realized_returns_are_the_target(pol):
    "Scoring the codewords of the target instead of the realized returns changes the objective's gradient."
    g = _exact(pol, "crps")
    codeword = flat_grad(pol, exact_objective(pol, CTX, TGT, "crps", UnitTok()))
    assert not torch.allclose(g, codeword, rtol=1e-2)

@pytest.mark.parametrize("reward,baseline,G,temperature,top_k,kl_coef", [
    ("crps", "group", 2, 0.7, 2, 0.5),          # groups, a tempered top-k sampler and the KL penalty at once
    ("energy", "none", 2, 1.3, 0, 0.2),
    ("token_acc", "exact", 2, 0.8, 2, 0.0),
    ("return_mse", "loo", 1, 1.0, 0, 1.0),
])
def test_rl_step_is_unbiased(pol, reward, baseline, G, temperature, top_k, kl_coef):
    """The mean update of 400 rl_step calls (64 episodes each, SGD at lr 1) equals the exact expected update, within
    4 Monte Carlo standard errors: the sampler, the log-probabilities it is scored with (temperature, top-k), the rewards
    against the realized returns, the baseline and the per-sequence KL term agree."""
    ref = copy.deepcopy(tiny_policy(seed=4))
    kw = dict(temperature=temperature, top_k=top_k or None, kl_coef=kl_coef, ref=ref)
    want = _expected(pol, reward, baseline, 2 * G, G, **kw)                 # unbiased: the same at any batch size
    est, se = mc_updates(pol, ref, CTX, TGT, REAL, calls=400, seed=1, reward=reward, baseline=baseline, group_size=G,
                         batch_episodes=64, temperature=temperature, top_k=top_k, kl_coef=kl_coef)
    assert want.norm() > 1e-3
    assert ((est - want).abs() <= 4 * se + 1e-4).all(), float(((est - want).abs() / (se + 1e-12)).max())

def test_the_rl_step_check_can_fail(pol):
    "The same comparison rejects the update of a sampler at another temperature than the one it is scored at."
    ref = copy.deepcopy(pol)
    want = _expected(pol, "crps", "group", 2, 2, temperature=0.7)
    est, se = mc_updates(pol, ref, CTX, TGT, REAL, calls=400, seed=1, reward="crps", baseline="group", group_size=2,
                         batch_episodes=64, temperature=1.3)
    assert not ((est - want).abs() <= 4 * se + 1e-4).all()

@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 2)])
def test_kl_term_against_enumeration(pol, temperature, top_k):
    """rl_step(kl_coef=b) - rl_step(kl_coef=0) on the same samples isolates the KL term; its mean over many calls is
    -b * grad sum_prefix P(prefix) KL(pi || pi_0) with the prefix distribution held fixed, computed by direct passes."""
    ref = tiny_policy(seed=4)
    want = -0.5 * flat_grad(pol, kl_direct(pol, ref, CTX, 2, temperature, top_k or None))
    kw = dict(reward="crps", baseline="group", group_size=2, batch_episodes=64, temperature=temperature, top_k=top_k)
    with_kl, se1 = mc_updates(pol, ref, CTX, TGT, REAL, calls=300, seed=5, kl_coef=0.5, **kw)
    without, se0 = mc_updates(pol, ref, CTX, TGT, REAL, calls=300, seed=5, kl_coef=0.0, **kw)
    diff, se = with_kl - without, (se1**2 + se0**2).sqrt()
    assert want.norm() > 1e-3
    assert ((diff - want).abs() <= 4 * se + 1e-5).all(), float(((diff - want).abs() / (se + 1e-12)).max())

def test_kl_measurement_never_changes_the_update(pol):
    "With kl_coef = 0, a step that measures the KL (step % kl_every == 0) moves the weights exactly as one that does not."
    ids = torch.cat([CTX.flatten(), TGT.flatten()])
    src = EpisodeSource.of_tokens(ids, torch.cat([torch.zeros(1), REAL.flatten()])[:, None])
    cfg = RLConfig(context_len=1, horizon=2, batch_episodes=8, kl_every=10, lr=1e-2).validate()
    out = []
    for step in (0, 1):                                                        # step 0 measures, step 1 does not
        p = copy.deepcopy(pol)
        m = rf.rl_step(p, copy.deepcopy(pol), torch.optim.AdamW(p.parameters(), lr=1e-2), src, cfg, UnitTok(),
                       torch.Generator().manual_seed(0), step=step)
        out.append((flat(p), m["kl_ref"]))
    assert torch.equal(out[0][0], out[1][0]) and out[0][1] == 0.0 and pd.isna(out[1][1])

def test_kl_penalty_is_per_sequence(pol):
    "beta multiplies the KL summed over a sequence's positions: the KL term's update does not shrink as 1/horizon."
    ref = tiny_policy(seed=4)
    k1 = flat_grad(pol, expected_surrogate(pol, CTX, TGT, "token_acc", "none", 1, kl_coef=1.0, ref=ref))
    k0 = flat_grad(pol, expected_surrogate(pol, CTX, TGT, "token_acc", "none", 1))
    torch.testing.assert_close(k0 - k1, flat_grad(pol, kl_direct(pol, ref, CTX, 2)), rtol=1e-4, atol=1e-7)

def test_advantages():
    R = torch.tensor([1.0, 2.0, 6.0])
    torch.testing.assert_close(advantages(R, "mean"), torch.tensor([-2.0, -1.0, 3.0]))
    torch.testing.assert_close(advantages(R, "loo"), torch.tensor([-3.0, -1.5, 4.5]))
    with pytest.raises(ValueError, match="unknown baseline"): advantages(R, "ema")
    R4 = torch.tensor([1.0, 3.0, 10.0, 14.0])
    torch.testing.assert_close(advantages(R4, "group", 2), torch.tensor([-2.0, 2.0, -4.0, 4.0]))
    torch.testing.assert_close(advantages(R4, "group_norm", 2), torch.tensor([-1.0, 1.0, -1.0, 1.0]) / 2**0.5,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(advantages(R4, "group", 2, torch.ones(4)), R4 - 1)
    with pytest.raises(ValueError, match="group_size >= 2"): advantages(R4, "group", 1)

def test_windows_stay_inside_and_fail_when_too_long():
    src = EpisodeSource.of_tokens(torch.arange(50), torch.zeros(50, 1))
    ep = src.sample(200, 10, 5, torch.Generator().manual_seed(0))
    assert int(ep.target.max()) <= 49 and torch.equal(ep.target[:, 0], ep.context[:, -1] + 1)
    with pytest.raises(ValueError, match="longer than the period"): src.sample(1, 40, 11, torch.Generator())

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

def test_group_run_logs_the_score_it_improves(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = reinforce_finetune(tiny_rl(tiny, "g.pt", steps=3, reward="crps", group_size=2, kl_coef=0.1), progress=False)
    ck = load_checkpoint(tiny / "g.pt")
    assert (ck["config"]["reward"], ck["config"]["baseline"], ck["config"]["group_size"]) == ("crps", "group", 2)
    h, s = res.history, res.summary
    assert {"score_mean", "val_score"} <= set(h) and "reward_mean" not in h
    assert s["train_score_first"] == pytest.approx(h["score_mean"].iloc[0])   # 3 steps: the first 10% is step 1
    assert res.history["frac_reward_zero_std"].between(0, 1).all()
    assert "group size G | 2" in res._repr_markdown_()
    assert s["kl_ref_step"] == 3 and "(step 3)" in res._repr_markdown_()     # kl_coef > 0: the KL is measured every step
    assert s["moved"] == (s["kl_ref_last"] >= 0.01)

def test_kl_penalty_keeps_the_policy_closer(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = reinforce_finetune(tiny_rl(tiny, "k0.pt", steps=8, reward="return_mse", lr=3e-2, kl_every=1), progress=False)
        held = reinforce_finetune(tiny_rl(tiny, "k1.pt", steps=8, reward="return_mse", lr=3e-2, kl_coef=10.0),
                                  progress=False)
    assert held.history["kl_ref"].iloc[-1] < free.history["kl_ref"].iloc[-1]

def test_checkpoint_records_config_and_source(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reinforce_finetune(tiny_rl(tiny, "m.pt", steps=3, reward="return_mse", baseline="loo"), progress=False)
    ck = load_checkpoint(tiny / "m.pt")
    assert ck["stage"] == "rl" and ck["config"]["reward"] == "return_mse" and ck["config"]["baseline"] == "loo"
    assert ck["data"]["source"].startswith("SYNTHETIC") and ck["metrics"]["summary"]["reward"] == "return_mse"
    assert set(ck["metrics"]["history"]) >= {"score_mean", "reward_std", "frac_reward_zero_std", "loss", "grad_norm",
                                              "entropy", "kl_ref", "tokens_per_s", "val_score", "val_score_ref", "skipped"}
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
        build_tokenizer(data_dir=tiny, out=tiny / "tok8.pt", cfg=TokenizerConfig(codebook_size=8, steps=50), gap_days=40,
                        progress=False)
    with pytest.raises(ValueError, match="different tokenizer.*vocab_size 16 vs 8"):
        reinforce_finetune(tiny_rl(tiny, "x.pt", steps=1, tokenizer=str(tiny / "tok8.pt")), progress=False)

@pytest.mark.parametrize("reward,baseline,G", [("crps", "group", 4), ("energy", "none", 2), ("token_acc", "exact", 2),
                                               ("return_mse", "group_norm", 4), ("pnl", "loo", 1)])
def test_rl_step_update_is_minus_the_surrogate_gradient(tiny, reward, baseline, G):
    "rl_step (SGD, lr 1, no clipping, no KL) moves the weights by exactly minus the gradient of surrogate_loss on its batch."
    from btc_rl.checkpoint import model_from_checkpoint
    from btc_rl.tokenizer import load_tokenizer
    from btc_rl.rewards import compute_reward, group_baseline
    tok, ck = load_tokenizer(tiny / "tok.pt"), load_checkpoint(tiny / "sft.pt")
    pol, ref = model_from_checkpoint(ck, "cpu").eval(), model_from_checkpoint(ck, "cpu").eval()
    ids = torch.randint(0, 16, (200,), generator=torch.Generator().manual_seed(0))
    src = EpisodeSource.of_tokens(ids, torch.randn(200, 1, generator=torch.Generator().manual_seed(1)) * 0.02,
                                  loc=0.001, scale=0.03)
    cfg = tiny_rl(tiny, reward=reward, baseline=baseline, group_size=G, batch_episodes=8, grad_clip=1e9).validate()
    stepped = copy.deepcopy(pol)
    rf.rl_step(stepped, ref, torch.optim.SGD(stepped.parameters(), lr=1.0), src, cfg, tok, torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)                                     # replay the step's batch
    grp = src.sample(8 // G, cfg.context_len, cfg.horizon, gen).repeat(G)
    toks, _ = pol.sample(grp.context, cfg.horizon, cfg.temperature, None, gen)
    dec = grp.decoder(tok)
    R = compute_reward(reward, toks, grp.target, dec, G, realized=grp.realized)
    b = group_baseline(reward, toks, grp.target, dec, G, realized=grp.realized) if baseline == "group" else None
    lp, logp = rf.sequence_logprobs(pol, grp.context, toks)
    pol.zero_grad(); rf.surrogate_loss(lp, logp, R, grp.target, baseline, G, b).backward()
    for p1, p0 in zip(stepped.parameters(), pol.parameters()):
        torch.testing.assert_close(p1.detach(), p0.detach() - (p0.grad if p0.grad is not None else 0), rtol=1e-4, atol=1e-6)

def test_reference_logits_in_pieces_match_one_pass():
    "The starting policy's pass in pieces (3 here, two futures per context) gives the one-pass logits."
    from btc_rl.model import GPT, GPTConfig
    from btc_rl.reinforce import reference_logits
    torch.manual_seed(0)
    ref = GPT(GPTConfig(vocab_size=8, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    ctx, toks = torch.randint(0, 8, (5, 12)), torch.randint(0, 8, (10, 6))
    with torch.no_grad(): whole = ref.continue_logits(ref.prefill(ctx), toks, 2)
    got = reference_logits(ref, ctx, toks, 2, tokens=36)                        # 36 // (12 + 6) = 2 contexts per piece
    assert got.shape == (10, 6, 8) and got.dtype == torch.float32
    torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-6)
