"""RL^2 (Duan et al. 2016; Wang et al. 2016): a recurrent policy trained across a task
distribution with PPO over whole trials, so that within one trial of a new task it explores
and then exploits.

The policy (:class:`~metarl.nn.RecurrentActorCritic`) sees the RL^2 input
``[obs, prev_action, prev_reward, prev_done]`` (:class:`~metarl.envs.TrialWrapper`) and keeps its
LSTM state across the episodes of a trial; the state is reset at trial starts. Advantages
(GAE, :func:`metarl.kernels.returns.gae`) run across episode boundaries and stop only at trial
ends (the trial is the episode of the meta-MDP). The PPO loss replays each rollout's sequences
from the state the rollout started in (truncated BPTT at rollout boundaries).

Use it from Python::

    >>> from metarl.algos.rl2 import RL2Config, train
    >>> cfg = RL2Config(num_envs=64, total_env_steps=2_000, eval_tasks=100)
    >>> summary = train(cfg, run_dir=None, progress=False)       # doctest: +SKIP

or the command line: ``metarl train rl2 --arms 5 --episodes-per-trial 10``.
"""
from __future__ import annotations

import dataclasses

import torch

import metarl
from metarl import distributed
from metarl.algos import harness
from metarl.algos.pg import mean_se
from metarl.config import Config, env_ids, env_options, field
from metarl.envs import TrialWrapper
from metarl.kernels.lstm_ppo import lstm_ppo_grads
from metarl.kernels.returns import gae
from metarl.kernels.rl2_inputs import rl2_inputs
from metarl.nn import RecurrentActorCritic
from metarl.rollout import Carry, collect
from metarl.threads import torch_threads_for

UPDATE_PARALLEL_MIN_WORK = 1 << 16
"""minibatch sequences x hidden size from which the PPO update uses every torch thread (one below;
bench/RESULTS.md, the busy-machine section: 256 x 64 updates in 148-154 ms on one thread, 260-267 ms on
two with sleeping workers; 1024 x 64 in 747-755 ms on two, 863-1136 ms on one)"""

@dataclasses.dataclass
class RL2Config(Config):
    """RL^2 with PPO as the outer optimiser. Defaults: the README's small run (bandits, k = 5,
    n = 10) that reaches the Bayes-optimal return in a few minutes on a 2-core CPU."""

    env: str = field("Bandit-v0", choices=env_ids)
    """Task distribution: a metarl env id (Bandit-v0, TabularMDP-v0, CartPole-v1, ...)."""
    arms: int = field(5, ge=1)
    """Bandit-v0: number of arms k."""
    num_states: int = field(10, ge=1)
    """TabularMDP-v0: number of states."""
    num_actions: int = field(5, ge=1)
    """TabularMDP-v0: number of actions."""
    horizon: int = field(10, ge=1)
    """TabularMDP-v0: steps per episode."""
    max_episode_steps: int = field(0, ge=0)
    """Time limit of every episode (0: the env's own, e.g. 1000 for the MuJoCo families, whose
    meta-RL papers use 200)."""
    env_options: str = "{}"
    """More keyword arguments for ``metarl.make_vec``, as a JSON object: e.g. ``'{"velocity_range": [0, 2]}'``
    (HalfCheetahVel-v0 as in the MAML paper) or ``'{"task_name": "reach-v3"}'`` (MetaWorld-ML1-v0)."""
    episodes_per_trial: int = field(10, ge=1)
    """n: episodes per trial (a bandit pull is one episode), all on one task."""
    num_envs: int = field(1024, ge=1)
    """Env copies (tasks) stepped together."""
    rollout_steps: int = field(0, ge=0)
    """Steps per rollout; 0 = one trial where trials have a fixed length, else 128."""
    total_env_steps: int = field(3_000_000, ge=1)
    """Training budget in env steps (all envs together)."""
    hidden_size: int = field(64, ge=1)
    """LSTM hidden units."""
    lr: float = field(3e-3, gt=0)
    """Adam learning rate."""
    gamma: float = field(0.99, ge=0, le=1)
    """Discount (within a trial)."""
    gae_lambda: float = field(0.3, ge=0, le=1)
    """GAE lambda (RL^2 used 0.3)."""
    clip: float = field(0.2, gt=0)
    """PPO ratio clip."""
    epochs: int = field(4, ge=1)
    """PPO epochs per rollout."""
    minibatches: int = field(4, ge=1)
    """Minibatches per epoch (split over envs: each keeps whole sequences)."""
    ent_coef: float = field(0.003, ge=0)
    """Entropy bonus at the start, annealed linearly to 0 by the end."""
    vf_coef: float = field(0.5, ge=0)
    """Value-loss weight."""
    max_grad_norm: float = field(1.0, gt=0)
    """Gradient clipping (global norm)."""
    normalize_returns: bool = False
    """Train the value head on normalised returns (running mean/std). Needed where trial returns
    are large (TabularMDP: 113.8 vs 98.3 = Random after 30M steps); off by default because it
    measured worse on bandits n = 10 (6.41 vs 6.53 after 3M steps)."""
    seed: int = field(0, ge=0)
    """Seed of the envs, tasks, policy init and sampling."""
    device: str = "cpu"
    """Torch device of envs and policy (cuda: Triton kernels)."""
    eval_tasks: int = field(1000, ge=1)
    """Held-out tasks evaluated at the end (and by ``metarl eval`` without ``--tasks``); on a ``MetaWorld-*``
    env the benchmark's test tasks in its protocol (20 envs per evaluation; the package's default is 200, at
    ~6 s of 500-step episodes per test task on one core: choose it for the budget)."""
    checkpoint_minutes: float = field(5.0, gt=0)
    """Minutes between checkpoints (one is also written at the end and on Ctrl-C)."""

    def check(self):
        if self.minibatches > self.num_envs:
            raise ValueError(f"minibatches ({self.minibatches}) must not exceed num_envs ({self.num_envs})")
        env_options(self.env_options, reserved=("max_episode_steps", "arms", "num_states", "num_actions", "horizon",
                                                "num_envs", "device", "seed", "autoreset_mode"))

    def env_kwargs(self) -> dict:
        """The options ``metarl.make_vec`` takes for this config's env."""
        kwargs = {"max_episode_steps": self.max_episode_steps} if self.max_episode_steps else {}
        if self.env == "Bandit-v0":
            kwargs["arms"] = self.arms
        elif self.env == "TabularMDP-v0":
            kwargs.update(num_states=self.num_states, num_actions=self.num_actions, horizon=self.horizon)
        kwargs.update(env_options(self.env_options))
        return kwargs


