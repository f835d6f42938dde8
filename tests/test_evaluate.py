import numpy as np
import pandas as pd
from btc_rl.data import synthetic_prices, log_returns
from btc_rl.evaluate import garch_paths, score_paths, block_bootstrap_ci, wilson

def test_garch_baseline_is_reproducible_and_fitted_on_training_only():
    r = log_returns(synthetic_prices(900, seed=4))
    train_end, days = r.index[600], r.index[700:705]
    a, pa = garch_paths(r, train_end, days, 20, 3, seed=1)
    b, pb = garch_paths(r, train_end, days, 20, 3, seed=1)
    assert a.shape == (5, 20, 3) and np.array_equal(a, b) and pa == pb
    changed = r.copy(); changed[changed.index > train_end] *= 3                # later data must not move the fitted parameters
    _, pc = garch_paths(changed, train_end, days, 20, 3, seed=1)
    assert pc == pa

def test_scores_on_a_known_case():
    actual = np.array([[0.01, -0.02], [0.03, 0.0]])
    s = score_paths(np.zeros((2, 5, 2)), actual)["summary"]
    assert np.isclose(s["crps_1d"], np.mean([0.01, 0.03])) and s["r2_oos"] == 0.0 and np.isnan(s["dir_acc"])
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi and np.isclose(hi - 0.5, 0.5 - lo)
    lo, hi = block_bootstrap_ci(np.ones(50), 5)
    assert lo == hi == 1.0

def test_policy_paths_are_those_of_the_one_batch_sampler(monkeypatch):
    "The shared-context sampler gives evaluation exactly the paths of the sampler it replaced (fixed seed)."
    import torch
    from btc_rl.model import GPT, GPTConfig
    from btc_rl.evaluate import EvalConfig, policy_paths
    from test_model import _multinomial_sampler
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=16, block_size=48, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in m.parameters(): p.mul_(8)
    class Series: ids = torch.randint(0, 16, (400,), generator=torch.Generator().manual_seed(2))
    class Tok:
        def decode(self, ids): return ids.float() / 100
    cfg = EvalConfig(horizon=6, context_len=24, n_paths=300, temperature=1.0, top_k=0)   # 27 origins per draw, 3 per decode chunk
    orig = np.arange(100, 160)
    new = policy_paths(m, Tok(), Series(), orig, cfg)
    def old_sample(idx, n_new, temperature=1.0, top_k=None, generator=None, n_samples=1, chunk=0):
        return _multinomial_sampler(m, idx.repeat_interleave(n_samples, 0), n_new, temperature, top_k, generator), None
    monkeypatch.setattr(m, "sample", old_sample)
    assert np.array_equal(policy_paths(m, Tok(), Series(), orig, cfg), new)
