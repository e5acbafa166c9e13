"""MAML: the learn2learn-shaped wrapper (clone, adapt, second- vs first-order gradients), the
vmapped inner loop against a Python loop over tasks (metarl.algos.inner), the policy's init, a
short MAML-RL run on Navigation2D-v0 that must learn, the trust region, exact resume through the run
harness, and bad configs. The shared pieces (baseline, TRPO, rollouts) are tested in test_pg.py."""
import csv
import dataclasses
import doctest
import math
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from metarl import checkpoint
from metarl.algos import inner, pg
from metarl.algos import maml as M
from metarl.algos.maml import (
    MAML,
    MAMLConfig,
    evaluate,
    inner_loop,
    inner_loop_reference,
    make_policy,
    train,
)
from metarl.cli import main


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)


# ----------------------------------------------------------------------------- the wrapper
def test_clone_equals_the_original_and_is_differentiable():
    maml = MAML(_net(), lr=0.1)
    learner = maml.clone()
    x = torch.randn(5, 3)
    assert torch.equal(learner(x), maml(x))
    for (n0, p0), (n1, p1) in zip(maml.named_parameters(), learner.module.named_parameters()):
        assert n0.endswith(n1) and torch.equal(p0, p1)
        assert p1.grad_fn is not None                 # a function of the original, not a new leaf
    again = learner.clone()                           # clone of a clone
    assert torch.equal(again(x), maml(x))
    learner(x).sum().backward()
    assert all(p.grad is not None for p in maml.parameters())


def test_adapt_lowers_a_sine_regression_loss_and_reaches_the_meta_parameters():
    maml = MAML(_net(), lr=0.05)
    x = torch.rand(25, 3) * 6 - 3                      # 25 points: an odd batch
    y = torch.sin(x[:, :1]) * 2.0
    learner = maml.clone()
    before = float(((learner(x) - y) ** 2).mean().detach())
    for _ in range(3):
        learner.adapt(((learner(x) - y) ** 2).mean())
    after = ((learner(x) - y) ** 2).mean()
    assert float(after.detach()) < before
    after.backward()
    grads = [p.grad for p in maml.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    assert maml.module[0].weight.grad_fn is None      # the originals are untouched leaves


class _Quadratic(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self):
        return self.w


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_the_hand_computed_one_on_a_quadratic(first_order):
    """Inner loss ½wᵀAw − bᵀw, one step w' = w − α(Aw − b), outer loss ½‖w' − c‖². Second order:
    dL/dw = (I − αA)(w' − c); first order drops the Hessian term: dL/dw = w' − c."""
    g = torch.Generator().manual_seed(1)
    n, alpha = 4, 0.3
    r = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = r @ r.T / n + torch.eye(n, dtype=torch.float64)
    b, c, w0 = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(3))
    maml = MAML(_Quadratic(w0), lr=alpha, first_order=first_order)
    learner = maml.clone()
    w = learner()
    learner.adapt(0.5 * w @ a @ w - b @ w)
    w1 = learner()
    (0.5 * ((w1 - c) ** 2).sum()).backward()
    w1_hand = w0 - alpha * (a @ w0 - b)
    expected = (w1_hand - c) if first_order else (torch.eye(n, dtype=torch.float64) - alpha * a) @ (w1_hand - c)
    torch.testing.assert_close(w1.detach(), w1_hand)
    torch.testing.assert_close(maml.module.w.grad, expected)


# ----------------------------------------------------------------------------- the functional inner loop
def _task_data(num_tasks, m, g):
    x = torch.randn(num_tasks, m, 3, generator=g, dtype=torch.float64)
    return {"x": x, "y": torch.sin(x.sum(-1, keepdim=True))}