# ----------------------------------------------------------------------------- pieces
def make_env(cfg: RL2Config, num_envs: int | None = None, seed: int | None = None) -> TrialWrapper:
    base = metarl.make_vec(cfg.env, num_envs or cfg.num_envs, autoreset_mode="same_step", device=cfg.device,
                           seed=cfg.seed if seed is None else seed, **cfg.env_kwargs())
    return TrialWrapper(base, cfg.episodes_per_trial)


def make_policy(cfg: RL2Config, env) -> RecurrentActorCritic:
    torch.manual_seed(cfg.seed)
    return RecurrentActorCritic(env.single_observation_space.shape[0], env.single_action_space, cfg.hidden_size,
                                device=cfg.device)


def trial_steps(env: TrialWrapper) -> int | None:
    """Steps per trial when every trial has the same length (Bandit, TabularMDP), else None."""
    length = env.base.episode_lengths()
    if length is None or not bool((length == length[0]).all()):
        return None
    return int(length[0]) * env.episodes_per_trial


def _rollout_steps(cfg: RL2Config, env) -> int:
    if cfg.rollout_steps:
        return cfg.rollout_steps
    return trial_steps(env) or 128


@torch.no_grad()
def _last_value(policy, carry: Carry) -> torch.Tensor:
    n = carry.obs.shape[0]
    actions = torch.zeros((1, n), dtype=torch.int64, device=carry.obs.device) if policy.discrete else \
        torch.zeros((1, n, policy.num_outputs), device=carry.obs.device)
    _, _, value = policy.evaluate(carry.obs[None], actions, carry.state, carry.reset[None])
    return value[0]


class ReturnNormalizer:
    """Running mean and variance of the value targets (Welford over all updates): the value head
    predicts normalised returns, so a trial return of ~100 (TabularMDP) trains the value head at
    the same scale as one of ~6 (bandits) and does not drown the policy gradient under the
    global gradient-norm clip."""

    def __init__(self, device="cpu"):
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros((), dtype=torch.float64, device=device)
        self.m2 = torch.zeros((), dtype=torch.float64, device=device)

    @property
    def std(self) -> torch.Tensor:
        var = self.m2 / self.count if float(self.count) > 1 else torch.ones_like(self.m2)
        return var.clamp_min(1e-8).sqrt()

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        n, mean = x.numel(), x.mean()
        delta = mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + ((x - mean) ** 2).sum() + delta ** 2 * self.count * n / total
        self.count = total

    def state_dict(self) -> dict:
        return {"count": self.count.cpu(), "mean": self.mean.cpu(), "m2": self.m2.cpu()}

    def load_state_dict(self, sd: dict) -> None:
        for k in ("count", "mean", "m2"):
            setattr(self, k, sd[k].to(self.count.device))


