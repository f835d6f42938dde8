"""Evaluation and variance-study speed, before and after, with a check that the numbers are the same for a fixed seed.

"Before" is the code these replaced, reproduced here and swapped in for the run: the one-batch sampler (every path runs
its origin's context again; one `torch.multinomial` draw per step), a reference gradient that samples its own
episodes for each reward and runs every episode's context again for each of its futures, and estimator statistics
that make two Welford passes (`var` and `std`) where one does. Both versions run back to back on the same random
policy and token series. The paths must be equal bit for bit. In the variance table, every column that does not use
the reference gradient must be equal bit for bit; `cosine_to_ref` (absolute) and `ref_norm` (relative) are compared to
float32 rounding (the reference gradient now runs each context once for its futures, so a context's gradient is summed
in another order), and the largest differences are printed.

    python benchmarks/bench_eval.py             # policy_paths: 334 origins x 100 paths x 32 tokens; variance study: K=64, 2048 ref. episodes
    python benchmarks/bench_eval.py --quick     # 84 origins; K=16, 512 reference episodes
    python benchmarks/bench_eval.py --size 2x32x2   # another policy size [default: 4x64x4, the size stages 1-2 train]
    python benchmarks/bench_eval.py --repeats 3     # before/after three times, alternately; medians (a shared machine drifts)
"""
import argparse, contextlib, statistics, time
import numpy as np
import torch
import btc_rl.variance as V
from btc_rl.model import GPT, GPTConfig, KVCache, sampling_logprobs
from btc_rl.evaluate import EvalConfig, policy_paths
from btc_rl.rewards import compute_reward, group_baseline
from btc_rl.reinforce import sequence_logprobs, reinforce_loss

@torch.no_grad()
def one_batch_sample(self, idx, n_new, temperature=1.0, top_k=None, generator=None, n_samples=1, chunk=0, **_):
    "The sampler before: contexts repeated per future, one prefill of all rows, one multinomial draw per step."
    idx = idx.repeat_interleave(n_samples, 0)
    B, T = idx.shape
    cache = KVCache(self.config, B, T + n_new)
    logits = self(idx, cache=cache)[0][:, -1]
    toks = torch.empty(B, n_new, dtype=torch.long, device=idx.device); lps = torch.empty(B, n_new, device=idx.device)
    for i in range(n_new):
        logp = sampling_logprobs(logits.float(), temperature, top_k)
        tok = torch.multinomial(logp.exp(), 1, generator=generator)
        toks[:, i:i + 1], lps[:, i:i + 1] = tok, logp.gather(-1, tok)
        if i + 1 < n_new: logits = self(tok, cache=cache)[0][:, -1]
    return toks, lps