# tasks, samples per task, inner steps: 1 (the edge), odd and prime sizes
SIZES = [(1, 1, 1), (3, 5, 2), (7, 11, 3)]


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("meta_sgd", [False, True])
@pytest.mark.parametrize("num_tasks,m,steps", SIZES)
def test_vmapped_inner_loop_equals_a_python_loop_over_tasks(num_tasks, m, steps, meta_sgd, first_order):
    net = _net(torch.float64)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    lr = {k: torch.rand_like(v).mul(0.2).requires_grad_(True) for k, v in params.items()} if meta_sgd else 0.1

    def loss_fn(p, batch):
        return ((torch.func.functional_call(net, p, (batch["x"],)) - batch["y"]) ** 2).mean()

    g = torch.Generator().manual_seed(num_tasks * 100 + m)
    batches = [_task_data(num_tasks, m, g) for _ in range(steps)]
    query = _task_data(num_tasks, m, g)
    leaves = list(params.values()) + (list(lr.values()) if meta_sgd else [])
    results = []
    for fn in (inner_loop, inner_loop_reference):
        adapted = fn(loss_fn, params, batches, lr, first_order)
        outer = torch.func.vmap(loss_fn)(adapted, query).sum()
        results.append(({k: v.detach() for k, v in adapted.items()}, torch.autograd.grad(outer, leaves)))
    (fast, g_fast), (slow, g_slow) = results
    for k in params:
        assert fast[k].shape == (num_tasks,) + params[k].shape
        torch.testing.assert_close(fast[k], slow[k], atol=1e-10, rtol=1e-8)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_the_moved_pieces_are_still_importable_from_maml():
    """The public names that moved to metarl.algos.pg / metarl.algos.inner stay importable from here."""
    for name in ("GaussianMLPPolicy", "conjugate_gradient", "baseline_features", "fit_linear_baseline", "trpo_step",
                 "gaussian_kl", "action_map"):
        assert getattr(M, name) is getattr(pg, name), name
    for name in ("MAML", "inner_loop", "inner_loop_reference"):
        assert getattr(M, name) is getattr(inner, name), name
    assert set(M.__all__) <= set(dir(M))


def test_the_default_init_is_rllabs_xavier_with_zero_biases():
    """policy_init='xavier' (rllab's MLP, the default): Glorot-uniform weights and zero biases in
    every layer, the output included, so the untrained mean is exactly 0 at the start position;
    'torch' keeps nn.Linear's own init; anything else is refused."""
    pol = make_policy(MAMLConfig(hidden_sizes=(16, 8)))
    linears = [m for m in pol.mean if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    for layer in linears:
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert 0.5 * bound < layer.weight.abs().max() <= bound
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    torch.testing.assert_close(pol(torch.zeros(1, 2))[0], torch.zeros(1, 2))
    torch.testing.assert_close(pol.log_std, torch.zeros(2))                 # init_std 1
    again = make_policy(MAMLConfig(hidden_sizes=(16, 8)))
    assert all(torch.equal(a, b) for a, b in zip(pol.parameters(), again.parameters()))   # seeded
    torch_init = make_policy(MAMLConfig(hidden_sizes=(16, 8), policy_init="torch"))
    first = torch_init.mean[0]
    assert not torch.equal(first.bias, torch.zeros(16))                     # nn.Linear's own init
    assert first.weight.abs().max() <= 1 / math.sqrt(2) and first.bias.abs().max() <= 1 / math.sqrt(2)
    assert MAMLConfig().policy_init == "xavier" and MAMLConfig().mean_squash == "none"
    with pytest.raises(ValueError, match="policy_init"):
        MAMLConfig(policy_init="he")
    with pytest.raises(ValueError, match="policy_init"):
        MAMLConfig(policy_init=None)
    with pytest.raises(ValueError, match="init"):
        M.GaussianMLPPolicy(2, 2, init="he")


def test_the_tanh_mean_stays_in_the_box():
    """mean_squash='tanh' keeps the mean in [-1, 1] however large the MLP's output (also on the
    vmapped per-task path), leaves log_std alone; it needs normalize_actions; bad values refused."""
    squashed = make_policy(MAMLConfig(hidden_sizes=(16, 8), mean_squash="tanh"))
    plain = make_policy(MAMLConfig(hidden_sizes=(16, 8)))
    with torch.no_grad():
        for p in list(squashed.parameters()) + list(plain.parameters()):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))).mul_(20.0)
    obs = torch.randn(256, 2) * 3
    mean, log_std = squashed(obs)
    assert mean.abs().max() <= 1.0 and plain(obs)[0].abs().max() > 10.0
    torch.testing.assert_close(mean, torch.tanh(plain(obs)[0]))   # same seed, same MLP: tanh of its output
    torch.testing.assert_close(log_std, plain(obs)[1])
    stacked = {k: v.detach().unsqueeze(0).repeat(3, *([1] * v.dim())) for k, v in squashed.named_parameters()}
    bm, _ = pg.FunctionalPolicy(squashed).batched(stacked, obs[:12].view(3, 4, 2))
    torch.testing.assert_close(bm.reshape(12, 2), mean[:12])
    with pytest.raises(ValueError, match="mean_squash"):
        MAMLConfig(mean_squash="sigmoid")
    with pytest.raises(ValueError, match="mean_squash='tanh' needs normalize_actions"):
        MAMLConfig(mean_squash="tanh", normalize_actions=False)
    with pytest.raises(ValueError, match="mean_squash"):
        M.GaussianMLPPolicy(2, 2, mean_squash="clip")