def _fused_params(policy) -> tuple | None:
    """The 8 weights :func:`~metarl.kernels.lstm_ppo.lstm_ppo_grads` differentiates, when the update can run on
    it (a categorical :class:`RecurrentActorCritic` on the CPU), else None."""
    if not isinstance(policy, RecurrentActorCritic) or not policy.discrete or policy.device.type != "cpu":
        return None
    cell, pi, v = policy.cell, policy.policy_head, policy.value_head
    return cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, pi.weight, pi.bias, v.weight, v.bias


def ppo_update(policy, optimizer, ro, cfg: RL2Config, ent_coef: float, generator: torch.Generator,
               normalizer: ReturnNormalizer | None = None, *, fused: bool = True) -> dict:
    """One PPO update on a rollout: GAE over trials, clipped surrogate, value loss, entropy bonus.
    With ``normalizer`` the value head works in normalised units (see :class:`ReturnNormalizer`).
    ``fused``: each minibatch's gradients by the hand-written LSTM + heads backward
    (:func:`metarl.kernels.lstm_ppo.lstm_ppo_grads`: the same loss, no autograd graph) where it applies (a
    categorical policy on the CPU); else, or with ``fused=False``, autograd through ``policy.evaluate``.
    Returns the mean losses (floats)."""
    dones = torch.cat([ro.resets[1:], ro.carry.reset[None]])     # the trial ends after step t
    mean, std = (0.0, 1.0) if normalizer is None else (float(normalizer.mean), float(normalizer.std))
    values = ro.values * std + mean
    last = _last_value(policy, ro.carry) * std + mean
    adv, ret = gae(ro.rewards, values, dones, last, cfg.gamma, cfg.gae_lambda)
    if normalizer is not None:
        normalizer.update(distributed.gather(ret, 1))
        mean, std = float(normalizer.mean), float(normalizer.std)
    ret = (ret - mean) / std
    n = ro.rewards.shape[1]             # this rank's env copies (all of them in one process)
    h0, c0 = ro.state0
    params = _fused_params(policy) if fused else None
    stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0}
    updates = 0
    with torch_threads_for((n // cfg.minibatches) * cfg.hidden_size, UPDATE_PARALLEL_MIN_WORK):
        for _ in range(cfg.epochs):
            perm = torch.randperm(n * distributed.world(), generator=generator).to(ro.rewards.device)
            for idx in perm.chunk(cfg.minibatches):
                # data-parallel: this rank's rows of the minibatch; the gradients are summed over ranks
                idx, share = distributed.local_rows(idx, n)
                a = distributed.normalize(adv[:, idx])
                optimizer.zero_grad(set_to_none=True)
                if idx.numel() and params is not None:
                    # as many threads as the thread policy leaves torch here, each on a block of the sequences
                    grads, mb = lstm_ppo_grads(ro.obs[:, idx], ro.actions[:, idx], h0[idx], c0[idx], ro.resets[:, idx],
                                               ro.log_probs[:, idx], a, ret[:, idx], params, clip=cfg.clip,
                                               vf_coef=cfg.vf_coef, ent_coef=ent_coef, scale=share,
                                               threads=torch.get_num_threads())
                    for p, g in zip(params, grads):     # zero_grad(set_to_none=True) just above
                        p.grad = g
                    for k in stats:
                        stats[k] += mb[k]
                    updates += 1
                elif idx.numel():
                    lp, ent, v = policy.evaluate(ro.obs[:, idx], ro.actions[:, idx], (h0[idx], c0[idx]),
                                                 ro.resets[:, idx])
                    log_ratio = lp - ro.log_probs[:, idx]
                    ratio = log_ratio.exp()
                    pg = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a).mean()
                    vl = 0.5 * ((v - ret[:, idx]) ** 2).mean()
                    loss = (pg + cfg.vf_coef * vl - ent_coef * ent.mean()) * share
                    loss.backward()
                    with torch.no_grad():
                        stats["policy_loss"] += float(pg)
                        stats["value_loss"] += float(vl)
                        stats["entropy"] += float(ent.mean())
                        stats["approx_kl"] += float(((ratio - 1) - log_ratio).mean())
                    updates += 1
                distributed.sum_grads(policy.parameters())
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
    return {k: v / max(updates, 1) for k, v in stats.items()}


def _trial_returns(ro, acc: torch.Tensor) -> list[float]:
    """Add the rollout's rewards to the running per-env trial returns ``acc`` [N]; returns the
    returns of the trials that ended in it (``acc`` restarts there)."""
    done = []
    ends = torch.cat([ro.resets[1:], ro.carry.reset[None]])
    for t in range(ro.rewards.shape[0]):
        acc += ro.rewards[t]
        if bool(ends[t].any()):
            done.extend(acc[ends[t]].tolist())
            acc[ends[t]] = 0.0
    return done


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(policy, cfg: RL2Config, num_tasks: int | None = None, seed: int = 12345) -> torch.Tensor:
    """One trial on each of ``num_tasks`` held-out tasks (``sample_task_split``'s test set for
    ``seed``); returns each trial's total reward ``[num_tasks]`` (the stochastic policy, as RL^2)."""
    num_tasks = num_tasks or cfg.eval_tasks
    env = make_env(cfg, num_tasks, seed=seed)
    _, test = env.base.sample_task_split(1, num_tasks, seed=seed)
    obs, info = env.reset(seed=seed, options={"tasks": test})
    carry = Carry(obs, info["trial_start"], policy.initial_state(num_tasks))
    g = torch.Generator(device=cfg.device).manual_seed(seed)
    total = torch.zeros(num_tasks, device=cfg.device)
    running = torch.ones(num_tasks, dtype=torch.bool, device=cfg.device)
    chunk = trial_steps(env) or 256
    while bool(running.any()):
        ro = collect(env, policy, chunk, carry=carry, generator=g)
        ends = torch.cat([ro.resets[1:], ro.carry.reset[None]])
        for t in range(chunk):
            total += torch.where(running, ro.rewards[t], 0.0)
            running &= ~ends[t]
        carry = ro.carry
    return total.cpu()


class MetaWorldAgent:
    """RL^2 as the Meta-World benchmark's meta-learning agent (:func:`metarl.envs.metaworld.metalearning_evaluation`):
    each evaluation is one trial. ``init`` zeroes the LSTM state and the RL^2 input's ``prev_*`` part; the
    state then carries through the adaptation episodes into the evaluation episodes (``adapt`` and
    ``reset`` change nothing: RL^2 adapts in its state), the input ``[obs, prev_action, prev_reward,
    prev_done]`` built from each transition ``step`` sees, as :class:`~metarl.envs.TrialWrapper` builds it.
    Adaptation samples the policy (``generator``); evaluation acts with its mean action."""

    def __init__(self, policy: RecurrentActorCritic, num_envs: int, generator: torch.Generator):
        self.policy, self.num_envs, self.generator = policy, num_envs, generator
        self.action_dim = policy.num_outputs
        self.init()

    def init(self) -> None:
        n, dev = self.num_envs, self.policy.device
        self.state = self.policy.initial_state(n)
        self.start = torch.ones(n, dtype=torch.bool, device=dev)
        self.prev = (torch.zeros((n, self.action_dim), device=dev), torch.zeros(n, device=dev),
                     torch.zeros(n, dtype=torch.bool, device=dev))

    @torch.no_grad()
    def _act(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = rl2_inputs(obs, *self.prev, self.start, self.action_dim, False)
        action, _, _, self.state = self.policy.step(x, self.state, self.start, noise=noise)
        self.start = torch.zeros_like(self.start)
        return action

    def adapt_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self._act(obs, self.policy.sample_noise((self.num_envs,), generator=self.generator))

    def eval_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self._act(obs, torch.zeros((self.num_envs, self.action_dim), device=obs.device))

    def step(self, obs, actions, reward, terminated, truncated) -> None:
        self.prev = (actions, reward, terminated | truncated)

    def adapt(self) -> None:
        pass

    def reset(self, mask: torch.Tensor) -> None:
        pass


def metaworld_report(policy, cfg: RL2Config, num_tasks: int | None = None, *, seed: int = 12345,
                     adaptation_episodes: int = 10, evaluation_episodes: int = 3,
                     max_episode_steps: int | None = None) -> dict:
    """The Meta-World benchmark's metric of an RL^2 policy trained on a ``MetaWorld-*`` env: success rate
    (per test task name and their mean) and mean return on the benchmark's TEST tasks (of the training
    env's benchmark: its ``env_options``, ``benchmark_seed`` ``cfg.seed`` unless they set it) after
    ``adaptation_episodes`` episodes, over the first ``evaluation_episodes`` evaluation episodes, by
    :func:`metarl.envs.metaworld.metalearning_evaluation` with :class:`MetaWorldAgent`; ``num_tasks`` test
    tasks in all (default 200: the package's 20 envs x 10 evaluations;
    :func:`~metarl.envs.metaworld.make_meta_test_env`), episodes of the benchmark's 500 steps
    (``max_episode_steps``). Returns ``{"eval": {"success_rate", "return",
    "success_rate_per_task": {name: rate}, "return_per_task", "num_evals", "num_envs",
    "adaptation_episodes", "evaluation_episodes", "episode_steps"}}``."""
    from metarl.envs import metaworld as mw

    def make_agent(env, gen):
        return MetaWorldAgent(policy, env.num_envs, gen)

    return mw.meta_test_report(cfg.env, env_options(cfg.env_options), make_agent,
                               benchmark_seed=cfg.seed, num_tasks=num_tasks, max_episode_steps=max_episode_steps,
                               seed=seed, device=cfg.device, adaptation_episodes=adaptation_episodes,
                               evaluation_episodes=evaluation_episodes)


def baselines(cfg: RL2Config, num_tasks: int | None = None, seed: int = 12345) -> dict[str, torch.Tensor]:
    """The classical baselines (:mod:`metarl.baselines`) on the same held-out tasks as :func:`evaluate`."""
    from metarl import baselines as bl

    num_tasks = num_tasks or cfg.eval_tasks
    env = make_env(cfg, 1, seed=seed)
    _, test = env.base.sample_task_split(1, num_tasks, seed=seed)
    out = {}
    if cfg.env == "Bandit-v0":
        for name in bl.BANDIT_BASELINES:
            if name == "bayes_optimal" and cfg.episodes_per_trial > 20:   # exact DP: n <= 20 only
                continue
            out[name] = bl.evaluate_bandit(name, test.probs, cfg.episodes_per_trial, seed=seed)
    elif cfg.env == "TabularMDP-v0":
        for name in bl.TABULAR_BASELINES:
            out[name] = bl.evaluate_tabular(name, test, cfg.episodes_per_trial, horizon=cfg.horizon, seed=seed)
    return out


# ----------------------------------------------------------------------------- the learner
class RL2Learner:
    """RL^2 as the run harness drives it (:mod:`metarl.algos.harness`): each :meth:`step` collects
    one rollout of ``rollout_steps`` × ``num_envs`` env steps and makes one PPO update on it. Under
    ``torchrun`` each rank steps ``num_envs / world`` of the copies and the update's gradients are summed
    over ranks (:mod:`metarl.distributed`: the same updates as one process with all the copies)."""

    kind = "rl2"
    data_parallel = True        # shards its env copies under torchrun (harness.run refuses learners without it)

    def __init__(self, cfg: RL2Config):
        self.config = cfg
        distributed.init(cfg.device)                        # under torchrun: this rank's share of the envs
        n = distributed.shard(cfg.num_envs, "num_envs")
        self.env = make_env(cfg, n)
        self.env.shard = distributed.shard_index()
        self.policy = make_policy(cfg, self.env)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, eps=1e-5)
        self.generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)        # policy sampling
        self.perm_generator = torch.Generator().manual_seed(cfg.seed + 1)                  # minibatch permutations
        self.rollout_steps = _rollout_steps(cfg, self.env)
        self.steps_per_iteration = self.rollout_steps * cfg.num_envs
        self.iterations = max(1, cfg.total_env_steps // self.steps_per_iteration)
        self.iteration = 0
        self.normalizer = ReturnNormalizer()
        self.trial_acc = torch.zeros(n, device=cfg.device)                 # running return of each env's trial
        self.recent: list[float] = []                                      # returns of the last finished trials
        obs, info = self.env.reset(seed=cfg.seed)
        distributed.shard_env_keys(self.env.base, cfg.seed)
        self.carry = Carry(obs, info["trial_start"], self.policy.initial_state(n))

    @property
    def env_steps(self) -> int:
        return self.iteration * self.steps_per_iteration

    def step(self) -> dict:
        cfg = self.config
        # collect
        ro = collect(self.env, self.policy, self.rollout_steps, carry=self.carry, generator=self.generator,
                     shard=distributed.shard_index())
        self.carry = ro.carry
        self.recent = (self.recent + _trial_returns(ro, self.trial_acc))[-4 * cfg.num_envs:]
        # update
        ent_coef = cfg.ent_coef * (1.0 - self.iteration / self.iterations)
        stats = ppo_update(self.policy, self.optimizer, ro, cfg, ent_coef, self.perm_generator,
                           self.normalizer if cfg.normalize_returns else None)
        self.iteration += 1
        # log
        trial_return = sum(self.recent) / len(self.recent) if self.recent else float("nan")
        row = {"trial_return": trial_return}
        pop = getattr(self.env.base, "pop_episode_successes", None)
        if pop is not None:     # Meta-World: the episodes that ended in this rollout, success at any step
            finished, succeeded = pop()
            row["success_rate"] = succeeded / finished if finished else float("nan")
        return {**row, **stats}

    def state_dict(self) -> dict:
        c = self.carry
        return {"iteration": self.iteration, "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(), "env": self.env.state_dict(),
                "generator": self.generator.get_state(), "perm_generator": self.perm_generator.get_state(),
                "trial_acc": self.trial_acc.cpu(), "recent": list(self.recent),
                "normalizer": self.normalizer.state_dict(),
                "carry": {"obs": c.obs.cpu(), "reset": c.reset.cpu(), "state": tuple(s.cpu() for s in c.state)}}

    def load_state_dict(self, sd: dict) -> None:
        dev = self.config.device
        self.iteration = int(sd["iteration"])
        self.policy.load_state_dict(sd["policy"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.env.load_state_dict(sd["env"])
        self.generator.set_state(sd["generator"])
        self.perm_generator.set_state(sd["perm_generator"])
        self.trial_acc.copy_(sd["trial_acc"])
        self.recent = list(sd["recent"])
        self.normalizer.load_state_dict(sd["normalizer"])
        c = sd["carry"]
        self.carry = Carry(c["obs"].to(dev), c["reset"].to(dev), tuple(s.to(dev) for s in c["state"]))

    def report(self, num_tasks: int | None = None) -> dict:
        return report(self.policy, self.config, num_tasks)


def train(cfg: RL2Config, run_dir=None, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_iterations: int | None = None) -> dict:
    """Train RL^2 through the run harness (:func:`metarl.algos.harness.run`); returns its summary with
    ``eval``: ``{name: (mean, standard error)}`` of RL^2 and the baselines on held-out tasks.

    ``run_dir`` (or None: no files) receives ``config.json``, ``progress.csv`` (one row per update),
    TensorBoard events when ``tensorboard`` is installed, ``checkpoint.pt`` (every
    ``checkpoint_minutes``, at the end and on Ctrl-C) and ``summary.json``. ``resume=True`` continues
    from ``run_dir``'s checkpoint with the results of an uninterrupted run (same machine and backend);
    ``overwrite=True`` starts over in a directory that holds a run. ``max_iterations`` stops early.
    """
    return harness.run(RL2Learner(cfg), run_dir, resume=resume, overwrite=overwrite, progress=progress,
                       max_iterations=max_iterations, progress_keys=("trial_return", "success_rate",
                                                                     "env_steps_per_s"))


def report(policy, cfg: RL2Config, num_tasks: int | None = None) -> dict:
    """RL^2 and the baselines on ``num_tasks`` (default ``cfg.eval_tasks``) held-out tasks:
    ``{"eval": {name: (mean, standard error)}}``; on a ``MetaWorld-*`` env the benchmark's metric on as many
    of its test tasks instead (:func:`metaworld_report`; the package's own protocol is 200)."""
    if cfg.env.startswith("MetaWorld-"):
        return metaworld_report(policy, cfg, num_tasks or cfg.eval_tasks)
    out = {"rl2": mean_se(evaluate(policy, cfg, num_tasks))}
    for name, vals in baselines(cfg, num_tasks).items():
        out[name] = mean_se(vals)
    return {"eval": out}


def load_policy(run_dir) -> tuple[RecurrentActorCritic, RL2Config]:
    """The policy and config of a run directory (from its checkpoint)."""
    ck = harness.load_checkpoint(run_dir, RL2Learner.kind)
    cfg = RL2Config(**ck["config"])
    policy = make_policy(cfg, make_env(cfg, 1))
    policy.load_state_dict(ck["learner"]["policy"])
    return policy, cfg


__all__ = ["RL2Config", "RL2Learner", "train", "evaluate", "baselines", "report", "load_policy", "make_env",
           "make_policy", "ppo_update", "ReturnNormalizer", "MetaWorldAgent", "metaworld_report"]
