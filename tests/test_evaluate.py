"""Evaluation: intervals that cover, the DM test, exact scores against sampled ones, and no look-ahead."""
import math, warnings
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from btc_rl.intervals import coverage_study, dm_test, mean_ci, pooled_mean, pooled_skill, skill_ci, overlapping_differentials
from btc_rl.baselines import Garch, crps_fair, rolling_sigma, static_1d
from btc_rl.data import synthetic_prices, log_returns

@pytest.mark.parametrize("stride,phi", [(4, 0.3), (8, 0.5), (1, 0.6)])
def test_intervals_cover_with_strided_overlapping_horizons(stride, phi):
    """2000 one-year series of 32-day overlapping loss differentials (AR(1) days, known mean 0), origins every `stride`
    days: the nominal 95% batch-means interval must cover the mean at least 92% of the time."""
    cov = coverage_study([dict(days=365, horizon=32, stride=stride, phi=phi)], reps=2000, seed=stride, bootstraps=False)
    assert cov["batch means"].iloc[0] >= 0.92, cov

def test_the_old_interval_fails_the_same_check():
    "The moving-block bootstrap in blocks of h days on strided origins covers far less: the check can fail."
    from btc_rl.intervals import moving_block_ci
    rng = np.random.default_rng(0)
    x = overlapping_differentials(300, 365, 32, 4, 0.3, rng)
    inside = np.mean([lo <= 0 <= hi for lo, hi in (moving_block_ci(r, 32, rng, n_boot=300) for r in x)])
    assert inside < 0.9

def test_dm_statistic_by_hand():
    d = np.array([0.5, -0.1, 0.3, 0.8, 0.2, 0.4, -0.3, 0.6])
    means = d.reshape(4, 2).mean(1)                                           # dep 1: 4 batches of 2
    se = means.std(ddof=1) / 2
    t, p = dm_test(d, 1)
    assert t == pytest.approx(d.mean() / se) and p == pytest.approx(2 * stats.t.sf(abs(d.mean() / se), 3))
    ci = mean_ci(d, 1)
    assert ci.lo == pytest.approx(d.mean() - stats.t.ppf(0.975, 3) * se) and ci.p == pytest.approx(p)

def test_pooled_skill_covers_with_correlated_assets():
    """20 assets sharing a common daily shock, 250 days, true skill 0: the pooled interval (whole days together) covers at
    least 92% of 400 replications; treating asset-days as independent would not."""
    rng, inside = np.random.default_rng(1), 0
    for _ in range(400):
        common = rng.standard_normal((250, 1)) * 0.8
        vol = np.exp(np.cumsum(rng.standard_normal((250, 1)) * 0.1, 0))
        a = np.abs(vol * (common + rng.standard_normal((250, 20)))) + 1.0
        b = np.abs(vol * (common + rng.standard_normal((250, 20)))) + 1.0
        ci, _, _ = pooled_skill(pd.DataFrame(a), pd.DataFrame(b), 10)
        inside += ci.lo <= 0 <= ci.hi
    assert inside / 400 >= 0.92

def test_skill_interval_of_identical_models_is_zero_and_pooled_mean_by_hand():
    a = np.random.default_rng(0).uniform(1, 2, 100)
    s = skill_ci(a, a, 5)
    assert (s.estimate, s.lo, s.hi) == (0.0, 0.0, 0.0)
    d = pd.DataFrame({"X": [1.0, 2.0, np.nan, 3.0], "Y": [0.0, np.nan, 2.0, 4.0]})
    assert pooled_mean(d, 1).estimate == pytest.approx((2.0 + 2.0) / 2)

def test_exact_one_day_crps_equals_the_sampled_one():
    "The categorical CRPS of a next-token distribution equals the mean fair CRPS of its samples, within MC error."
    from btc_rl.scoring import crps_discrete
    rng = np.random.default_rng(0)
    atoms = np.sort(rng.standard_t(4, 16)) * 0.02
    p = rng.dirichlet(np.ones(16), 200); y = rng.standard_t(4, 200) * 0.02
    exact = crps_discrete(torch.tensor(p), torch.tensor(atoms), torch.tensor(y)).numpy()
    samples = np.stack([rng.choice(atoms, 300, p=pi) for pi in p])
    fair = crps_fair(y, samples)
    assert abs(fair.mean() - exact.mean()) < 4 * fair.std() / math.sqrt(len(fair)) / 3   # 300 samples: noise ~ 1/sqrt(300)
    assert abs(fair.mean() - exact.mean()) / exact.mean() < 0.01

def test_baselines_use_no_future_return():
    """A forecast made at day d is scored on day d + 1 and knows nothing later: changing day t's return leaves every
    baseline's forecast of day t unchanged, and moves its forecast of day t + 1."""
    r = log_returns(synthetic_prices(900, seed=4)); end = r.index[600]
    g = Garch.fit(r, end, gjr=True)
    r2 = r.copy(); r2.iloc[700] = 0.4
    for f in (lambda x: g.sigma(x), lambda x: rolling_sigma(x)):
        assert f(r2).iloc[700] == f(r).iloc[700] and f(r2).iloc[701] != f(r).iloc[701]

def test_policy_forecasts_see_only_the_past(tiny):
    """A policy that puts all its mass on the last token it is shown scores exactly the persistence forecast (yesterday's
    return), not the near-perfect score it would get if its context held the day it forecasts."""
    from btc_rl.tokenizer import load_tokenizer
    from btc_rl.corpus import load_corpus
    from btc_rl.evaluate import EvalConfig, asset_origins, next_day_crps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = load_tokenizer(tiny / "tok.pt"); corpus = load_corpus(tok, None, tiny, with_assets=False)
    class Copy(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.w = torch.nn.Parameter(torch.zeros(1))
        def forward(self, idx): return torch.nn.functional.one_hot(idx, tok.vocab_size).float() * 50, None
    s = corpus.btc
    o = asset_origins(s, *corpus.splits.period("test"), EvalConfig(), 16)
    got = next_day_crps(Copy(), tok, {"BTC-USD": s}, [o], 16)[0].mean()
    m, sd = tok.normalizer.stats("BTC-USD"); z = tok.codewords[:, 0].double().numpy()
    y = s.returns.to_numpy()[o.day_pos]
    persistence = np.abs(z[s.ids[o.day_pos - 1].numpy()] * sd + m - y).mean()
    told = np.abs(z[s.ids[o.day_pos].numpy()] * sd + m - y).mean()            # shown the day itself
    assert got == pytest.approx(persistence, rel=1e-6) and got > 3 * told

def test_coverage_of_a_calibrated_32_path_forecast_is_nominal():
    "With 32 samples the empirical-quantile interval covers (N-1)/(N+1) of its level; the rank PIT covers the level."
    from btc_rl.baselines import sample_scores
    rng = np.random.default_rng(3)
    y, ens = rng.standard_normal(60000), rng.standard_normal((60000, 32))
    s = sample_scores(y, ens, rng)
    for c in (50, 80, 90): assert abs(s[f"in{c}"].mean() - c / 100) < 0.006, (c, s[f"in{c}"].mean())
    assert abs(np.histogram(s["pit"], 10, (0, 1))[0] / 60000 - 0.1).max() < 0.006
    lo, hi = np.quantile(ens, [0.1, 0.9], axis=1)
    assert abs(((y >= lo) & (y <= hi)).mean() - 31 / 33 * 0.8) < 0.006          # what the old count gave
