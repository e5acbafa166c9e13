"""The inner-loss estimators of MAML-style learners (metarl.algos.pg: "maml", "lvc", "dice") and
``MAMLConfig(estimator=...)``: DiCE's weights against a Python-loop oracle, the derivatives of each loss at the
sampling point against the likelihood-ratio formulae (float64, exact), and what the option changes in MAML."""
import math

import pytest
import torch
from torch.func import functional_call, hessian, jacrev

from metarl.algos import maml as M
from metarl.algos import pg
from metarl.algos.pg import Batch, FunctionalPolicy, GaussianMLPPolicy, gaussian_log_prob


def _batch(k=3, t=6, b=2, seed=0, dtype=torch.float64):
    """``b`` tasks × ``k`` trajectories of ``t`` steps; trajectory 0 of task 0 ends after 4 steps."""
    g = torch.Generator().manual_seed(seed)
    n = b * k
    obs = torch.randn(t, n, 2, generator=g, dtype=dtype)
    act = torch.randn(t, n, 2, generator=g, dtype=dtype)
    rew = torch.randn(t, n, generator=g, dtype=dtype)
    mask = torch.ones(t, n, dtype=dtype)
    mask[4:, 0] = 0
    rew = rew * mask
    start = torch.zeros(t, n, dtype=torch.bool)
    start[0] = True
    return Batch(obs, act, rew, mask, start, obs)


@pytest.mark.parametrize("normalize", [False, True])
def test_dice_weights_equal_a_python_loop_oracle(normalize):
    gamma, b, k, t = 0.9, 2, 3, 6
    batch = _batch(k, t, b)
    w = pg.per_task_dice_weights(batch, b, gamma, 1e-5, normalize=normalize)
    assert w["reward_w"].shape == w["baseline_w"].shape == (b, k, t) and w["obs"].shape == (b, k * t, 2)
    # A' from the weights: Σ_{t' >= t} reward_w - baseline_w
    adv = torch.flip(torch.cumsum(torch.flip(w["reward_w"], (-1,)), -1), (-1,)) - w["baseline_w"]
    mask = w["mask"].view(b, k, t)
    for i in range(b):
        # oracle: G_t = Σ_{t' >= t} γ^t' r_t' per trajectory, fitted by least squares on rllab's features
        g_rows, f_rows, m_rows = [], [], []
        for j in range(k):
            e = i * k + j
            for s in range(t):
                g_rows.append(sum(gamma ** u * float(batch.rewards[u, e]) for u in range(s, t)))
                f_rows.append(pg.baseline_features(batch.obs[s, e], torch.tensor(s)))
                m_rows.append(float(batch.mask[s, e]))
        g_ = torch.tensor(g_rows, dtype=torch.float64)
        f_ = torch.stack(f_rows)
        m_ = torch.tensor(m_rows, dtype=torch.float64)
        x = f_ * m_[:, None]
        coef = torch.linalg.solve(x.T @ x + 1e-5 * torch.eye(x.shape[1], dtype=torch.float64), x.T @ (g_ * m_))
        a = (g_ - f_ @ coef) * m_
        if normalize:
            mu = a.sum() / m_.sum()
            a = (a - mu) / ((((a - mu) * m_) ** 2).sum() / m_.sum()).sqrt() * m_
        torch.testing.assert_close((adv[i] * mask[i]).reshape(-1), a, rtol=1e-7, atol=1e-8)
    assert float(w["reward_w"][0, 0, 4:].abs().max()) == 0 and float(w["baseline_w"][0, 0, 4:].abs().max()) == 0


def _policy_and_flat():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(3,), init="torch").double()
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.3, 0.2]))
    names = [n for n, _ in policy.named_parameters()]
    shapes = [p.shape for _, p in policy.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in policy.named_parameters()])

    def unflat(v):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            out[n] = v[i:i + s.numel()].view(s)
            i += s.numel()
        return out
    return policy, flat0, unflat


