"""PPO on metarl's HalfCheetahVel-v0, in CleanRL's single-file style (after CleanRL's
ppo_continuous_action.py): one file, a dataclass of arguments parsed by tyro, top to bottom.

All copies are one ``metarl.make_vec`` env (MuJoCo's batched rollout under it); CleanRL's gymnasium wrappers
(episode statistics, action clipping, observation and reward normalisation) run on it through
``metarl.envs.to_numpy``. They need gymnasium's default ``next_step`` autoreset, where the step after an
episode's end only resets the copy (its action is ignored, its reward is 0): those steps are left out of
the update. Every episode gets a new target velocity (``env.set_tasks`` on the copies that
ended); with ``--task-in-obs`` (the default) the policy also sees it: the task-conditioned ("oracle") policy
that meta-RL papers report as the upper bound; ``--no-task-in-obs`` gives the task-blind multi-task policy.

Needs the MuJoCo extra: ``pip install -e ".[mujoco,interop]"``.

    python examples/ppo_continuous_halfcheetahvel.py --total-timesteps 5000000
"""
import os
import random
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions.normal import Normal

import metarl
from metarl.envs import to_numpy
from metarl.threads import limit_threads


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    threads: int = 1
    """CPU threads for the agent (torch, BLAS): metarl.threads.limit_threads"""
    physics_threads: int | None = None
    """MuJoCo's threads for the batched physics (None: torch.get_num_threads() at env creation)"""
    log_dir: str = "runs"
    """TensorBoard events go to {log_dir}/{run_name} (when tensorboard is installed)"""

    # Algorithm specific arguments
    env_id: str = "HalfCheetahVel-v0"
    """the id of the metarl environment"""
    max_episode_steps: int = 200
    """episode length (the meta-RL papers' 200)"""
    task_in_obs: bool = True
    """append the target velocity to the policy's input (the task-conditioned upper bound)"""
    total_timesteps: int = 5_000_000
    """total timesteps of the experiments"""
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    num_envs: int = 64
    """the number of parallel env copies"""
    num_steps: int = 200
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 32
    """the number of mini-batches"""
    update_epochs: int = 10
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function as per the paper."""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


def make_env(args):
    """The metarl env (all copies in one object) and CleanRL's wrapper stack on its NumPy view."""
    kwargs = {} if args.physics_threads is None else {"num_threads": args.physics_threads}
    base = metarl.make_vec(args.env_id, args.num_envs, seed=args.seed, autoreset_mode="next_step",
                           max_episode_steps=args.max_episode_steps, **kwargs)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(to_numpy(base))
    envs = gym.wrappers.vector.ClipAction(envs)
    envs = gym.wrappers.vector.NormalizeObservation(envs)
    envs = gym.wrappers.vector.TransformObservation(envs, lambda obs: np.clip(obs, -10, 10))
    envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
    envs = gym.wrappers.vector.TransformReward(envs, lambda reward: np.clip(reward, -10, 10))
    return base, envs


def layer_init(layer, std=2**0.5, bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, act_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        action_mean = self.actor_mean(x)
        action_logstd = self.actor_logstd.expand_as(action_mean)
        action_std = torch.exp(action_logstd)
        probs = Normal(action_mean, action_std)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)


if __name__ == "__main__":
    args = tyro.cli(Args)
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = args.total_timesteps // args.batch_size
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(args.log_dir, run_name))
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
            f"|{key}|{value}|" for key, value in vars(args).items()))
    except ImportError:   # tensorboard is optional: the printed lines are the log
        writer = None

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cpu")
    task_generator = torch.Generator().manual_seed(args.seed)

    # env setup
    base, envs = make_env(args)
    limit_threads(args.threads)   # after the env: Numba's pool start resets torch's threads
    assert isinstance(envs.single_action_space, gym.spaces.Box), "only continuous action space is supported"
    env_obs_dim = int(np.prod(envs.single_observation_space.shape))
    obs_dim = env_obs_dim + int(args.task_in_obs)
    act_dim = int(np.prod(envs.single_action_space.shape))

    agent = Agent(obs_dim, act_dim).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs, obs_dim)).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs, act_dim)).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)

    def policy_input(env_obs, goal):
        """The normalised env observation, and the target velocity (scaled to about [0, 1]) when task_in_obs."""
        x = torch.as_tensor(env_obs, dtype=torch.float32).reshape(args.num_envs, env_obs_dim)
        return torch.cat([x, goal[:, None] / 3.0], 1) if args.task_in_obs else x

    # TRY NOT TO MODIFY: start the game
    global_step = 0
    start_time = time.time()
    base.set_tasks(base.sample_tasks(args.num_envs, generator=task_generator))
    goal = base.tasks.goal_velocity.clone()
    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = policy_input(next_obs, goal)
    next_done = torch.zeros(args.num_envs).to(device)

    for iteration in range(1, args.num_iterations + 1):
        # Annealing the rate if instructed to do so.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            lrnow = frac * args.learning_rate
            optimizer.param_groups[0]["lr"] = lrnow

        # collect
        episode_returns = []
        for step in range(0, args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done

            # ALGO LOGIC: action logic
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob

            # TRY NOT TO MODIFY: execute the game and log data.
            env_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            ended = np.logical_or(terminations, truncations)
            if ended.any():
                # a new target velocity for every copy whose episode ended (the next step resets it)
                ids = torch.from_numpy(np.flatnonzero(ended))
                new = base.sample_tasks(len(ids), generator=task_generator)
                base.set_tasks(new, env_ids=ids)
                goal[ids] = new.goal_velocity
            rewards[step] = torch.tensor(reward, dtype=torch.float32).to(device).view(-1)
            next_obs = policy_input(env_obs, goal)
            next_done = torch.Tensor(ended).to(device)
            if "episode" in infos:
                episode_returns += infos["episode"]["r"][infos["_episode"]].tolist()

        if episode_returns:
            mean_return = float(np.mean(episode_returns))
            print(f"global_step={global_step}, episodic_return={mean_return:.2f}", flush=True)
            if writer is not None:
                writer.add_scalar("charts/episodic_return", mean_return, global_step)

        # advantage: bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards).to(device)
            lastgaelam = 0
            for t in reversed(range(args.num_steps)):
                if t == args.num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        # flatten the batch
        b_obs = obs.reshape((-1, obs_dim))
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1, act_dim))
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # update: Optimizing the policy and value network, on the steps that were transitions (a step whose
        # observation ended an episode is gymnasium's next_step reset step)
        b_inds = np.flatnonzero(dones.reshape(-1).cpu().numpy() == 0)
        clipfracs = []
        for _epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for mb_inds in np.array_split(b_inds, args.num_minibatches):

                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    # calculate approx_kl http://joschu.net/blog/kl-approx.html
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss
                newvalue = newvalue.view(-1)
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds],
                        -args.clip_coef,
                        args.clip_coef,
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
                    v_loss = 0.5 * v_loss_max.mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # log
        sps = int(global_step / (time.time() - start_time))
        print(f"iteration={iteration}, SPS={sps}, value_loss={v_loss.item():.4f}, "
              f"policy_loss={pg_loss.item():.4f}, approx_kl={approx_kl.item():.4f}", flush=True)
        if writer is not None:
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
            writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
            writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
            writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)

    envs.close()
    if writer is not None:
        writer.close()
