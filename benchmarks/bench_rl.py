"""Stage 3 speed against its FLOP floor: one command prints the machine's matmul peak, the floor and `rl_step` split into
its parts, for the default policy and larger ones, at several batch sizes.

The floor is the exact-REINFORCE cost: one teacher-forced forward + backward over B·(C+H) tokens,
6·N·B·T matmul FLOPs (N: the parameters of the matmuls, i.e. all but the token embedding) plus causal attention
(QKᵀ and AV over the lower triangle, forward + backward: 6·L·B·T²·C), at the measured matmul peak. Sampling, the
reward, the optimizer and the starting policy's pass (the KL) come on top of it.

    python benchmarks/bench_rl.py                         # 2x32 (29k), the default 4x64 (0.2M) and 4x128 (0.8M), B = 64 and 256
    python benchmarks/bench_rl.py --size 8x256x8 --batch 64 --threads 2 --repeats 3
    python benchmarks/bench_rl.py --procs 2                # also: the same step as 2 gloo processes (torchrun's layout), threads split
    PYTHONPATH=<old checkout> python benchmarks/bench_rl.py   # an older btc_rl: totals only (no split)

Columns: `step` is `rl_step` with the defaults (KL to the starting policy measured every step), `step, no KL pass` the
same step when the KL pass is skipped (kl_coef = 0 and the step is not a `kl_every` step: exact REINFORCE), `% floor`
= floor / time. The split is of the median `step` run (with an even number of repeats, the upper middle one); `other`
is what the named parts leave (window draws, advantages, metrics). `default step` is what a step costs on average with
the default `kl_every` (the KL pass on one step in `kl_every` when kl_coef = 0): (step + (kl_every - 1) * no-KL step)
/ kl_every. `plain forward + backward` is the floor's work done the plain way: the policy's cross-entropy over B
random sequences of C + H tokens, forward and backward, in one pass, outside `rl_step`. It shows how close this
machine's kernels come to the floor before anything of RL is added (at large batches `rl_step`'s two shorter passes
can beat it: smaller temporaries). Times are medians over the repeats.

The last table (`--no-ops` leaves it out) is one no-KL step under torch.profiler, split by kernel: matmuls (with the
FLOP/s they reach: the profiler counts their FLOPs), attention kernels (forward and backward), the other ATen ops
(elementwise, norms, copies, sampling's draws) and what runs outside ATen ops (Python, the autograd engine). The
profiler slows a step of many small ops, so its seconds are larger than the step's; the shares are what to read.
"""
import argparse, contextlib, inspect, os, socket, statistics, tempfile, time
import torch
import torch.multiprocessing as mp
import btc_rl.reinforce as rf
from btc_rl.model import GPT, GPTConfig
from btc_rl.reinforce import EpisodeSource, RLConfig, rl_step

def matmul_peak(repeats: int = 3) -> float:
    "The best float32 matmul FLOP/s over a few square sizes."
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(repeats):
            t = time.perf_counter(); a @ b; best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best

def floor_flops(pol: GPT, B: int, T: int) -> float:
    c = pol.config
    N = pol.num_params() - pol.wte.weight.numel()
    return 6 * N * B * T + 6 * c.n_layer * B * T * T * c.n_embd

