"""Experience collection (baselines pposgd_simple.traj_segment_generator), GAE, and the segment as
the unit the learner takes: its minibatches.

One batched forward pass per step for all N envs, into preallocated storage. Shapes: T is the
horizon (timesteps_per_actorbatch), N the number of envs in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from ppo1.config import Config
from ppo1.envs import Step, VecEnv
from ppo1.policies import Policy
from ppo1.timer import Timer


class Batch(NamedTuple):
    """Samples of a segment, flat (B, ...): a minibatch, what the loss takes (SB3's
    RolloutBufferSamples)."""

    obs: torch.Tensor  # (B, C, 84, 84) uint8 frames, or (B, D) float32
    actions: torch.Tensor  # (B,) int64, or (B, A) float32 for Box actions
    log_probs: torch.Tensor  # log pi_old(a|s)
    values: torch.Tensor  # V_old(s), for value clipping
    advantages: torch.Tensor
    returns: torch.Tensor


@dataclass
class Segment:
    """One iteration's experience, with its advantages and returns. Tensors are (T, N) unless noted."""

    obs: torch.Tensor  # (T, N, C, 84, 84) uint8 frames, or (T, N, D) float32
    actions: torch.Tensor  # int64, or (T, N, A) float32 for Box actions
    log_probs: torch.Tensor  # log pi_old(a|s), stored at collection time: no second network
    values: torch.Tensor  # V(s) at collection time
    rewards: torch.Tensor  # clipped; plus gamma * V(final obs) where the time limit cut it
    dones: torch.Tensor  # 1.0 where the episode ended after this step
    advantages: torch.Tensor  # GAE(lambda)
    returns: torch.Tensor  # TD(lambda) returns: advantages + values
    scores: list[float] = field(default_factory=list)  # real scores of games ended
    lengths: list[int] = field(default_factory=list)
    clipped_returns: list[float] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return self.rewards.numel()

    def flat(self) -> Batch:
        """Every sample, (T * N, ...)."""
        B = self.num_samples
        fields = (self.obs, self.actions, self.log_probs, self.values, self.advantages, self.returns)
        return Batch(*(x.reshape(B, *x.shape[2:]) for x in fields))

    def minibatches(self, size: int, generator: torch.Generator, advantages: torch.Tensor) -> Iterator[Batch]:
        """One epoch: every sample once, in an order drawn from `generator`, in minibatches of `size`;
        baselines' Dataset.iterate_once drops the last partial one, and so do we. advantages: (T * N,),
        the ones to hand out (standardized over the iteration, or as collected)."""
        batch = self.flat()._replace(advantages=advantages)
        B = self.num_samples
        perm = torch.randperm(B, generator=generator).to(self.obs.device)
        for start in range(0, B - size + 1, size):
            idx = perm[start : start + size]
            yield Batch(*(x[idx] for x in batch))


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
        policy: Policy,
        cfg: Config,
        device: torch.device,
        timer: Timer | None = None,
    ):
        """cfg: the horizon (timesteps_per_actorbatch), gamma and lambda; timer: where the seconds of
        env stepping, inference and GAE go (the trainer's)."""
        self.envs = envs if isinstance(envs, list) else [envs]
        self.policy, self.device = policy, device
        self.horizon, self.gamma, self.lam = cfg.timesteps_per_actorbatch, cfg.gamma, cfg.lam
        self.timer = timer or Timer()
        bounds = np.cumsum([0] + [e.num_envs for e in self.envs])
        self.columns = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        T, N = self.horizon, int(bounds[-1])
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

    @property
    def storage(self) -> tuple[torch.Tensor, ...]:
        """obs, actions, log_probs, values, rewards, dones: written in place every iteration."""
        return self.obs, self.actions, self.log_probs, self.values, self.rewards, self.dones

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

    def _receive(self, t: int, k: int) -> Step:
        """Group k's step t: its rewards and ends into storage; returns the step (its finished games)."""
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
        return step

    def collect(self, should_stop=lambda: False) -> Segment | None:
        """Run T steps in every env, then GAE; None if should_stop() became true on the way."""
        scores, lengths, clipped = [], [], []
        groups = range(len(self.envs))
        for k in groups:
            self._act(0, k)
        for t in range(self.horizon):
            for k in groups:
                step = self._receive(t, k)
                scores += step.scores
                lengths += step.lengths
                clipped += step.clipped_returns
                if t + 1 < self.horizon:
                    self._act(t + 1, k)
            if should_stop():
                return None
        with self.timer("inference"):
            last_values = self.policy.get_value(torch.cat(self.next_obs))
        with self.timer("gae"):
            advantages, returns = compute_gae(
                self.rewards, self.values, self.dones, last_values, self.gamma, self.lam
            )
        return Segment(*self.storage, advantages, returns, scores, lengths, clipped)
