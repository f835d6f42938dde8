"""Shared fixtures. Real-data tests look for CSVs in data/ (CI copies them there) or ../shared/data and
are skipped, saying so, on a fresh clone without them; everything else runs on small generated data."""
import warnings
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIRS = (ROOT / "data", ROOT.parent / "shared" / "data")

def real_csv(ticker: str) -> Path | None:
    for d in DATA_DIRS:
        hits = sorted(d.glob(f"{ticker}*.csv")) if d.is_dir() else []
        if hits: return hits[-1]
    return None

@pytest.fixture
def btc_csv() -> Path:
    p = real_csv("BTC-USD")
    if p is None: pytest.skip("no real BTC-USD CSV in data/ or ../shared/data (fresh clone): real-data check skipped")
    return p

@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    "A folder with a tiny tokenizer (K=16) and tiny pretrain / SFT checkpoints, built on synthetic data."
    from btc_rl.tokenizer import build_tokenizer, TokenizerConfig
    from btc_rl.train import pretrain, sft, LMConfig
    from btc_rl.model import GPTConfig
    d = tmp_path_factory.mktemp("tiny")
    lm = LMConfig(steps=20, batch_size=8, seq_len=24, context=0, eval_every=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_tokenizer(data_dir=d, out=d / "tok.pt", cfg=TokenizerConfig(codebook_size=16, steps=100), gap_days=40, progress=False)
        pretrain(d / "tok.pt", d / "pre.pt", data_dir=d, model_cfg=GPTConfig(vocab_size=16, block_size=64, n_layer=1, n_head=2, n_embd=16),
                 cfg=lm, progress=False)
        sft(d / "tok.pt", d / "pre.pt", d / "sft.pt", data_dir=d, cfg=lm, progress=False)
    return d

def tiny_rl(d: Path, out: str = "rl.pt", **kw):
    "An RLConfig on the tiny fixture."
    from btc_rl.reinforce import RLConfig
    base = dict(data_dir=str(d), tokenizer=str(d / "tok.pt"), checkpoint_in=str(d / "sft.pt"), checkpoint_out=str(d / out),
                context_len=24, horizon=8, batch_episodes=4, eval_episodes=8, eval_samples=2, eval_every=5, lr=1e-3)
    return RLConfig(**{**base, **kw})