class Timers:
    "Wall time per part, from wrappers around the functions `rl_step` calls."
    def __init__(self): self.t = {}
    def wrap(self, part, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try: return fn(*a, **kw)
            finally: self.t[part] = self.t.get(part, 0.0) + time.perf_counter() - t0
        return timed

@contextlib.contextmanager
def instrumented(pol, ref, opt, timers):
    "Time sampling / reward / teacher-forced pass / backward / optimizer / KL inside `rl_step` (newer btc_rl only)."
    saved = [(rf, "compute_reward", rf.compute_reward), (rf, "group_baseline", rf.group_baseline),
             (torch.Tensor, "backward", torch.Tensor.backward), (torch.nn.utils, "clip_grad_norm_", torch.nn.utils.clip_grad_norm_)]
    rf.compute_reward = timers.wrap("reward", rf.compute_reward); rf.group_baseline = timers.wrap("reward", rf.group_baseline)
    torch.Tensor.backward = timers.wrap("backward", torch.Tensor.backward)
    torch.nn.utils.clip_grad_norm_ = timers.wrap("optimizer", torch.nn.utils.clip_grad_norm_)
    opt.step = timers.wrap("optimizer", opt.step)
    pol.sample = timers.wrap("sampling", pol.sample)
    pol.prefill = timers.wrap("teacher-forced pass", pol.prefill); pol.continue_logits = timers.wrap("teacher-forced pass", pol.continue_logits)
    ref.prefill = timers.wrap("KL (starting policy's pass)", ref.prefill)
    ref.continue_logits = timers.wrap("KL (starting policy's pass)", ref.continue_logits)
    try: yield
    finally:
        for obj, name, fn in saved: setattr(obj, name, fn)
        for m in (pol, ref, opt):
            for name in ("sample", "prefill", "continue_logits", "step"): m.__dict__.pop(name, None)

def models(size: str) -> tuple[GPT, GPT, torch.optim.Optimizer]:
    "A seeded random policy of LAYERSxWIDTHxHEADS, its frozen starting copy and an AdamW."
    L, C, H = (int(x) for x in size.split("x"))
    torch.manual_seed(0)
    pol = GPT(GPTConfig(n_layer=L, n_embd=C, n_head=H)).eval()
    ref = GPT(GPTConfig(n_layer=L, n_embd=C, n_head=H)).eval().requires_grad_(False)
    return pol, ref, torch.optim.AdamW(pol.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01)

def label(pol: GPT) -> str: c = pol.config; return f"{c.n_layer}x{c.n_embd} ({c.n_head} head{'s' * (c.n_head > 1)})"

def op_split(step) -> dict:
    "One call of `step` under torch.profiler: seconds in matmuls (and their FLOPs), attention, other ATen ops and outside them."
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter(); step(); wall = time.perf_counter() - t0
    out = {"wall": wall, "matmul": 0.0, "flops": 0.0, "attention": 0.0, "other ATen ops": 0.0, "others": {}}
    for e in prof.key_averages():
        if not e.key.startswith("aten::"): continue
        t = e.self_cpu_time_total / 1e6
        if e.key in ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"): out["matmul"] += t; out["flops"] += e.flops
        elif "scaled_dot_product" in e.key: out["attention"] += t
        else: out["other ATen ops"] += t; out["others"][e.key[6:]] = t
    out["outside ATen ops"] = wall - out["matmul"] - out["attention"] - out["other ATen ops"]
    return out

def run(size: str, B: int, ids: EpisodeSource, repeats: int, peak: float, with_ops: bool = True) -> dict:
    pol, ref, opt = models(size)
    fields = RLConfig.__dataclass_fields__
    kw = {"kl_every": 1} if "kl_every" in fields else {}
    cfg = RLConfig(batch_episodes=B, context_len=128, horizon=32, **kw)
    cfg_nokl = RLConfig(batch_episodes=B, context_len=128, horizon=32, **({"kl_every": 10**9} if "kl_every" in fields else {}))
    has_step = "step" in inspect.signature(rl_step).parameters
    split = hasattr(pol, "prefill")
    gen = torch.Generator().manual_seed(0)
    step = lambda c, s=0: rl_step(pol, ref, opt, ids, c, None, gen, s) if has_step else rl_step(pol, ref, opt, ids, c, None, gen)
    step(cfg)                                                                   # warm-up
    times, parts = [], []
    for _ in range(repeats):
        timers = Timers()
        with instrumented(pol, ref, opt, timers) if split else contextlib.nullcontext():
            t0 = time.perf_counter(); step(cfg); times.append(time.perf_counter() - t0)
        parts.append(timers.t)
    nokl = []
    if has_step and "kl_every" in fields:
        for _ in range(repeats):
            t0 = time.perf_counter(); step(cfg_nokl, 1); nokl.append(time.perf_counter() - t0)
    T = cfg.context_len + cfg.horizon
    fl = floor_flops(pol, B, T) / peak
    med = statistics.median(times)
    i = sorted(range(len(times)), key=times.__getitem__)[len(times) // 2]       # the split is of this run (the median one)
    x = torch.randint(0, pol.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(0))
    plain = []
    for _ in range(repeats + 1):                                  # the first is a warm-up; the targets are any tokens (only the cost counts)
        t0 = time.perf_counter(); pol(x, x)[1].backward(); plain.append(time.perf_counter() - t0); pol.zero_grad(set_to_none=True)
    ops = op_split(lambda: step(cfg_nokl, 1)) if with_ops else None
    return {"size": label(pol), "params": pol.num_params(), "B": B, "floor": fl, "step": med,
            "nokl": statistics.median(nokl) if nokl else float("nan"), "parts": parts[i] if split else {}, "split_step": times[i], "ops": ops,
            "plain": statistics.median(plain[1:])}

def _dist_worker(rank: int, procs: int, port: int, size: str, B: int, repeats: int, threads: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(procs))
    torch.set_num_threads(threads)
    from btc_rl.distributed import dist_setup, dist_cleanup
    dist_setup("cpu")
    pol, ref, opt = models(size)
    ids = torch.randint(0, 64, (2700,), generator=torch.Generator().manual_seed(0))
    ids = EpisodeSource.of_tokens(ids, torch.zeros(len(ids), 1))                # the windows rl_step draws from
    gen = torch.Generator().manual_seed(0)
    res = {}
    for name, kl_every, step in (("step", 1, 0), ("nokl", 10**9, 1)):
        cfg = RLConfig(batch_episodes=B, context_len=128, horizon=32, kl_every=kl_every)
        rl_step(pol, ref, opt, ids, cfg, None, gen, step)                      # warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter(); rl_step(pol, ref, opt, ids, cfg, None, gen, step); ts.append(time.perf_counter() - t0)
        res[name] = statistics.median(ts)
    if rank == 0: torch.save(res, out)
    dist_cleanup()

def run_procs(size: str, B: int, procs: int, repeats: int, peak: float) -> dict:
    "The same step as `run`, split over `procs` gloo processes sharing this machine's threads."
    with socket.socket() as so: so.bind(("127.0.0.1", 0)); port = so.getsockname()[1]
    threads = max(1, torch.get_num_threads() // procs)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "times.pt")
        mp.spawn(_dist_worker, args=(procs, port, size, B, repeats, threads, out), nprocs=procs, join=True)
        r = torch.load(out)
    pol = models(size)[0]
    return {"size": f"{label(pol)}, {procs} procs x {threads} thread{'s' * (threads > 1)}", "params": pol.num_params(), "B": B,
            "floor": floor_flops(pol, B, 160) / peak, "step": r["step"], "nokl": r["nokl"], "parts": {}, "ops": None, "plain": None}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", action="append", help="LAYERSxWIDTHxHEADS, repeatable [default: 2x32x2, 4x64x4 and 4x128x4]")
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256], help="batch_episodes [default: 64 256]")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one repeat, B = 64 only")
    ap.add_argument("--procs", type=int, default=0, help="also time each step split over this many (>= 2) gloo processes [default: off]")
    ap.add_argument("--no-ops", action="store_true", help="leave out the profiled split by kernel")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    if a.quick: a.repeats, a.batch = 1, [64]
    if a.procs == 1: ap.error("--procs needs at least 2 processes (1 is the plain row)")
    sizes = a.size or ["2x32x2", "4x64x4", "4x128x4"]
    K = RLConfig().kl_every if "kl_every" in RLConfig.__dataclass_fields__ else 1
    peak = matmul_peak()
    ids = torch.randint(0, 64, (2700,), generator=torch.Generator().manual_seed(0))  # ~ the BTC training period, in tokens
    ids = EpisodeSource.of_tokens(ids, torch.zeros(len(ids), 1))                # the windows rl_step draws from
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, matmul peak {peak / 1e9:.1f} GFLOP/s (float32), "
          f"context 128, horizon 32, reward token_acc, batch-mean baseline\n")
    print(f"| policy | params | B | floor (s) | step (s) | % floor | step, no KL pass (s) | % floor | default step (kl_every={K}) (s) | % floor "
          "| plain forward + backward (s) | % floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for s in sizes:
        for B in a.batch:
            for r in [run(s, B, ids, a.repeats, peak, not a.no_ops)] + ([run_procs(s, B, a.procs, a.repeats, peak)] if a.procs > 1 else []):
                rows.append(r)
                print(f"| {r['size']} | {r['params']:,} | {B} | {r['floor']:.3f} | {r['step']:.3f} | {r['floor'] / r['step']:.0%} | "
                      f"{r['nokl']:.3f} | {r['floor'] / r['nokl']:.0%} | {(r['step'] + (K - 1) * r['nokl']) / K:.3f} | "
                      f"{r['floor'] * K / (r['step'] + (K - 1) * r['nokl']):.0%} | " +
                      (f"{r['plain']:.3f} | {r['floor'] / r['plain']:.0%} |" if r["plain"] else "— | — |"), flush=True)
    names = ["sampling", "reward", "teacher-forced pass", "backward", "optimizer", "KL (starting policy's pass)"]
    if any(r["parts"] for r in rows):
        print("\nWhere a `step` goes (seconds; share of the step):\n")
        print("| policy | B | " + " | ".join(names) + " | other |\n|---|---:|" + "---:|" * (len(names) + 1))
        for r in rows:
            if not r["parts"]: continue
            p, t = r["parts"], r["split_step"]; other = t - sum(p.get(n, 0.0) for n in names)
            cells = [f"{p.get(n, 0.0):.3f} ({p.get(n, 0.0) / t:.0%})" for n in names] + [f"{other:.3f} ({other / t:.0%})"]
            print(f"| {r['size']} | {r['B']} | " + " | ".join(cells) + " |")
    if any(r["ops"] for r in rows):
        print(f"\nOne step without the KL pass, by kernel (profiled; seconds, share of the profiled step; matmul peak {peak / 1e9:.0f} GFLOP/s):\n")
        print("| policy | B | profiled step (s) | matmuls | matmul GFLOP/s (% of peak) | attention | other ATen ops | outside ATen ops | largest other ops (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            o = r["ops"]
            if not o: continue
            cell = lambda k: f"{o[k]:.3f} ({o[k] / o['wall']:.0%})"
            rate = o["flops"] / max(o["matmul"], 1e-9)
            top = ", ".join(f"{k} {t:.3f}" for k, t in sorted(o["others"].items(), key=lambda kv: -kv[1])[:4])
            print(f"| {r['size']} | {r['B']} | {o['wall']:.3f} | {cell('matmul')} | {rate / 1e9:.0f} ({rate / peak:.0%}) | {cell('attention')} | "
                  f"{cell('other ATen ops')} | {cell('outside ATen ops')} | {top} |")

if __name__ == "__main__":
    main()