def per_reward_references(policy, train_ids, rewards, tok, cfg, chunk=512):
    "The reference gradients before: each reward samples its own copy of the episodes and runs its own forward and backward."
    out = {}
    for reward in rewards:
        gen = torch.Generator().manual_seed(cfg.seed + 999)
        G = max(cfg.group, 2)
        ctx, tgt, toks = V._episodes(policy, train_ids, cfg.ref_episodes // G, G, cfg, gen)
        A = compute_reward(reward, toks, tgt, tok, G) - group_baseline(reward, toks, tgt, tok, G)
        policy.zero_grad()
        for i in range(0, len(A), chunk):
            lp, _ = sequence_logprobs(policy, ctx[i:i + chunk], toks[i:i + chunk])
            (reinforce_loss(lp, A[i:i + chunk]) * len(lp) / len(A)).backward()
        out[reward] = -torch.cat([p.grad.flatten() for p in policy.parameters()])
        policy.zero_grad()
    return out

def two_pass_stats(est, ref):
    "The estimator statistics before: `std` and `var` each make their own pass."
    mu, sd = est.mean(0), est.std(0)
    cos = torch.nn.functional.cosine_similarity(est, ref[None], dim=1)
    return {"trace_cov": float(est.var(0).sum()), "snr": float((mu.abs() / (sd + 1e-20)).mean()),
            "cosine_to_ref": float(cos.mean()), "n_estimates": len(est)}

@contextlib.contextmanager
def before():
    saved = GPT.sample, V.reference_gradients, V.estimator_stats
    GPT.sample, V.reference_gradients, V.estimator_stats = one_batch_sample, per_reward_references, two_pass_stats
    try: yield
    finally: GPT.sample, V.reference_gradients, V.estimator_stats = saved

class Tok:
    "Stand-in tokenizer: token k is a return of (k - 32) / 1000."
    def decode(self, ids): return (torch.as_tensor(ids).float() - 32) / 1000

def timed(fn):
    t = time.perf_counter(); out = fn(); return out, time.perf_counter() - t

def table_diff(old, new) -> str:
    """'bit for bit', or the largest differences of the reference-gradient columns: the cosine (in [-1, 1]) absolute, the
    norm relative; raises if anything else differs or if either exceeds float32 rounding (1e-5)."""
    if old.equals(new): return "bit for bit"
    rest = [c for c in old.columns if c not in ("cosine_to_ref", "ref_norm")]
    if not old[rest].equals(new[rest]): raise AssertionError("a column that does not use the reference gradient changed")
    d_cos = float((new.cosine_to_ref - old.cosine_to_ref).abs().max())
    d_norm = float(((new.ref_norm - old.ref_norm) / old.ref_norm).abs().max())
    if not (d_cos < 1e-5 and d_norm < 1e-5):
        raise AssertionError(f"reference-gradient columns differ by {d_cos:.1e} (cosine) / {d_norm:.1e} (norm, relative): more than float32 rounding")
    return f"others bit for bit; cosine_to_ref within {d_cos:.0e}, ref_norm within {d_norm:.0e} (relative)"

def paths_diff(old, new) -> str:
    "'bit for bit'; raises if the paths differ at all."
    if not np.array_equal(old, new): raise AssertionError("the sampled paths changed")
    return "bit for bit"

def compare(new_fn, old_fn, repeats: int, same) -> tuple[float, float, str]:
    "Median times of before and after, run alternately `repeats` times (a shared machine drifts); `same(old, new)` checks every pair."
    t_new, t_old, res = [], [], None
    for _ in range(repeats):
        new, t = timed(new_fn); t_new.append(t)
        with before(): old, t = timed(old_fn)
        t_old.append(t); res = same(old, new)
    return statistics.median(t_old), statistics.median(t_new), res

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1, help="before/after pairs, run alternately; medians [default: 1]")
    ap.add_argument("--size", default="4x64x4", help="LAYERSxWIDTHxHEADS of the random policy [default: 4x64x4, PRETRAIN_MODEL]")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    L, C, H = (int(x) for x in a.size.split("x"))
    pol = GPT(GPTConfig(n_layer=L, n_embd=C, n_head=H)).eval()
    with torch.no_grad():
        for p in pol.parameters(): p.mul_(5)                                    # a peaked policy, like a trained one
    ids = torch.randint(0, 64, (3800,), generator=torch.Generator().manual_seed(1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, policy {a.size} ({pol.num_params():,} parameters)\n")
    print("| job | before (s) | after (s) | speed-up | same numbers |\n|---|---:|---:|---:|---|")
    class Series: pass
    s = Series(); s.ids = ids
    warm = V.VarianceConfig(contexts=2, group=2, batch_sizes=(2,), ref_episodes=8, context_len=16, horizon=4)
    V.variance_study(pol, ids[:2700], Tok(), warm, progress=False)           # first-call costs (vmap) out of the timings
    with before(): V.variance_study(pol, ids[:2700], Tok(), warm, progress=False)
    n = 84 if a.quick else 334
    cfg = EvalConfig(horizon=32, context_len=128, n_paths=100, temperature=1.0, top_k=0)
    orig = np.arange(3400, 3400 + n)
    run = lambda: policy_paths(pol, Tok(), s, orig, cfg)
    t_old, t_new, ok = compare(run, run, a.repeats, paths_diff)
    print(f"| policy_paths, {n} origins x 100 paths x 32 tokens | {t_old:.1f} | {t_new:.1f} | {t_old / t_new:.1f}x | {ok} |", flush=True)
    vc = V.VarianceConfig(contexts=16, group=4, batch_sizes=(4, 8), ref_episodes=512) if a.quick else \
         V.VarianceConfig(contexts=64, group=4, batch_sizes=(4, 8, 16, 32), ref_episodes=2048)
    run = lambda: V.variance_study(pol, ids[:2700], Tok(), vc, progress=False)
    t_old, t_new, ok = compare(run, run, a.repeats, table_diff)
    print(f"| variance_study, K={vc.contexts}, G={vc.group}, {vc.ref_episodes} reference episodes, {len(vc.rewards)} rewards | "
          f"{t_old:.1f} | {t_new:.1f} | {t_old / t_new:.1f}x | {ok} |")

if __name__ == "__main__":
    main()
