"""Experience collection (baselines pposgd_simple.traj_segment_generator) and GAE.

One batched forward pass per step for all N envs, into preallocated storage. Shapes: T is the
horizon (timesteps_per_actorbatch), N the number of envs in this process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ppo1.envs import VecEnv
from ppo1.logger import Timer


@dataclass
class Segment:
    """One iteration's experience. All tensors are (T, N) unless noted."""

    obs: torch.Tensor  # (T, N, C, 84, 84) uint8 frames, or (T, N, D) float32
    actions: torch.Tensor  # int64, or (T, N, A) float32 for Box actions
    log_probs: torch.Tensor  # log pi_old(a|s), stored at collection time: no second network
    values: torch.Tensor  # V(s) at collection time
    rewards: torch.Tensor  # clipped; plus gamma * V(final obs) where the time limit cut it
    dones: torch.Tensor  # 1.0 where the episode ended after this step
    last_values: torch.Tensor  # (N,) V of the observation after the last step
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None  # TD(lambda) returns: advantages + values
    scores: list[float] = field(default_factory=list)  # real scores of games ended
    lengths: list[int] = field(default_factory=list)
    clipped_returns: list[float] = field(default_factory=list)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) advantages and TD(lambda) returns (baselines add_vtarg_and_adv), all envs at once.

    delta_t = r_t + gamma V(s_t+1) (1 - done_t) - V(s_t);  A_t = delta_t + gamma lam (1 - done_t) A_t+1
    """
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(T)):
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * nonterminal - values[t]
        next_adv = delta + gamma * lam * nonterminal * next_adv
        advantages[t] = next_adv
        next_values = values[t]
    return advantages, advantages + values


class Rollout:
    """Steps the envs with the current policy; keeps the envs' state between iterations.

    The envs may come in groups (columns of the batch): while one group's emulators step in
    ale-py's C++ threads, the network acts for the other, so env stepping and inference overlap.
    Every action is still drawn from the current policy; one group is the plain serial loop.
    """

    def __init__(
        self,
        envs: VecEnv | list[VecEnv],
        policy: torch.nn.Module,
        horizon: int,
        gamma: float,
        device: torch.device,
        timer: Timer | None = None,
    ):
        """timer: where the seconds of env stepping and of inference go (the trainer's)."""
        self.envs = envs if isinstance(envs, list) else [envs]
        self.policy, self.horizon, self.gamma, self.device = policy, horizon, gamma, device
        self.timer = timer or Timer()
        bounds = np.cumsum([0] + [e.num_envs for e in self.envs])
        self.columns = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        T, N = horizon, int(bounds[-1])
        self.next_obs = [torch.from_numpy(e.reset()).to(device) for e in self.envs]
        first = self.envs[0]
        self.obs = torch.zeros((T, N, *first.observation_shape), dtype=self.next_obs[0].dtype, device=device)
        if first.discrete:
            self.actions = torch.zeros((T, N), dtype=torch.int64, device=device)
        else:
            self.actions = torch.zeros((T, N, first.num_actions), device=device)
        self.log_probs = torch.zeros((T, N), device=device)
        self.values = torch.zeros((T, N), device=device)
        self.rewards = torch.zeros((T, N), device=device)
        self.dones = torch.zeros((T, N), device=device)

    def _act(self, t: int, k: int) -> None:
        """Store group k's observation at step t, choose its actions and start its envs."""
        with self.timer("inference"):
            cols = self.columns[k]
            self.obs[t, cols] = self.next_obs[k]
            actions, log_probs, values = self.policy.act(self.next_obs[k])
            self.actions[t, cols] = actions
            self.log_probs[t, cols] = log_probs
            self.values[t, cols] = values
            self.envs[k].step_async(actions.cpu().numpy())

    def _receive(self, t: int, k: int, seg: Segment) -> None:
        with self.timer("env"):
            step = self.envs[k].step_wait()
        with self.timer("inference"):
            rewards = torch.from_numpy(step.rewards)
            if step.truncated.any():
                # Time limit is not death: bootstrap from the value of the final observation
                # (SB3 on_policy_algorithm.py). baselines treats it as a terminal state.
                idx = np.flatnonzero(step.truncated)
                final_values = self.policy.get_value(torch.from_numpy(step.final_obs[idx]).to(self.device))
                rewards[idx] += self.gamma * final_values.cpu()
            cols = self.columns[k]
            self.rewards[t, cols] = rewards.to(self.device)
            self.dones[t, cols] = torch.from_numpy(step.dones).to(self.device)
            self.next_obs[k] = torch.from_numpy(step.obs).to(self.device)
        seg.scores += step.scores
        seg.lengths += step.lengths
        seg.clipped_returns += step.clipped_returns

    def collect(self, should_stop=lambda: False) -> Segment | None:
        """Run T steps in every env; None if should_stop() became true on the way."""
        seg = Segment(self.obs, self.actions, self.log_probs, self.values, self.rewards, self.dones, None)
        groups = range(len(self.envs))
        for k in groups:
            self._act(0, k)
        for t in range(self.horizon):
            for k in groups:
                self._receive(t, k, seg)
                if t + 1 < self.horizon:
                    self._act(t + 1, k)
            if should_stop():
                return None
        with self.timer("inference"):
            seg.last_values = self.policy.get_value(torch.cat(self.next_obs))
        return seg
