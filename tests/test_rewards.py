"""Rewards on hand-computed cases, against loop implementations of their definitions, and by exact enumeration."""
import itertools
import pytest
import torch
from btc_rl.rewards import REWARDS, compute_reward, crps, energy, group_baseline, group_score, pnl, return_mse, token_acc
from enumeration import expected_rewards

class Tok:
    "Stand-in tokenizer: token k decodes to P = 2 days of returns (0.01 k, -0.005 k)."
    def decode(self, ids): return torch.stack([0.01 * ids.float(), -0.005 * ids.float()], -1).flatten(-2)

def _loop_credit(x, y, dist):
    "Reference implementation with Python loops: r_i = -d(x_i, y) + sum_{j != i} d(x_i, x_j) / (G - 1)."
    G = len(x)
    return torch.stack([-dist(x[i], y) + sum(dist(x[i], x[j]) for j in range(G) if j != i) / (G - 1) for i in range(G)])

@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randint(0, 16, (12, 3), generator=g), torch.randint(0, 16, (4, 3), generator=g).repeat_interleave(3, 0)
    real = (torch.randn(4, 6, generator=g) * 0.05).repeat_interleave(3, 0)     # realized returns, 2 days per token
    return s, t, real

@pytest.mark.parametrize("realized", [False, True])
def test_crps_and_energy_match_loops(batch, realized):
    s, t, r = batch
    x = Tok().decode(s).view(4, 3, -1)
    y = (r if realized else Tok().decode(t)).view(4, 3, -1)
    kw = dict(realized=r if realized else None)
    want_c = torch.cat([_loop_credit(x[n].sum(-1), y[n, 0].sum(-1), lambda a, b: (a - b).abs()) for n in range(4)])
    want_e = torch.cat([_loop_credit(x[n], y[n, 0], lambda a, b: (a - b).norm()) for n in range(4)])
    want_d = torch.cat([torch.stack([_loop_credit(x[n, :, k], y[n, 0, k], lambda a, b: (a - b).abs())
                                     for k in range(x.shape[-1])]).mean(0) for n in range(4)])
    torch.testing.assert_close(crps(s, t, Tok(), 3, **kw), want_c)
    torch.testing.assert_close(energy(s, t, Tok(), 3, **kw), want_e)
    torch.testing.assert_close(crps(s, t, Tok(), 3, daily=True, **kw), want_d)

def test_rewards_score_the_realized_returns_not_the_codewords():
    "Hand-computed: one token per day (P = 1 with this stand-in), target token 2 decodes to 0.02 but 0.025 happened."
    class T1:
        def decode(self, ids): return 0.01 * ids.float()
    s, t, r = torch.tensor([[0], [1], [4], [2]]), torch.full((4, 1), 2), torch.full((4, 1), 0.025)
    x = torch.tensor([0.0, 0.01, 0.04, 0.02])
    torch.testing.assert_close(return_mse(s, t, T1(), r), -(x - 0.025) ** 2)
    torch.testing.assert_close(pnl(s, t, T1(), 0.001, r), torch.tensor([0.0, 0.023, 0.023, 0.023]))
    fair = (x - 0.025).abs().mean() - (x[:, None] - x).abs().sum() / (2 * 4 * 3)
    torch.testing.assert_close(group_score("crps", s, t, T1(), 4, realized=r), -fair[None])
    assert not torch.allclose(group_score("crps", s, t, T1(), 4), -fair[None])   # the codeword 0.02 is another target
    with pytest.raises(ValueError, match="realized returns must match"): return_mse(s, t, T1(), r[:, :0])

@pytest.mark.parametrize("name,mode", [("crps", "cum"), ("crps", "daily"), ("energy", "cum"), ("return_mse", "cum"),
                                       ("pnl", "cum")])
def test_group_baseline_ignores_the_own_sample(batch, name, mode):
    s, t, r = batch
    b = group_baseline(name, s, t, Tok(), 3, crps_mode=mode, realized=r)
    s2 = s.clone(); s2[::3] = (s2[::3] + 5) % 16                                # change the first member of every group
    b2 = group_baseline(name, s2, t, Tok(), 3, crps_mode=mode, realized=r)
    torch.testing.assert_close(b2[::3], b[::3])
    if name != "pnl": assert not torch.allclose(b2[1::3], b[1::3])              # pnl: the same sign, the same reward