# ----------------------------------------------------------------------------- MAML-RL end to end
# The learning test's sizes (CI budget, ~15-20 s of training on a 2-core CPU after Numba's first
# compile): meta-batch 10 tasks x 10 trajectories, horizon 20, MLP 2x32, inner lr 0.1, one inner
# step, second-order TRPO (max KL 0.01), 15 meta-updates; evaluation on 40 held-out tasks.
SMALL_RL = dict(meta_batch=10, trajectories_per_task=10, horizon=20, hidden_sizes=(32, 32), iterations=15,
                eval_tasks=0, seed=0)


def _paired(a, b):
    d = (b - a).double()
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def test_a_short_maml_run_on_navigation_learns_to_adapt():
    cfg = MAMLConfig(**SMALL_RL)
    untrained = evaluate(make_policy(cfg), cfg, num_tasks=40, steps=(0, 1), per_task=True)
    summary = train(cfg, run_dir=None)
    assert summary["iterations"] == 15
    assert all(r["kl"] <= cfg.max_kl + 1e-6 for r in summary["history"])       # the trust region held
    trained = evaluate(summary["policy"], cfg, num_tasks=40, steps=(0, 1), per_task=True)
    gain, se = _paired(trained[0], trained[1])
    # one adaptation step helps, clearly (paired over the same 40 held-out tasks)
    assert gain > 4 * se, (gain, se, {k: float(v.mean()) for k, v in trained.items()})
    # and meta-training made the adapted policy better than adapting the untrained one
    better, se2 = _paired(untrained[1], trained[1])
    assert better > 3 * se2, (better, se2)


@pytest.mark.parametrize("options", [dict(outer="ppo"), dict(first_order=True, meta_sgd=True),
                                     dict(inner_steps=2), dict(inner_steps=0),
                                     dict(policy_init="torch", mean_squash="tanh")])
def test_variants_run_and_write_their_files(tmp_path, options):
    cfg = MAMLConfig(meta_batch=3, trajectories_per_task=3, horizon=5, hidden_sizes=(8,), iterations=2,
                     eval_tasks=3, eval_steps=(0, 2), **options)
    summary = train(cfg, run_dir=tmp_path)
    assert summary["iterations"] == 2 and set(summary["eval"]) == {0, 2}
    assert all(math.isfinite(v) for v in summary["eval"].values())
    assert (tmp_path / "progress.csv").read_text().count("\n") == 3
    policy, cfg2, lrs = M.load_policy(tmp_path)
    assert cfg2 == cfg and (lrs is not None) == cfg.meta_sgd
    for k, v in policy.state_dict().items():
        assert torch.equal(v, summary["policy"][k])


def _trpo_batches(cfg):
    """The pre-update batch (with its behaviour stats) and the post-update batch of one meta-batch,
    collected as :meth:`MAMLLearner.step` does."""
    b, k, h = cfg.meta_batch, cfg.trajectories_per_task, cfg.horizon
    env = M.make_env(cfg, cfg.num_envs)
    policy = M.make_policy(cfg, env)
    apply = pg.FunctionalPolicy(policy)
    theta = dict(policy.named_parameters())
    g = torch.Generator().manual_seed(0)
    tasks = env.sample_tasks(b, generator=torch.Generator().manual_seed(1))
    affine = M.action_map(env, cfg.normalize_actions)
    params = {n: v.detach() for n, v in theta.items()}
    pre = M.with_old(apply, params, False, M.process(M.rollout(env, apply, params, False, tasks, k, h, g, affine),
                                                     cfg, b))
    adapted = {n: v.detach() for n, v in M.adapted(apply, params, None, [pre], cfg, True).items()}
    post = M.with_old(apply, adapted, True, M.process(M.rollout(env, apply, adapted, True, tasks, k, h, g, affine),
                                                      cfg, b))
    return apply, theta, pre, post


