"""Stage 3 speed: sampled tokens/s and RL steps/s, batched KV-cache implementation vs the seed's way.

The reference (written here, not in the package) does what a straightforward port of the seed does: one
episode at a time, and for every sampled token a full forward pass over the growing sequence, with the
log-probabilities kept for the loss. Both use the same model, reward (token_acc), baseline (batch mean),
AdamW settings and clipping.

    python benchmarks/bench_rl.py                 # batch 8, 64, 256 at context 128, horizon 32; horizons 16/32/64
    python benchmarks/bench_rl.py --quick         # fewer repeats
"""
import argparse, time
import torch
from btc_rl.model import GPT, GPTConfig, sampling_logprobs
from btc_rl.reinforce import RLConfig, rl_step, advantages
from btc_rl.rewards import token_acc

def seed_style_step(policy, opt, ids, cfg, gen):
    "One RL step the seed's way: per episode, per token, a full forward over the growing sequence."
    span = cfg.context_len + cfg.horizon
    starts = torch.randint(len(ids) - span + 1, (cfg.batch_episodes,), generator=gen)
    logps, rewards = [], []
    for s in starts.tolist():
        seq = ids[s : s + cfg.context_len].clone()[None]
        target = ids[s + cfg.context_len : s + span][None]
        lp = 0.0
        for _ in range(cfg.horizon):
            logits = policy(seq)[0][:, -1]
            logp = sampling_logprobs(logits, cfg.temperature)
            tok = torch.multinomial(logp.detach().exp(), 1, generator=gen)
            lp = lp + logp.gather(-1, tok)[0, 0]
            seq = torch.cat([seq, tok], 1)
        logps.append(lp); rewards.append(token_acc(seq[:, cfg.context_len:], target)[0])
    adv = advantages(torch.stack(rewards), "mean")
    loss = -(adv.detach() * torch.stack(logps)).mean()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0); opt.step()

def timed(fn, repeats):
    fn()                                                                       # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats): fn()
    return (time.perf_counter() - t0) / repeats

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--quick", action="store_true"); args = ap.parse_args()
    torch.manual_seed(0)
    mc = GPTConfig()                                                           # the default policy size
    ids = torch.randint(0, mc.vocab_size, (2700,))                             # ~ the BTC training period, in tokens
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, policy {GPT(mc).num_params():,} parameters\n")
    print("| batch_episodes | ours: sample tok/s | ours: RL step/s | seed-style: RL step/s | speed-up per step |")
    print("|---:|---:|---:|---:|---:|")
    for B in (8, 64, 256):
        cfg = RLConfig(batch_episodes=B, context_len=128, horizon=32)
        pol, ref = GPT(mc).eval(), GPT(mc).eval()
        opt = torch.optim.AdamW(pol.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01)
        gen = torch.Generator().manual_seed(0)
        ctx = ids[:128].repeat(B, 1)
        t_sample = timed(lambda: pol.sample(ctx, 32, generator=gen), 1 if args.quick else 3)
        t_ours = timed(lambda: rl_step(pol, ref, opt, ids, cfg, None, gen), 1 if args.quick else 3)
        t_ref = timed(lambda: seed_style_step(pol, opt, ids, cfg, gen), 1)
        print(f"| {B} | {B * 32 / t_sample:,.0f} | {1 / t_ours:.2f} | {1 / t_ref:.3f} | {t_ref / t_ours:.0f}x |")
    print("\nSampling time vs horizon (batch 64, context 128, KV cache):\n")
    print("| horizon | seconds | seconds / horizon |\n|---:|---:|---:|")
    pol = GPT(mc).eval(); ctx = ids[:128].repeat(64, 1); gen = torch.Generator().manual_seed(0)
    for H in (16, 32, 64):
        t = timed(lambda: pol.sample(ctx, H, generator=gen), 1 if args.quick else 3)
        print(f"| {H} | {t:.3f} | {t / H * 1000:.2f} ms |")

if __name__ == "__main__":
    main()
