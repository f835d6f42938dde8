import numpy as np
import pytest
import torch
from btc_rl.data import synthetic_prices, log_returns, fit_normalizer, load_prices, Splits
from btc_rl.tokenizer import TokenizerConfig, train_tokenizer, training_patches, load_tokenizer, build_tokenizer, tokenizer_report

@pytest.fixture(scope="module")
def tok2():
    r = {"S": log_returns(synthetic_prices(2000, seed=7))}
    cut = r["S"].index[1500]; norm = fit_normalizer(r, cut)
    cfg = TokenizerConfig(patch_size=2, codebook_size=24, embed_dim=4, hidden=32, steps=300, batch_size=256)
    return train_tokenizer(training_patches(r, norm, cut, 2), norm, cfg, progress=False), r["S"]

def test_tokens_are_causal(tok2):
    tok, r = tok2
    x = r.to_numpy()[:300].copy(); ids = tok.encode(x)
    for t in (11, 100, 201):                                                   # change every day from t on
        y = x.copy(); y[t:] = np.random.default_rng(t).normal(0, 0.2, len(y) - t)
        k = t // 2                                                             # tokens 0..k-1 end before day t
        assert torch.equal(tok.encode(y)[:k], ids[:k])
        assert not torch.equal(tok.encode(y)[k:], ids[k:])                    # later tokens do see the change

def test_encode_decode_round_trip_every_id(tok2):
    tok, _ = tok2
    ids = torch.arange(tok.vocab_size).repeat(3, 1)
    assert torch.equal(tok.encode(tok.decode(ids)), ids)

def test_load_infers_sizes_and_restores_normalization(tok2, tmp_path):
    tok, r = tok2
    tok.save(tmp_path / "t.pt")
    d = torch.load(tmp_path / "t.pt", weights_only=True); d.pop("config"); torch.save(d, tmp_path / "noconfig.pt")
    back = load_tokenizer(tmp_path / "noconfig.pt")
    assert (back.patch_size, back.vocab_size, back.config.embed_dim, back.config.hidden) == (2, 24, 4, 32)
    assert back.normalizer == tok.normalizer and back.fingerprint() == tok.fingerprint()
    assert torch.equal(back.encode(r.to_numpy()[:100]), tok.encode(r.to_numpy()[:100]))

def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(ValueError, match="not found"): load_tokenizer(tmp_path / "x.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a loadable tokenizer"): load_tokenizer(tmp_path / "junk.pt")

def test_real_btc_round_trip_target(btc_csv, tmp_path):
    data = tmp_path / "data"; data.mkdir()
    for p in btc_csv.parent.glob("*.csv"): (data / p.name).write_bytes(p.read_bytes())
    tok = build_tokenizer(data_dir=data, out=tmp_path / "tok.pt", progress=False)
    s = Splits.from_dict(tok.meta["splits"])
    r = log_returns(load_prices(btc_csv))
    test = r[r.index >= s.test_start]                                          # BTC 2024
    assert test.index[0].year == 2024 and len(test) == 365
    rep = tokenizer_report(tok, test)
    assert rep["mae_ratio"] <= 0.10, rep
    assert rep["codes_used"] >= 0.5 * tok.vocab_size
    assert abs(rep["q01_decoded"] - rep["q01_true"]) < 0.25 * abs(rep["q01_true"])
    ids = torch.arange(tok.vocab_size)[None]
    assert torch.equal(tok.encode(tok.decode(ids)), ids)