def _task_batch(policy, m=7, seed=0):
    """``m`` samples of ``policy`` with random advantages (the last two masked) and their log-probs."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(m, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        mean, log_std = policy(obs)
    act = mean + log_std.exp() * torch.randn(mean.shape, generator=g, dtype=torch.float64)
    mask = torch.ones(m, dtype=torch.float64)
    mask[-2:] = 0                                      # masked samples count for nothing
    adv = torch.randn(m, generator=g, dtype=torch.float64) * mask
    return {"obs": obs, "act": act, "adv": adv, "mask": mask,
            "old_logp": gaussian_log_prob(mean, log_std, act).detach()}


def test_lvc_gradient_and_hessian_equal_the_likelihood_ratio_ones_at_the_sampling_point():
    """At θ = θ_old: ∇L^LVC = −E[∇log π · A] (REINFORCE, = DiCE's first derivative) and
    ∇²L^LVC = −E[(∇²log π + ∇log π ∇log πᵀ) · A] (the likelihood-ratio Hessian; MAML's VPG surrogate has only
    the first term). Checked exactly, in float64, on a small two-layer Gaussian policy."""
    policy, flat0, unflat = _policy_and_flat()
    tb = _task_batch(policy)
    valid = tb["mask"].sum()
    lvc = pg.lvc_loss_fn(FunctionalPolicy(policy))

    def loss(v):
        return lvc(unflat(v), tb)

    def logp(v):                                            # [M] per-sample log-probs
        mean, log_std = functional_call(policy, unflat(v), (tb["obs"],))
        return gaussian_log_prob(mean, log_std, tb["act"])

    w = tb["adv"] * tb["mask"] / valid
    score = jacrev(logp)(flat0)                              # [M, P]
    hess_logp = hessian(lambda v: (logp(v) * w).sum())(flat0)  # Σ_t w_t ∇² log π_t
    g_expected = -(score * w[:, None]).sum(0)
    h_expected = -(hess_logp + score.T @ (score * w[:, None]))
    torch.testing.assert_close(jacrev(loss)(flat0), g_expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hessian(loss)(flat0), h_expected, rtol=1e-9, atol=1e-11)
    # the score-product term is not negligible here: the check tells LVC from MAML's surrogate
    assert (score.T @ (score * w[:, None])).abs().max() > 1e-2


def _one_task(policy, k=3, t=5, seed=1):
    """One task's DiCE batch sampled from ``policy`` (trajectory 0 ends after 3 steps)."""
    b = 1
    batch = _batch(k, t, b, seed)
    with torch.no_grad():
        mean, log_std = policy(batch.obs)
    act = mean + log_std.exp() * torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed + 7),
                                             dtype=torch.float64)
    batch = Batch(batch.obs, act, batch.rewards, batch.mask, batch.episode_start, batch.obs)
    w = pg.per_task_dice_weights(batch, b, 0.95, 1e-5, normalize=True)
    tb = {key: v[0] for key, v in w.items()}
    with torch.no_grad():
        m2, s2 = policy(tb["obs"])
    tb["old_logp"] = gaussian_log_prob(m2, s2, tb["act"])
    tb["adv"] = (torch.flip(torch.cumsum(torch.flip(tb["reward_w"], (-1,)), -1), (-1,))
                 - tb["baseline_w"]).reshape(-1) * tb["mask"]
    return tb


def test_dice_derivatives_are_the_likelihood_ratio_ones_at_the_sampling_point():
    """∇L = −(1/M) Σ ∇ℓ_t A'_t (REINFORCE: equal to the VPG loss with the weights' advantages) and
    ∇²L = −(1/M) Σ_t [(∇²c_t + ∇c_t ∇c_tᵀ) r_t − (∇²ℓ_t + ∇ℓ_t ∇ℓ_tᵀ) β_t], c the running sum of ℓ along each
    trajectory: the cross-time score products are there (LVC and MAML's surrogate drop them)."""
    policy, flat0, unflat = _policy_and_flat()
    tb = _one_task(policy)
    k, t = tb["reward_w"].shape
    m = tb["mask"]
    valid = m.sum()
    apply = FunctionalPolicy(policy)
    dice = pg.dice_loss_fn(apply)

    def logp(v):                                            # [M]
        mean, log_std = functional_call(policy, unflat(v), (tb["obs"],))
        return gaussian_log_prob(mean, log_std, tb["act"])

    def cum(v):                                             # [M] running sums along each trajectory
        return torch.cumsum((logp(v) * m).view(k, t), -1).reshape(-1)

    r = tb["reward_w"].reshape(-1) * m / valid
    beta = tb["baseline_w"].reshape(-1) * m / valid
    score_l, score_c = jacrev(logp)(flat0), jacrev(cum)(flat0)          # [M, P]
    g_expected = -(score_l * (tb["adv"] / valid)[:, None]).sum(0)
    h_expected = -(hessian(lambda v: (cum(v) * r).sum() - (logp(v) * beta).sum())(flat0)
                   + score_c.T @ (score_c * r[:, None]) - score_l.T @ (score_l * beta[:, None]))
    g = jacrev(lambda v: dice(unflat(v), tb))(flat0)
    torch.testing.assert_close(g, g_expected, rtol=1e-9, atol=1e-12)
    vpg = pg.vpg_loss_fn(apply)
    torch.testing.assert_close(g, jacrev(lambda v: vpg(unflat(v), tb))(flat0), rtol=1e-9, atol=1e-12)
    h = hessian(lambda v: dice(unflat(v), tb))(flat0)
    torch.testing.assert_close(h, h_expected, rtol=1e-8, atol=1e-11)
    # the cross-time products are not negligible: LVC's Hessian (same-step products only) differs
    h_lvc = hessian(lambda v: pg.lvc_loss_fn(apply)(unflat(v), tb))(flat0)
    assert float((h - h_lvc).detach().abs().max()) > 1e-2


