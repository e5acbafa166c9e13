"""The shared policy-gradient pieces (metarl.algos.pg): log-probability and KL against
torch.distributions, the batched MLP against a loop over tasks, rollouts (first-episode mask, the
action map), the linear baseline against numpy's least squares, per-task advantages against one
task at a time, conjugate gradient against a direct solve, and a TRPO step on a toy problem."""
import doctest

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from metarl.algos import pg


# ----------------------------------------------------------------------------- Gaussian policies
# shapes: one sample of one action dim, an odd batch, two batch dims
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (2, 5, 2)])
def test_log_prob_and_kl_match_torch_distributions(shape):
    g = torch.Generator().manual_seed(len(shape))
    m0, m1, a = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    s0, s1 = (0.5 * torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    ref_lp = Normal(m0, s0.exp()).log_prob(a).sum(-1)
    torch.testing.assert_close(pg.gaussian_log_prob(m0, s0, a), ref_lp, rtol=1e-12, atol=1e-12)
    ref_kl = kl_divergence(Normal(m0, s0.exp()), Normal(m1, s1.exp())).sum(-1)
    torch.testing.assert_close(pg.gaussian_kl(m0, s0, m1, s1), ref_kl, rtol=1e-12, atol=1e-12)
    assert float(pg.gaussian_kl(m0, s0, m0, s0).abs().max()) == 0.0


def _mlp_single(params, x):
    """Plain unbatched tanh MLP (the loop reference): x [M, in]."""
    n = sum(1 for k in params if k.startswith("w"))
    h = x
    for i in range(n):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < n - 1:
            h = torch.tanh(h)
    return h


# B: 1 (degenerate batch), 3 and 5 (odd); M: points per task, odd
@pytest.mark.parametrize("b,m", [(1, 1), (3, 7), (5, 10)])
def test_batched_mlp_equals_loop(b, m):
    g = torch.Generator().manual_seed(b)
    per_task = [pg.init_mlp((3, 5, 7, 2), g) for _ in range(b)]
    batched = {k: torch.stack([p[k] for p in per_task]) for k in per_task[0]}
    x = torch.randn(b, m, 3, generator=g)
    out = pg.mlp_forward(batched, x)
    for i in range(b):
        torch.testing.assert_close(out[i], _mlp_single(per_task[i], x[i]), atol=1e-6, rtol=1e-5)
    stacked = pg.stack(per_task[0], 4)
    assert all(v.shape == (4, *per_task[0][k].shape) for k, v in stacked.items())
    stacked["w0"][0] += 1.0                                          # copies, not views of one tensor
    assert not torch.equal(stacked["w0"][0], stacked["w0"][1])


def test_functional_policy_batched_equals_a_loop_over_tasks():
    pol = pg.GaussianMLPPolicy(2, 2, (16, 16))
    apply = pg.FunctionalPolicy(pol)
    stacked = {k: v.detach() + 0.1 * torch.randn((3,) + v.shape) for k, v in pol.named_parameters()}
    obs = torch.randn(3, 5, 2)
    mean, log_std = apply.batched(stacked, obs)
    act = apply.acting(stacked, k=5)(obs.reshape(15, 2), None)
    for i in range(3):
        m_i, s_i = apply({k: v[i] for k, v in stacked.items()}, obs[i])
        torch.testing.assert_close(mean[i], m_i)
        torch.testing.assert_close(log_std[i], s_i)
        torch.testing.assert_close(act[0][5 * i:5 * i + 5], m_i)


def test_docstring_examples():
    result = doctest.testmod(pg, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- rollouts
def _batch(b=3, k=3, steps=20, seed=0, env_id="Navigation2D-v0", horizon=None):
    env = pg.make_box_env(env_id, b * k, seed, max_episode_steps=horizon)
    g = torch.Generator().manual_seed(seed)
    pol = pg.GaussianMLPPolicy(env.obs_dim, 2, (8,))
    tasks = env.sample_tasks(b, generator=g)
    batch = pg.collect(env, pg.FunctionalPolicy(pol).acting(dict(pol.named_parameters())), steps, g,
                       tasks=tasks[torch.arange(b * k) // k])
    return env, tasks, batch


def test_collect_masks_all_but_each_envs_first_episode():
    """Episodes of 4 steps in 10: the mask keeps steps 0-3, rewards are 0 after them, episode starts
    are marked at 0, 4, 8, and next_obs is the observation after the action (the final one at an end)."""
    env, _, batch = _batch(steps=10, horizon=4)
    assert batch.obs.shape == (10, 9, env.obs_dim) and batch.actions.shape == (10, 9, 2)
    assert torch.equal(batch.mask, (torch.arange(10) < 4).float()[:, None].expand(10, 9))
    assert float(batch.rewards[4:].abs().max()) == 0.0 and float(batch.rewards[:4].abs().min()) > 0
    assert batch.episode_start.nonzero()[:, 0].unique().tolist() == [0, 4, 8]
    torch.testing.assert_close(batch.next_obs[:3], batch.obs[1:4])
    torch.testing.assert_close(batch.episode_returns(), batch.rewards.sum(0))


def test_collect_maps_actions_onto_the_box_and_keeps_the_policys_own():
    """With ``action_map`` the env moves by clip(0.1 · a) on Navigation2D-v0 while the batch keeps a."""
    env = pg.make_box_env("Navigation2D-v0", 4, 0)
    scale, offset = pg.action_map(env, True)
    torch.testing.assert_close(scale, torch.full((2,), 0.1))
    torch.testing.assert_close(offset, torch.zeros(2))
    assert pg.action_map(env, False) is None

    def act(obs, _start):
        return torch.zeros_like(obs), torch.zeros_like(obs)          # std 1: actions beyond the ±0.1 box
    batch = pg.collect(env, act, 5, torch.Generator().manual_seed(0), action_affine=(scale, offset))
    torch.testing.assert_close(batch.next_obs - batch.obs, (0.1 * batch.actions).clamp(-0.1, 0.1))
    assert batch.actions.abs().max() > 0.1
    with pytest.raises(ValueError, match="Box"):
        pg.make_box_env("CartPole-v1", 2, 0)


def test_dense_rewards_are_the_masked_distance_to_the_goal():
    _, tasks, batch = _batch(b=2, k=2, steps=12, horizon=5, env_id="SemicircleGoal-v0")
    goals = tasks.goal[torch.arange(4) // 2]
    dense = pg.dense_rewards(batch, goals)
    torch.testing.assert_close(dense.rewards, -(batch.next_obs - goals).norm(dim=-1) * batch.mask)
    assert dense.obs is batch.obs and float(dense.rewards[5:].abs().max()) == 0.0


def test_returns_to_go_are_the_discounted_sums_of_the_first_episode():
    _, _, batch = _batch(steps=9, horizon=6)
    gamma = 0.9
    ret = pg.returns_to_go(batch, gamma)
    for t in range(9):
        disc = gamma ** torch.arange(9 - t, dtype=torch.float32)
        torch.testing.assert_close(ret[t], (disc[:, None] * batch.rewards[t:]).sum(0), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the linear baseline
def test_linear_baseline_fit_equals_numpy_lstsq():
    g = torch.Generator().manual_seed(0)
    b, m = 3, 37
    obs = torch.randn(b, m, 2, generator=g, dtype=torch.float64)
    t = torch.randint(0, 50, (b, m), generator=g)
    ret = torch.randn(b, m, generator=g, dtype=torch.float64)
    mask = torch.ones(b, m, dtype=torch.float64)
    mask[1, 30:] = 0                                  # ignored samples (after an episode ended)
    feats = pg.baseline_features(obs, t)
    assert feats.shape == (b, m, 2 * 2 + 4)
    w = pg.fit_linear_baseline(feats, ret, mask, reg_coeff=0.0)
    for i in range(b):
        keep = mask[i].bool().numpy()
        ref = np.linalg.lstsq(feats[i].numpy()[keep], ret[i].numpy()[keep], rcond=None)[0]
        np.testing.assert_allclose(w[i].numpy(), ref, rtol=1e-7, atol=1e-9)
    # the ridge: r·I added to XᵀX, r = reg_coeff (rllab's) or reg_coeff × the mean diagonal of XᵀX
    for relative in (False, True):
        w_ridge = pg.fit_linear_baseline(feats, ret, mask, reg_coeff=1e-3, relative=relative)
        for i in range(b):
            x = feats[i].numpy() * mask[i].numpy()[:, None]
            xtx = x.T @ x
            r = 1e-3 * (np.diag(xtx).mean() if relative else 1.0)
            ref = np.linalg.solve(xtx + r * np.eye(len(xtx)), x.T @ (ret[i].numpy() * mask[i].numpy()))
            np.testing.assert_allclose(w_ridge[i].numpy(), ref, rtol=1e-8, atol=1e-10)


def test_a_task_without_samples_gets_a_zero_baseline():
    """A task whose every sample is masked (X = 0): the relative ridge is 1e-8·reg, the system stays
    solvable and the coefficients are 0; the other tasks keep their own fit."""
    g = torch.Generator().manual_seed(1)
    feats = pg.baseline_features(torch.randn(2, 9, 2, generator=g), torch.arange(9).expand(2, 9))
    ret = torch.randn(2, 9, generator=g)
    mask = torch.ones(2, 9)
    mask[0] = 0
    for relative in (False, True):
        w = pg.fit_linear_baseline(feats, ret, mask, relative=relative)
        assert torch.isfinite(w).all() and float(w[0].abs().max()) == 0.0
        torch.testing.assert_close(w[1], pg.fit_linear_baseline(feats[1:], ret[1:], mask[1:], relative=relative)[0])


def test_advantages_are_per_task_and_normalised():
    """Each task's advantages depend on its own trajectories only (B = 3, K = 3): equal to the
    advantages of that task alone; normalised to mean 0, std 1 over its valid steps."""
    b, k = 3, 3
    _, _, batch = _batch(b, k, steps=20)
    adv = pg.task_advantages(batch, b, 0.99)
    assert adv.shape == batch.rewards.shape
    for i in range(b):
        sl = slice(i * k, (i + 1) * k)
        sub = pg.Batch(*(getattr(batch, f)[:, sl] for f in ("obs", "actions", "rewards", "mask", "episode_start",
                                                            "next_obs")))
        torch.testing.assert_close(adv[:, sl], pg.task_advantages(sub, 1, 0.99), atol=1e-4, rtol=1e-4)
        valid = adv[:, sl][batch.mask[:, sl] > 0]
        assert abs(float(valid.mean())) < 1e-5 and abs(float(valid.std(unbiased=False)) - 1) < 1e-3
    tb = pg.per_task_advantages(batch, b, 0.99, normalize=False)
    assert tb["obs"].shape == (b, k * 20, 2) and tb["adv"].shape == tb["mask"].shape == (b, k * 20)
    torch.testing.assert_close(tb["obs"][1, :20], batch.obs[:, k])   # task 1, trajectory 0: env k
    assert float((tb["adv"] * (1 - tb["mask"])).abs().max()) == 0.0


# ----------------------------------------------------------------------------- TRPO
@pytest.mark.parametrize("n", [1, 7, 13])
def test_conjugate_gradient_solves_an_spd_system(n):
    g = torch.Generator().manual_seed(n)
    r = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = r @ r.T + n * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x = pg.conjugate_gradient(lambda v: a @ v, b, iters=2 * n, residual_tol=1e-24)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), atol=1e-8, rtol=1e-8)


def test_trpo_step_lowers_the_loss_within_the_trust_region():
    """A Gaussian mean μ pulled toward a target: loss ``‖μ − c‖²``, KL to the old N(μ0, 1) =
    ``½‖μ − μ0‖²``. One step lowers the loss and keeps the KL ≤ max_kl (the full natural step is
    exactly on the boundary: no backtracking needed); a trust region too small for any improvement
    leaves the parameters unchanged."""
    c = torch.tensor([3.0, -1.0], dtype=torch.float64)
    mu = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    mu0 = mu.detach().clone()

    def objective():
        return ((mu - c) ** 2).sum(), 0.5 * ((mu - mu0) ** 2).sum()

    stats = pg.trpo_step(objective, [mu], 0.02)
    assert stats["accepted"] == 1 and stats["surrogate_after"] < stats["surrogate_before"]
    assert 0 < stats["kl"] <= 0.02 and abs(stats["kl"] - 0.02) < 1e-6
    direction = (mu.detach() - mu0) / (mu.detach() - mu0).norm()
    torch.testing.assert_close(direction, c / c.norm())              # straight toward the target
    before = mu.detach().clone()
    mu0 = before

    def flat():                                                      # no step lowers a constant loss
        return (mu * 0).sum() + 1.0, 0.5 * ((mu - mu0) ** 2).sum()
    stats = pg.trpo_step(flat, [mu], 0.02)
    assert stats["accepted"] == 0 and torch.equal(mu.detach(), before)


def test_mean_se():
    m, se = pg.mean_se(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and abs(se - (5 / 3) ** 0.5 / 2) < 1e-12           # sample std √(5/3), over √4
    assert pg.mean_se(torch.tensor([3.0]))[1] != pg.mean_se(torch.tensor([3.0]))[1]   # one value: NaN
