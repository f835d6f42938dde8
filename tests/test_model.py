import os, signal, subprocess, sys, textwrap, time
import pytest
import torch
from btc_rl.model import GPT, GPTConfig, KVCache
from btc_rl.checkpoint import save_checkpoint, load_checkpoint, model_from_checkpoint, CHECKPOINT_FORMAT

@pytest.mark.parametrize("n_layer,n_head,n_embd", [(1, 1, 8), (2, 4, 32), (3, 2, 16)])
def test_kv_cache_logits_equal_full_forward(n_layer, n_head, n_embd):
    torch.manual_seed(n_layer)
    m = GPT(GPTConfig(vocab_size=13, block_size=48, n_layer=n_layer, n_head=n_head, n_embd=n_embd)).eval()
    x = torch.randint(0, 13, (4, 40))
    full = m(x)[0]
    cache = KVCache(m.config, 4, 40)
    parts = [m(x[:, :17], cache=cache)[0]] + [m(x[:, t:t + 1], cache=cache)[0] for t in range(17, 40)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)

def test_sampling_all_rows_at_once_matches_distribution():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=5, block_size=16, n_layer=1, n_head=1, n_embd=8)).eval()
    with torch.no_grad():
        for p in m.parameters(): p.mul_(20)
    ctx = torch.tensor([[1, 2, 3]])
    toks, _ = m.sample(ctx.expand(20000, -1), 1, generator=torch.Generator().manual_seed(0))
    want = torch.softmax(m(ctx)[0][0, -1], -1)
    freq = torch.bincount(toks[:, 0], minlength=5).float() / 20000
    assert (freq - want).abs().max() < 4 * (want * (1 - want) / 20000).sqrt().max() + 1e-3

def test_killed_mid_save_leaves_previous_checkpoint(tmp_path):
    m = GPT(GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=1, n_embd=8))
    path = tmp_path / "ck.pt"
    save_checkpoint(path, m, "test", {"fingerprint": "a"}, {"source": "x"}, step=1)
    writer = textwrap.dedent(f"""
        import torch
        from btc_rl.model import GPT, GPTConfig
        from btc_rl.checkpoint import save_checkpoint
        m = GPT(GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=1, n_embd=8))
        big = {{"blob": torch.randn(64, 1024, 1024)}}                       # 256 MB: the write takes a while
        while True: save_checkpoint({str(path)!r}, m, "test", {{"fingerprint": "b"}}, {{"source": "x"}}, step=2, extra=big)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer])
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".ck.pt.*.tmp")) and time.time() < deadline: time.sleep(0.01)
        assert list(tmp_path.glob(".ck.pt.*.tmp")), "the writer never started a save"
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL); proc.wait()
    finally:
        if proc.poll() is None: proc.kill()
    ck = load_checkpoint(path)                                                  # still the complete old one (or a complete new one)
    assert ck["step"] in (1, 2)
    model_from_checkpoint(ck)

def test_code_in_a_checkpoint_is_not_run(tmp_path):
    marker = tmp_path / "pwned"
    class Evil:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    torch.save({"format": CHECKPOINT_FORMAT, "model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused to load"): load_checkpoint(tmp_path / "evil.pt")
    from btc_rl.tokenizer import load_tokenizer
    with pytest.raises(ValueError, match="not a loadable tokenizer"): load_tokenizer(tmp_path / "evil.pt")
    assert not marker.exists()

def test_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="checkpoint not found"): load_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a btc_rl checkpoint"): load_checkpoint(tmp_path / "other.pt")

def _multinomial_sampler(m, idx, n_new, temperature=1.0, top_k=None, generator=None):
    "The one-batch sampler as it was: prefill the cache, then one torch.multinomial draw per step."
    from btc_rl.model import sampling_logprobs
    B, T = idx.shape
    cache = KVCache(m.config, B, T + n_new)
    with torch.no_grad():
        logits = m(idx, cache=cache)[0][:, -1]
        toks = []
        for i in range(n_new):
            logp = sampling_logprobs(logits.float(), temperature, top_k)
            tok = torch.multinomial(logp.exp(), 1, generator=generator); toks.append(tok)
            if i + 1 < n_new: logits = m(tok, cache=cache)[0][:, -1]
    return torch.cat(toks, 1)

@pytest.mark.parametrize("top_k,temperature", [(None, 1.0), (3, 0.7)])
def test_shared_context_sampling_is_the_multinomial_sampler_exactly(top_k, temperature):
    "n_samples futures per context, decoded in chunks, with the noise drawn ahead: the same tokens as torch.multinomial, bit for bit."
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=12, block_size=48, n_layer=2, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in m.parameters(): p.mul_(8)
    ctx = torch.randint(0, 12, (7, 20))
    want = _multinomial_sampler(m, ctx.repeat_interleave(5, 0), 10, temperature, top_k, torch.Generator().manual_seed(1))
    for chunk in (0, 1, 3):
        got, _ = m.sample(ctx, 10, temperature, top_k, torch.Generator().manual_seed(1), n_samples=5, chunk=chunk)
        assert torch.equal(got, want), chunk