def test_trust_region_both_adds_and_bounds_the_pre_update_kl():
    """``trust_region="both"``: the constrained KL is the post-update policies' plus the pre-update
    policy's on its own samples, and one TRPO step keeps that sum (so the pre-update policy's move)
    within ``max_kl``."""
    cfg = MAMLConfig(meta_batch=3, trajectories_per_task=4, horizon=10, hidden_sizes=(16,), trust_region="both")
    apply, theta, pre, post = _trpo_batches(cfg)

    def pre_kl():
        with torch.no_grad():
            mean, log_std = torch.vmap(apply, in_dims=(None, 0))(theta, pre["obs"])
            kl = M.gaussian_kl(pre["old_mean"], pre["old_log_std"], mean, log_std)
            return float(((kl * pre["mask"]).flatten(1).sum(1) / pre["mask"].flatten(1).sum(1)).mean())

    with torch.no_grad():
        theta["mean.0.weight"].add_(0.05)
        _, kl_post = M.outer_terms(apply, theta, None, [pre], post, dataclasses.replace(cfg, trust_region="post"))
        _, kl_both = M.outer_terms(apply, theta, None, [pre], post, cfg)
        assert pre_kl() > 0
        torch.testing.assert_close(float(kl_both - kl_post), pre_kl(), rtol=1e-4, atol=1e-7)
        theta["mean.0.weight"].sub_(0.05)
    stats = M.trpo_step(lambda: M.outer_terms(apply, theta, None, [pre], post, cfg), list(theta.values()),
                        cfg.max_kl)
    assert stats["accepted"] == 1 and stats["kl"] <= cfg.max_kl
    assert 0 < pre_kl() <= cfg.max_kl


@pytest.mark.parametrize("field,value", [
    ("meta_batch", 0), ("trajectories_per_task", -1), ("horizon", 0), ("inner_lr", 0.0), ("inner_steps", -1),
    ("max_kl", -0.1), ("gamma", 1.5), ("outer", "sgd"), ("hidden_sizes", (0,)), ("env", "Nope-v0"),
    ("backtrack_ratio", 1.0), ("init_std", 0.0), ("eval_steps", (-1,)), ("trust_region", "pre"),
    ("eval_tasks", -1), ("eval_lr_scales", ())])
def test_bad_configs_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MAMLConfig(**{field: value})


def test_bad_wrapper_arguments():
    with pytest.raises(ValueError, match="lr"):
        MAML(_net(), lr=0.0)
    with pytest.raises(TypeError, match="module"):
        MAML(lambda x: x, lr=0.1)


