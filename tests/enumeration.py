"""Test helpers (not part of the library): a tiny policy whose every future can be enumerated, Monte Carlo averages of
`rl_step`'s updates to compare with the exact expectations of `btc_rl.reinforce.expected_surrogate`, and an
independent computation of the KL term."""
from __future__ import annotations
import copy, itertools, math
import torch
from btc_rl.model import GPT, GPTConfig
from btc_rl.reinforce import EpisodeSource, RLConfig, rl_step, sampling_logprobs

class UnitTok:
    "Stand-in tokenizer: token k decodes to a return of k - 1 (one day per token)."
    codewords = (torch.arange(3.0) - 1)[:, None]
    def decode(self, ids): return ids.float() - 1

def tiny_policy(seed: int = 3, vocab: int = 3) -> GPT:
    "A one-layer GPT over `vocab` tokens, far from uniform (weights x40)."
    torch.manual_seed(seed)
    pol = GPT(GPTConfig(vocab_size=vocab, block_size=8, n_layer=1, n_head=1, n_embd=4))
    with torch.no_grad():
        for p in pol.parameters(): p.mul_(40)
    return pol

def expected_rewards(p: torch.Tensor, pi: torch.Tensor, values: torch.Tensor) -> dict:
    "Exact one-position expected token_acc and return_mse of policy `pi` when tokens follow `p` (values: decoded returns)."
    acc = float((p * pi).sum())
    mse = float((pi * values**2).sum() - 2 * (pi * values).sum() * (p * values).sum() + (p * values**2).sum())
    return {"token_acc": acc, "return_mse": -mse}

def flat(policy) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in policy.parameters()])

def mc_updates(policy: GPT, ref: GPT, context: torch.Tensor, target: torch.Tensor, realized: torch.Tensor,
               calls: int, seed: int = 0, **cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of `calls` updates of `rl_step` (plain SGD at lr 1, no clipping) from the same weights,
    on a source holding exactly one window: the update of a step is then its gradient estimate g-hat."""
    ids = torch.cat([context.flatten(), target.flatten()])
    rets = torch.cat([torch.zeros(context.shape[1]), realized.flatten()])[:, None]
    src = EpisodeSource.of_tokens(ids, rets)
    c = RLConfig(context_len=context.shape[1], horizon=target.shape[1], grad_clip=1e9, **cfg).validate()
    start, gen, ups = copy.deepcopy(policy.state_dict()), torch.Generator().manual_seed(seed), []
    for i in range(calls):
        before = flat(policy)
        rl_step(policy, ref, torch.optim.SGD(policy.parameters(), lr=1.0), src, c, UnitTok(), gen, step=i)
        ups.append(flat(policy) - before)
        policy.load_state_dict(start)
    u = torch.stack(ups)
    return u.mean(0), u.std(0) / math.sqrt(calls)

def kl_direct(policy: GPT, ref: GPT, context: torch.Tensor, horizon: int, temperature: float = 1.0,
              top_k: int | None = None) -> torch.Tensor:
    """sum over prefixes of P(prefix) (held fixed) x KL(pi(.|c, prefix) || pi_0(.|c, prefix)), each position computed by
    its own forward pass over [c, prefix]: what the KL term's gradient estimates, written independently of rl_step."""
    V, total = policy.config.vocab_size, 0.0
    for i in range(horizon):
        for prefix in itertools.product(range(V), repeat=i):
            x = torch.cat([context.flatten(), torch.tensor(prefix, dtype=torch.long)])[None]
            with torch.no_grad():                                               # P(prefix) under the sampling distribution
                prob = 1.0
                for j, tok in enumerate(prefix):
                    lg = policy(x[:, : context.shape[1] + j])[0][0, -1]
                    prob *= float(sampling_logprobs(lg, temperature, top_k).exp()[tok])
                q0 = torch.log_softmax(ref(x)[0][0, -1], -1)
            if prob == 0: continue
            q = torch.log_softmax(policy(x)[0][0, -1], -1)
            total = total + prob * (q.exp() * (q - q0)).sum()
    return total
