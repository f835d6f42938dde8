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
    return torch.randint(0, 16, (12, 3), generator=g), torch.randint(0, 16, (4, 3), generator=g).repeat_interleave(3, 0)

def test_crps_and_energy_match_loops(batch):
    s, t = batch
    x, y = Tok().decode(s).view(4, 3, -1), Tok().decode(t).view(4, 3, -1)
    want_c = torch.cat([_loop_credit(x[n].sum(-1), y[n, 0].sum(-1), lambda a, b: (a - b).abs()) for n in range(4)])
    want_e = torch.cat([_loop_credit(x[n], y[n, 0], lambda a, b: (a - b).norm()) for n in range(4)])
    want_d = torch.cat([torch.stack([_loop_credit(x[n, :, k], y[n, 0, k], lambda a, b: (a - b).abs()) for k in range(x.shape[-1])]).mean(0)
                        for n in range(4)])
    torch.testing.assert_close(crps(s, t, Tok(), 3), want_c)
    torch.testing.assert_close(energy(s, t, Tok(), 3), want_e)
    torch.testing.assert_close(crps(s, t, Tok(), 3, daily=True), want_d)

@pytest.mark.parametrize("name,mode", [("crps", "cum"), ("crps", "daily"), ("energy", "cum"), ("return_mse", "cum"), ("pnl", "cum")])
def test_group_baseline_ignores_the_own_sample(batch, name, mode):
    s, t = batch
    b = group_baseline(name, s, t, Tok(), 3, crps_mode=mode)
    s2 = s.clone(); s2[::3] = (s2[::3] + 5) % 16                                # change the first member of every group
    torch.testing.assert_close(group_baseline(name, s2, t, Tok(), 3, crps_mode=mode)[::3], b[::3])
    if name != "pnl": assert not torch.allclose(group_baseline(name, s2, t, Tok(), 3, crps_mode=mode)[1::3], b[1::3])  # pnl: same sign

def test_group_baseline_is_the_mean_credit_without_the_member(batch):
    s, t = batch
    b = group_baseline("crps", s, t, Tok(), 3)
    for i in range(3):                                                         # the group without member i, scored with G = 2
        keep = [j for j in range(3) if j != i]
        sub = s.view(4, 3, -1)[:, keep].reshape(8, -1); tsub = t.view(4, 3, -1)[:, keep].reshape(8, -1)
        torch.testing.assert_close(b.view(4, 3)[:, i], crps(sub, tsub, Tok(), 2).view(4, 2).mean(-1))

def test_group_score_is_unbiased_for_crps():
    "Over every group of G = 2 futures drawn from a 3-point distribution, E[-fair CRPS] = -CRPS(pi, y) exactly."
    v, pi, y = torch.tensor([0, 1, 4]), torch.tensor([0.2, 0.5, 0.3]), 2
    xs = 0.01 * v.float() * 0.5                                               # Tok: the cumulative return of token k is 0.005 k
    exact = -(pi @ (xs - 0.005 * y).abs() - 0.5 * pi @ (xs[:, None] - xs).abs() @ pi)
    groups = torch.tensor(list(itertools.product(range(3), repeat=2)))
    s, p = v[groups].reshape(-1, 1), pi[groups].prod(-1)
    sc = group_score("crps", s, torch.full_like(s, y), Tok(), 2)
    torch.testing.assert_close(p @ sc, exact)

def test_per_episode_rewards_ignore_groups_and_pnl_is_sign_times_return(batch):
    s, t = batch
    for name in ("token_acc", "return_mse", "pnl"):
        torch.testing.assert_close(compute_reward(name, s, t, Tok(), 3), compute_reward(name, s, t, Tok(), 1))
    torch.testing.assert_close(token_acc(s, t), (s == t).float().mean(-1))
    torch.testing.assert_close(return_mse(s, t, Tok()), -(Tok().decode(s) - Tok().decode(t)).pow(2).mean(-1))
    r = pnl(torch.tensor([[3], [0]]), torch.tensor([[2], [2]]), Tok(), cost=0.001)
    torch.testing.assert_close(r, torch.tensor([0.005 * 2 - 0.002, 0.0]))     # flat when the sampled path is flat
    assert set(REWARDS) == {"token_acc", "return_mse", "crps", "energy", "pnl"}

def test_errors(batch):
    s, t = batch
    with pytest.raises(ValueError, match="needs group_size >= 2"): compute_reward("crps", s, t, Tok(), 1)
    with pytest.raises(ValueError, match="not a multiple of group_size=5"): compute_reward("energy", s, t, Tok(), 5)
    with pytest.raises(ValueError, match="crps_mode"): compute_reward("crps", s, t, Tok(), 3, crps_mode="weekly")
    with pytest.raises(ValueError, match="unknown reward"): compute_reward("sharpe", s, t, Tok())

def test_point_rewards_prefer_collapse_crps_prefers_calibration():
    v = torch.linspace(-0.15, 0.15, 64)
    p = (1 + (v / 0.03) ** 2 / 3) ** -2; p /= p.sum()
    mode = torch.zeros(64); mode[p.argmax()] = 1
    assert expected_rewards(p, mode, v)["token_acc"] > expected_rewards(p, p, v)["token_acc"]
    crps_ = lambda pi: float(pi @ (v[:, None] - v).abs() @ p - 0.5 * pi @ (v[:, None] - v).abs() @ pi)
    assert crps_(p) < crps_(mode)