def test_group_baseline_is_the_mean_credit_without_the_member(batch):
    s, t, r = batch
    b = group_baseline("crps", s, t, Tok(), 3, realized=r)
    for i in range(3):                                                         # the group without member i, scored with G = 2
        keep = [j for j in range(3) if j != i]
        sub, tsub = s.view(4, 3, -1)[:, keep].reshape(8, -1), t.view(4, 3, -1)[:, keep].reshape(8, -1)
        rsub = r.view(4, 3, -1)[:, keep].reshape(8, -1)
        torch.testing.assert_close(b.view(4, 3)[:, i], crps(sub, tsub, Tok(), 2, realized=rsub).view(4, 2).mean(-1))

def test_group_score_is_unbiased_for_crps():
    "Over every group of G = 2 futures drawn from a 3-point distribution, E[-fair CRPS] = -CRPS(pi, y) exactly."
    v, pi, y = torch.tensor([0, 1, 4]), torch.tensor([0.2, 0.5, 0.3]), 0.013
    xs = 0.01 * v.float() * 0.5                                               # Tok: the cumulative return of token k is 0.005 k
    exact = -(pi @ (xs - y).abs() - 0.5 * pi @ (xs[:, None] - xs).abs() @ pi)
    groups = torch.tensor(list(itertools.product(range(3), repeat=2)))
    s, p = v[groups].reshape(-1, 1), pi[groups].prod(-1)
    sc = group_score("crps", s, torch.zeros_like(s), Tok(), 2, realized=torch.tensor([[y, 0.0]]).expand(len(s), 2))
    torch.testing.assert_close(p @ sc, exact)

def test_hand_computed_values():
    s, t = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]]), torch.tensor([[1, 2, 0, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(token_acc(s, t), torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(return_mse(torch.tensor([[3]]), torch.tensor([[1]]), Tok()),
                               torch.tensor([-(0.02**2 + 0.01**2) / 2]))      # 2 days: (0.03 - 0.01, -0.015 + 0.005)
    torch.testing.assert_close(pnl(torch.tensor([[3], [0]]), torch.tensor([[2], [2]]), Tok(), cost=0.001),
                               torch.tensor([0.01 - 0.002, 0.0]))             # flat when the sampled path is flat
    for name in ("token_acc", "return_mse", "pnl"):                           # per-episode rewards ignore the grouping
        torch.testing.assert_close(compute_reward(name, s, t, Tok(), 2), compute_reward(name, s, t, Tok(), 1))
    assert set(REWARDS) == {"token_acc", "return_mse", "crps", "energy", "pnl"}

def test_errors(batch):
    s, t, _ = batch
    with pytest.raises(ValueError, match="needs group_size >= 2"): compute_reward("crps", s, t, Tok(), 1)
    with pytest.raises(ValueError, match="not a multiple of group_size=5"): compute_reward("energy", s, t, Tok(), 5)
    with pytest.raises(ValueError, match="crps_mode"): compute_reward("crps", s, t, Tok(), 3, crps_mode="weekly")
    with pytest.raises(ValueError, match="unknown reward"): compute_reward("sharpe", s, t, Tok())

def test_point_rewards_prefer_collapse_the_group_score_prefers_calibration():
    """Truth ~ p over 5 atoms. The expected group_score of a policy (every group of G = 2 of its futures, every truth,
    enumerated) is highest for the calibrated policy; token_acc's expectation is highest for the collapsed one."""
    v = torch.tensor([-2, -1, 0, 1, 2])
    p = torch.tensor([0.1, 0.2, 0.4, 0.2, 0.1])
    mode = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    class T1:
        def decode(self, ids): return 0.01 * (ids.float() - 2)
    def expected_score(pi):
        groups = torch.tensor(list(itertools.product(range(5), repeat=2)))
        s, w = groups.reshape(-1, 1), pi[groups].prod(-1)
        total = 0.0
        for y in range(5):
            sc = group_score("crps", s, torch.full_like(s, y), T1(), 2)
            total += float(p[y] * (w @ sc))
        return total
    assert expected_score(p) > expected_score(mode)
    assert expected_rewards(p, mode, v.float())["token_acc"] > expected_rewards(p, p, v.float())["token_acc"]