def test_lvc_and_maml_take_the_same_inner_step_but_differ_in_curvature():
    policy, flat0, unflat = _policy_and_flat()
    tb = _one_task(policy)
    apply = FunctionalPolicy(policy)
    vpg, lvc = pg.inner_loss_fn(apply, "maml"), pg.inner_loss_fn(apply, "lvc")
    losses = {"maml": lambda v: vpg(unflat(v), tb), "lvc": lambda v: lvc(unflat(v), tb)}
    torch.testing.assert_close(jacrev(losses["maml"])(flat0), jacrev(losses["lvc"])(flat0), rtol=1e-10, atol=1e-12)
    assert float((hessian(losses["maml"])(flat0) - hessian(losses["lvc"])(flat0)).detach().abs().max()) > 1e-2
    with pytest.raises(ValueError, match="estimator"):
        pg.inner_loss_fn(apply, "e-maml")


TINY = dict(meta_batch=3, trajectories_per_task=3, horizon=6, hidden_sizes=(8,), eval_tasks=0)


def _train(tmp=None, **options):
    cfg = M.MAMLConfig(**TINY, iterations=2, **options)
    return cfg, M.train(cfg, run_dir=tmp, progress=False)


def _meta_gradient(cfg):
    """The gradient of MAML's outer surrogate at θ (one meta-batch, collected as ``MAMLLearner.step`` does)."""
    learner = M.MAMLLearner(cfg)
    b, k, h, apply = cfg.meta_batch, cfg.trajectories_per_task, cfg.horizon, learner.apply
    g = torch.Generator().manual_seed(0)
    tasks = learner.env.sample_tasks(b, generator=torch.Generator().manual_seed(1))
    theta = {n: v.detach() for n, v in learner.theta.items()}
    pre = M.inner_batch(M.rollout(learner.env, apply, theta, False, tasks, k, h, g, learner.affine), cfg, b, apply,
                        theta, False)
    adapted = {n: v.detach() for n, v in M.adapted(apply, theta, None, [pre], cfg, True).items()}
    post = M.with_old(apply, adapted, True, M.process(
        M.rollout(learner.env, apply, adapted, True, tasks, k, h, g, learner.affine), cfg, b))
    surr, _ = M.outer_terms(apply, learner.theta, None, [pre], post, cfg)
    return torch.cat([x.reshape(-1) for x in torch.autograd.grad(surr, list(learner.theta.values()))])


def test_lvc_meta_gradient_is_mamls_to_first_order_and_differs_through_the_step():
    """LVC's inner step equals MAML's (the same gradient at the sampling point), so the first-order
    meta-gradients are equal; through the inner step (second order) LVC adds the score-product curvature."""
    cfgs = {(e, fo): M.MAMLConfig(**TINY, estimator=e, first_order=fo) for e in ("maml", "lvc") for fo in (True, False)}
    grads = {key: _meta_gradient(cfg) for key, cfg in cfgs.items()}
    torch.testing.assert_close(grads["maml", True], grads["lvc", True], rtol=1e-4, atol=1e-7)
    diff = float((grads["maml", False] - grads["lvc", False]).abs().max())
    assert diff > 1e-3 * float(grads["maml", False].abs().max()), diff


@pytest.mark.parametrize("estimator", ["lvc", "dice"])
def test_estimators_train_evaluate_and_resume(tmp_path, estimator):
    cfg, s = _train(tmp_path / "run", estimator=estimator, inner_steps=2)
    assert s["iterations"] == 2 and all(r["accepted"] in (0, 1) for r in s["history"])
    out = M.evaluate(s["policy"], cfg, num_tasks=3, steps=(0, 1, 2))
    assert set(out) == {0, 1, 2} and all(math.isfinite(v) for v in out.values())
    policy, cfg2, _ = M.load_policy(tmp_path / "run")
    assert cfg2.estimator == estimator


def test_bad_estimator_names_the_field():
    with pytest.raises(ValueError, match="estimator"):
        M.MAMLConfig(estimator="unbiased")