def _rows(run_dir):
    """progress.csv without its wall-clock columns."""
    with open(run_dir / "progress.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("seconds", "env_steps_per_s")} for r in csv.DictReader(f)]


@pytest.mark.parametrize("options", [dict(), dict(outer="ppo", meta_sgd=True)])
def test_resume_equals_an_uninterrupted_run(tmp_path, options):
    cfg = MAMLConfig(meta_batch=3, trajectories_per_task=3, horizon=5, hidden_sizes=(8,), iterations=4,
                     eval_tasks=0, **options)
    train(cfg, tmp_path / "whole")
    assert train(cfg, tmp_path / "split", max_iterations=2)["iterations"] == 2
    assert train(cfg, tmp_path / "split", max_iterations=3, resume=True)["iterations"] == 3
    resumed = train(cfg, tmp_path / "split", resume=True)
    assert resumed["iterations"] == 4 and len(resumed["history"]) == 1
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt", kind="maml")
    b = checkpoint.load(tmp_path / "split" / "checkpoint.pt", kind="maml")
    assert a["iteration"] == b["iteration"] == 4
    for k in a["learner"]["policy"]:
        assert torch.equal(a["learner"]["policy"][k], b["learner"]["policy"][k]), k
    if cfg.meta_sgd:
        for k in a["learner"]["inner_lrs"]:
            assert torch.equal(a["learner"]["inner_lrs"][k], b["learner"]["inner_lrs"][k]), k
    assert _rows(tmp_path / "whole") == _rows(tmp_path / "split") and len(_rows(tmp_path / "whole")) == 4
    with pytest.raises(ValueError, match="config differs"):
        train(dataclasses.replace(cfg, seed=1), tmp_path / "split", resume=True)


def test_eval_tasks_zero_means_no_evaluation_unless_a_number_is_given(tmp_path, capsys):
    """``eval_tasks=0``: training ends without an evaluation and :meth:`report` without a number is
    empty; a number of tasks given to ``report`` / ``evaluate`` (``metarl eval --tasks N``) still
    evaluates, and ``evaluate`` without one says why it cannot."""
    cfg = MAMLConfig(meta_batch=2, trajectories_per_task=2, horizon=5, hidden_sizes=(8,), iterations=1, eval_tasks=0,
                     eval_steps=(0, 1))
    s = train(cfg, tmp_path)
    assert "eval" not in s and s["iterations"] == 1
    learner = M.MAMLLearner(cfg)
    learner.load_state_dict(checkpoint.load(tmp_path / "checkpoint.pt", kind="maml")["learner"])
    assert learner.report() == {}
    assert set(learner.report(3)["eval"]) == {0, 1}
    with pytest.raises(ValueError, match="num_tasks must be a positive int.*eval_tasks is 0"):
        evaluate(s["policy"], cfg)
    assert main(["eval", str(tmp_path)]) == 2                          # metarl eval says why, in one line
    assert "eval_tasks=0" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--tasks", "2"]) == 0
    assert "after 1 adaptation steps" in capsys.readouterr().out


def test_inner_steps_zero_is_joint_training_and_refuses_meta_sgd():
    """``inner_steps=0`` (the pretrained baseline): one rollout per update, the pre- and post-update
    returns are the same trajectories, the evaluation still adapts; Meta-SGD has nothing to learn."""
    cfg = MAMLConfig(meta_batch=2, trajectories_per_task=2, horizon=5, hidden_sizes=(8,), iterations=2, eval_tasks=2,
                     eval_steps=(0, 1), inner_steps=0)
    s = train(cfg)
    assert all(r["pre_return"] == r["post_return"] for r in s["history"])
    assert s["env_steps"] == 2 * cfg.num_envs * cfg.horizon and set(s["eval"]) == {0, 1}
    with pytest.raises(ValueError, match="meta_sgd needs inner_steps >= 1"):
        MAMLConfig(inner_steps=0, meta_sgd=True)


def test_docstring_examples():
    attempted = 0
    for module in (M, inner):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 0


def test_dense_training_reward_and_reached_metric():
    """train_reward='dense' meta-trains on −‖pos − goal‖ (the batch's next_obs) while the evaluation
    keeps the env's sparse reward; metric='reached' is the fraction of episodes with reward > 0."""
    cfg = MAMLConfig(env="SemicircleGoal-v0", train_reward="dense", meta_batch=2, trajectories_per_task=2,
                     horizon=12, hidden_sizes=(8,), iterations=1, eval_tasks=0, outer="ppo", ppo_epochs=1)
    env = M.make_env(cfg, 4)
    policy = M.make_policy(cfg, env)
    tasks = env.sample_tasks(2, generator=torch.Generator().manual_seed(0))
    batch = M.rollout(env, pg.FunctionalPolicy(policy), dict(policy.named_parameters()), False, tasks, 2, 12,
                      torch.Generator().manual_seed(1))
    goals = tasks.goal[torch.arange(4) // 2]
    dense = M.dense_rewards(batch, goals).rewards
    torch.testing.assert_close(dense, -(batch.next_obs - goals).norm(dim=-1) * batch.mask)
    # positions move by at most 0.1 per axis per step from the origin: next_obs = obs + clipped action
    torch.testing.assert_close(batch.next_obs[:-1], batch.obs[1:])
    s = M.train(cfg)
    assert s["iterations"] == 1 and s["pre_return"] == 0.0   # sparse env reward: the goals are 2 away
    reached = M.evaluate(s["policy"], cfg, 3, (0, 1), metric="reached")
    assert set(reached) == {0, 1} and all(0.0 <= v <= 1.0 for v in reached.values())
    with pytest.raises(ValueError, match="metric"):
        M.evaluate(s["policy"], cfg, 3, (0,), metric="success")
    with pytest.raises(ValueError, match="train_reward"):
        MAMLConfig(env="Pendulum-v1", train_reward="dense")
    with pytest.raises(ValueError, match="train_reward"):
        MAMLConfig(train_reward="shaped")


def test_normalized_actions_are_scaled_onto_the_env_box():
    """normalize_actions (rllab's ``normalize``): the env moves by clip(0.1 · a) on Navigation2D-v0
    while the batch keeps the policy's own actions a; without it the env gets a itself."""
    cfg = MAMLConfig(meta_batch=2, trajectories_per_task=3, horizon=7, hidden_sizes=(8,), iterations=1,
                     eval_tasks=0)
    env = M.make_env(cfg, 6)
    policy = M.make_policy(cfg, env)
    tasks = env.sample_tasks(2, generator=torch.Generator().manual_seed(0))
    params = dict(policy.named_parameters())
    for affine, factor in ((M.action_map(env, True), 0.1), (None, 1.0)):
        batch = M.rollout(env, pg.FunctionalPolicy(policy), params, False, tasks, 3, 7,
                          torch.Generator().manual_seed(1), affine)
        moved = batch.next_obs - batch.obs
        torch.testing.assert_close(moved, (factor * batch.actions).clamp(-0.1, 0.1))
        assert batch.actions.abs().max() > 0.1   # std 1: the stored actions are the policy's, not the env's
    unbounded = types.SimpleNamespace(single_action_space=gym.spaces.Box(-np.inf, np.inf, (2,)))
    with pytest.raises(ValueError, match="bounded action box"):
        M.action_map(unbounded, True)
    assert M.action_map(unbounded, False) is None


def test_evaluation_step_sizes_and_trajectories():
    """lr_scales multiply the inner lr per adaptation step (the last repeats): inner lr 0.4 at scale
    0.5 is inner lr 0.2 at scale 1, bit for bit; scales (1, 0.5) keep step 1 of the plain rule."""
    kw = dict(meta_batch=2, trajectories_per_task=3, horizon=9, hidden_sizes=(8,), iterations=1, eval_tasks=0,
              eval_trajectories=4)
    policy = M.make_policy(MAMLConfig(**kw))
    a = M.evaluate(policy, MAMLConfig(**kw, inner_lr=0.4), 3, (0, 1, 2), lr_scales=(0.5,), per_task=True)
    b = M.evaluate(policy, MAMLConfig(**kw, inner_lr=0.2), 3, (0, 1, 2), lr_scales=(1.0,), per_task=True)
    for s in (0, 1, 2):
        torch.testing.assert_close(a[s], b[s], rtol=0, atol=0)
    c = M.evaluate(policy, MAMLConfig(**kw, inner_lr=0.2, eval_lr_scales=(1.0, 0.5)), 3, (0, 1, 2), per_task=True)
    torch.testing.assert_close(c[1], b[1], rtol=0, atol=0)
    assert not torch.equal(c[2], b[2])
    d = M.evaluate(policy, MAMLConfig(**kw, inner_lr=0.2), 3, (0,), trajectories=5, per_task=True)
    assert d[0].shape == (3,) and not torch.equal(d[0], b[0])   # 5 trajectories per task, not 4
    with pytest.raises(ValueError, match="eval_lr_scales"):
        MAMLConfig(eval_lr_scales=())
    with pytest.raises(ValueError, match="eval_lr_scales"):
        MAMLConfig(eval_lr_scales=(1.0, -0.5))
    with pytest.raises(ValueError, match="eval_trajectories"):
        MAMLConfig(eval_trajectories=-1)
    with pytest.raises(ValueError, match="lr_scales"):
        M.evaluate(policy, MAMLConfig(**kw), 3, (0, 1), lr_scales=())
    with pytest.raises(ValueError, match="trajectories must be a positive int"):
        M.evaluate(policy, MAMLConfig(**kw), 3, (0,), trajectories=-2)
