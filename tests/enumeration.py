"""Test helpers (not part of the library): exact expectations by enumerating every future of a tiny policy, and
averages of many Monte Carlo REINFORCE estimates to compare them with. The 05 / 06 notebooks define the same
helpers in non-exported cells for their worked examples."""
from __future__ import annotations
import itertools, math
import torch
from btc_rl.rewards import GROUP_REWARDS, compute_reward, group_baseline
from btc_rl.reinforce import sequence_logprobs, surrogate_loss

def expected_rewards(p: torch.Tensor, pi: torch.Tensor, values: torch.Tensor) -> dict:
    "Exact one-position expected token_acc and return_mse of policy `pi` when tokens follow `p` (values: decoded returns)."
    acc = float((p * pi).sum())
    mse = float((pi * values**2).sum() - 2 * (pi * values).sum() * (p * values).sum() + (p * values**2).sum())
    return {"token_acc": acc, "return_mse": -mse}

def _device(policy) -> torch.device: return next(policy.parameters()).device

def _flat_grad(policy) -> torch.Tensor:
    "All parameter gradients as one vector (zeros for parameters without one), on the policy's device."
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), device=p.device) for p in policy.parameters()])

def enumerate_futures(policy, context, horizon, temperature=1.0, top_k=None):
    "Every future of `horizon` tokens (V^H, H) and its probability under the policy, differentiable."
    dev = _device(policy)
    futures = torch.tensor(list(itertools.product(range(policy.config.vocab_size), repeat=horizon)), device=dev)
    lp, _ = sequence_logprobs(policy, context.to(dev).expand(len(futures), -1), futures, temperature, top_k)
    return futures, lp.sum(-1).exp()

def exact_expected_reward(policy, context, target, reward="token_acc", tokenizer=None, temperature=1.0, top_k=None,
                          spread=1.0, crps_mode="cum", pnl_cost=0.001):
    "J: sum_f pi(f) R(f, y), or for crps / energy -(E d(X, y) - spread/2 E d(X, X')) = -CRPS(pi, y) / -ES(pi, y) when spread = 1."
    futures, p = enumerate_futures(policy, context, target.shape[-1], temperature, top_k)
    tgt = target.to(futures.device).expand(len(futures), -1)
    if reward not in GROUP_REWARDS:
        return (p * compute_reward(reward, futures, tgt, tokenizer, crps_mode=crps_mode, pnl_cost=pnl_cost)).sum()
    x, y = tokenizer.decode(futures).float(), tokenizer.decode(tgt).float()
    if reward == "crps" and crps_mode == "cum": x, y = x.sum(-1, keepdim=True), y.sum(-1, keepdim=True)
    if reward == "energy": e, d = (x - y).norm(dim=-1), (x[:, None] - x).norm(dim=-1)
    else: e, d = (x - y).abs().mean(-1), (x[:, None] - x).abs().mean(-1)
    return -(p @ e) + spread / 2 * (p @ d @ p)

def mc_gradient(policy, context, target, baseline, B, estimates, chunks=32, seed=0, reward="token_acc", tokenizer=None,
                group_size=1, proper_baseline=True, crps_mode="cum", pnl_cost=0.001):
    "Mean and standard error of `estimates` REINFORCE estimates (each from B episodes, groups of `group_size`), in vectorized chunks."
    dev = _device(policy)
    gen, per, H = torch.Generator(device=dev).manual_seed(seed), estimates // chunks, target.shape[-1]
    kw = dict(crps_mode=crps_mode, pnl_cost=pnl_cost)
    gs = []
    for _ in range(chunks):
        ctx, tgt = context.to(dev).expand(per * B, -1), target.to(dev).expand(per * B, -1)
        toks, _ = policy.sample(ctx, H, generator=gen)
        R = compute_reward(reward, toks, tgt, tokenizer, group_size, **kw)
        b = group_baseline(reward, toks, tgt, tokenizer, group_size, **kw) if baseline == "group" and proper_baseline else None
        lp, logp = sequence_logprobs(policy, ctx, toks)
        policy.zero_grad(); surrogate_loss(lp, logp, R, tgt, baseline, group_size, b, batch=B).backward()
        gs.append(-_flat_grad(policy))                                          # the loss is minus the surrogate
    g = torch.stack(gs)
    return g.mean(0), g.std(0) / math.sqrt(chunks)
