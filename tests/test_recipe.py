"""Stage 1/2 recipe pieces: exact CRPS helpers, sampling weights, volatility rescaling, exact encoding."""
import math, warnings
import numpy as np
import pytest
import torch
from btc_rl.train import LMConfig, LMData, lm_batch, sampling_probs, pretrain, sft
from btc_rl.scoring import crps_discrete, crps_empirical
from btc_rl.checkpoint import load_checkpoint


def test_crps_empirical_equals_brute_force():
    rng = np.random.default_rng(0)
    pool, y = rng.standard_t(4, 500), rng.standard_t(4, 50) * 2
    brute = np.abs(pool[None] - y[:, None]).mean(1) - 0.5 * np.abs(pool[:, None] - pool[None]).mean()
    np.testing.assert_allclose(crps_empirical(pool, y), brute, rtol=1e-10)
    # an observation outside the pool's range, and a pool of one value: CRPS is the absolute error
    np.testing.assert_allclose(crps_empirical(np.array([0.5]), np.array([2.0, -1.0])), [1.5, 1.5])


def test_crps_discrete_equals_empirical_of_matching_pool():
    "A distribution with weights in tenths is the empirical distribution of a 10-value pool: both CRPS must agree."
    atoms = torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=torch.float64)
    counts = [(1, 5, 3, 1), (4, 2, 2, 2)]
    p = torch.tensor(counts, dtype=torch.float64) / 10
    y = torch.tensor([0.3, -2.0], dtype=torch.float64)
    exact = crps_discrete(p, atoms, y)
    for i, c in enumerate(counts):
        pool = np.repeat(atoms.numpy(), c)
        assert float(exact[i]) == pytest.approx(float(crps_empirical(pool, y[i : i + 1].numpy())[0]), rel=1e-12)
    point = crps_discrete(torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64), atoms, torch.tensor([0.7], dtype=torch.float64))
    assert float(point) == pytest.approx(0.7)                                  # a point mass scores its absolute error


def test_sampling_probs_weights_and_btc_share():
    names, n = ["BTC-USD", "ETH-USD", "SPY", "QQQ"], [100, 100, 300, 0]
    p = sampling_probs(names, n)
    np.testing.assert_allclose(p.numpy(), [0.2, 0.2, 0.6, 0.0])
    p = sampling_probs(names, n, crypto_weight=3.0)                # ETH three times heavier per window, BTC not
    np.testing.assert_allclose(p.numpy(), np.array([100, 300, 300, 0]) / 700)
    p = sampling_probs(names, n, btc_share=0.5, crypto_weight=3.0)
    assert float(p[0]) == pytest.approx(0.5) and float(p[1] / p[2]) == pytest.approx(1.0) and float(p[3]) == 0
    np.testing.assert_allclose(sampling_probs(names, n, btc_share=1.0).numpy(), [1, 0, 0, 0])
    with pytest.raises(ValueError, match="long enough"): sampling_probs(["A"], [0])
    for bad, msg in [(dict(btc_share=1.5), "btc_share"), (dict(rescale=-0.1), "rescale"), (dict(crypto_weight=-1.0), "crypto_weight")]:
        with pytest.raises(ValueError, match=msg): LMConfig(**bad).validate()


def _data():
    "Two assets whose normalized 'returns' are the integers' codewords, with an encoder that rounds to a grid."
    grid = torch.linspace(-3, 3, 13)
    enc = lambda z: (z[..., None] - grid).abs().argmin(-1)
    z = [torch.tensor([-1.0, 0.5, 1.0, -0.5, 2.0] * 8), torch.tensor([0.0, 1.5, -1.5, 0.5] * 10)]
    return LMData([enc(s) for s in z], ["BTC-USD", "SPY"], z, enc), grid


def test_lm_batch_rescale_tokenizes_scaled_windows():
    data, grid = _data()
    x0, y0 = lm_batch(data, 64, 6, torch.Generator().manual_seed(3), probs=torch.tensor([0.5, 0.5]))
    x1, y1 = lm_batch(data, 64, 6, torch.Generator().manual_seed(3), probs=torch.tensor([0.5, 0.5]), rescale=1.0)
    assert (x0[:, 1:] == y0[:, :-1]).all() and (x1[:, 1:] == y1[:, :-1]).all()     # targets are the next tokens
    assert (x1 != x0).any()                                                        # rescaled windows tokenize differently
    # each rescaled window is the original window times one factor in [e^-1, e]
    v0, v1 = grid[x0], grid[x1]
    nz = v0.abs() >= 1.0
    ratio = (v1[nz] / v0[nz])
    assert ratio.min() > math.exp(-1) - 0.35 and ratio.max() < math.e + 0.7
    # never mixes assets: every window is made of one asset's values
    spy_vals = {float(v) for v in data.z[1].unique()}
    rows_spy = [r for r in range(64) if {float(v) for v in v0[r]} <= spy_vals]
    assert 0 < len(rows_spy) < 64
    with pytest.raises(ValueError, match="rescale"):
        lm_batch(LMData(data.ids, data.names), 4, 6, torch.Generator(), rescale=0.5)


def test_lm_batch_default_path_unchanged_by_weights():
    "Without weights or rescaling, batches are those of the length-proportional sampler (reproducible results)."
    seqs = [torch.arange(50), torch.arange(100, 130)]
    a = lm_batch(seqs, 16, 8, torch.Generator().manual_seed(0))
    b = lm_batch(LMData(seqs, ["X", "Y"]), 16, 8, torch.Generator().manual_seed(0))
    assert all((u == v).all() for u, v in zip(a, b))


def test_encode_is_exact_nearest_codeword():
    "Exact distances: large-magnitude inputs still pick the nearest decoded codeword."
    from btc_rl.tokenizer import ReturnTokenizer, VQVAE, TokenizerConfig
    from btc_rl.data import Normalizer
    cfg = TokenizerConfig(codebook_size=16)
    tok = ReturnTokenizer(VQVAE(cfg), Normalizer(0.0, 1.0), cfg)
    tok.codewords = torch.linspace(-20, 20, 16)[:, None]
    z = torch.linspace(-25, 25, 2001)
    brute = (z[:, None] - tok.codewords[:, 0]).abs().argmin(-1)
    assert (tok.encode_normalized(z) == brute).all()
    assert (tok.encode(z.numpy()) == brute).all()


def test_pretrain_with_rescale_weights_and_model_fields(tiny, tmp_path):
    "Stage 1 with rescaling, crypto weighting and a model given as fields; stage 2 with replay."
    d = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = LMConfig(steps=6, batch_size=4, seq_len=24, context=16, eval_every=3, rescale=0.5, crypto_weight=2.0, btc_share=0.3)
        res = pretrain(d / "tok.pt", tmp_path / "pre.pt", data_dir=d, model_cfg=dict(n_layer=1, n_head=2, n_embd=16), cfg=lm, progress=False)
        ck = load_checkpoint(tmp_path / "pre.pt")
        assert ck["model_config"]["n_embd"] == 16 and ck["config"]["rescale"] == 0.5
        assert "skill_1d" in res["best"] and math.isfinite(res["best"]["skill_1d"])
        post = sft(d / "tok.pt", tmp_path / "pre.pt", tmp_path / "sft.pt", data_dir=d,
                   cfg=LMConfig(steps=3, batch_size=4, seq_len=24, context=16, eval_every=3, btc_share=0.5), progress=False)
        assert post["best"]["ce_bits"] <= res["best"]["ce_bits"] + 1e-9            # step 0 is the starting point
