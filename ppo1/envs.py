"""Atari environments: name parsing, the training/evaluation vector env, the gymnasium path.

Two backends give the same observations and the same semantics:
- "ale": ale-py's C++ vector env (threads, preprocessing in C++), the training backend;
- "gym": gymnasium's AtariEnv + AtariPreprocessing + FrameStackObservation in a SyncVectorEnv,
  the path used for play, movie and the tests that compare the two.
Both run with raw rewards and real game ends; life-loss episode ends, reward clipping and the
real-score bookkeeping are done once, here, in AtariVecEnv. Envs never touch torch.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass, field

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from ppo1.config import ConfigError

gym.register_envs(ale_py)

NOOP_MAX = 30  # DQN (Mnih et al. 2015) / baselines NoopResetEnv
FRAME_SKIP = 4  # baselines MaxAndSkipEnv(skip=4): max-pool over the last 2 of 4 frames
MAX_FRAMES = 108_000  # 30 minutes at 60 Hz, the DQN / PPO-paper episode cap
STICKY_V5 = 0.25  # ALE/*-v5 sticky actions (Machado et al. 2018)


@dataclass(frozen=True)
class EnvSpec:
    """What an environment name means."""

    name: str  # as the user wrote it
    game: str  # ale-py ROM id, snake_case: "ms_pacman"
    title: str  # CamelCase: "MsPacman"
    sticky: float  # repeat_action_probability


@functools.cache
def _titles() -> dict[str, str]:
    """CamelCase title -> ROM id for every ROM ale-py ships."""
    return {"".join(p.capitalize() for p in g.split("_")): g for g in ale_py.roms.get_all_rom_ids()}


def parse_env_name(name: str) -> EnvSpec:
    """PongNoFrameskip-v4 and Pong: no sticky actions; ALE/Pong-v5: sticky actions 0.25."""
    m = re.fullmatch(r"ALE/(\w+)-v5", name) or re.fullmatch(r"(\w+?)(NoFrameskip-v4)?", name)
    titles = _titles()
    if m is None or m.group(1) not in titles:
        valid = [f"{t}NoFrameskip-v4" for t in titles] + [f"ALE/{t}-v5" for t in titles]
        valid += list(titles)
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "e.g. PongNoFrameskip-v4"
        raise ConfigError(f"unknown environment {name!r}; {hint}")
    title = m.group(1)
    sticky = STICKY_V5 if name.startswith("ALE/") else 0.0
    return EnvSpec(name=name, game=titles[title], title=title, sticky=sticky)


class FireOnReset(gym.Wrapper):
    """Press FIRE for one frame after reset where the game has it, as ale-py's vector env does."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if "FIRE" in self.env.unwrapped.get_action_meanings():
            self.env.unwrapped.ale.act(ale_py.Action.FIRE)
        return obs, info


def make_gym_env(
    spec: EnvSpec,
    *,
    frame_stack: bool = True,
    noop_max: int = NOOP_MAX,
    sticky: float | None = None,
    render_mode: str | None = None,
) -> gym.Env:
    """One preprocessed Atari env on gymnasium wrappers; observations (stack, 84, 84) uint8."""
    env = gym.make(
        f"ALE/{spec.title}-v5",
        frameskip=1,
        repeat_action_probability=spec.sticky if sticky is None else sticky,
        full_action_space=False,
        max_num_frames_per_episode=MAX_FRAMES,
        render_mode=render_mode,
    )
    env = FireOnReset(env)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=FRAME_SKIP)
    return gym.wrappers.FrameStackObservation(env, 4 if frame_stack else 1, padding_type="zero")


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclass
class Step:
    """What one step of all envs returns. Shapes: N = num_envs."""

    obs: np.ndarray  # (N, stack, 84, 84) uint8, the next observation (a reset one after an end)
    rewards: np.ndarray  # (N,) float32, sign-clipped when clip_rewards
    dones: np.ndarray  # (N,) bool, the episode ended: game over, time limit, or life loss
    truncated: np.ndarray  # (N,) bool, the episode ended by the frame cap (bootstrap it)
    final_obs: np.ndarray | None  # (N, stack, 84, 84), the last observation where dones
    scores: list[float] = field(default_factory=list)  # real game scores of games that ended
    lengths: list[int] = field(default_factory=list)  # their lengths in agent steps
    clipped_returns: list[float] = field(default_factory=list)  # per-episode training returns


class AtariVecEnv:
    """N Atari envs with DeepMind preprocessing and real-score bookkeeping.

    Training semantics (baselines wrap_deepmind): episode ends on life loss, rewards sign-clipped.
    Evaluation semantics (episode_life=False, clip_rewards=False): full games, real rewards.
    """

    def __init__(
        self,
        spec: EnvSpec,
        num_envs: int,
        *,
        seed: int | np.ndarray,
        frame_stack: bool = True,
        episode_life: bool = True,
        clip_rewards: bool = True,
        backend: str = "ale",
        threads: int = 0,
        noop_max: int = NOOP_MAX,
        sticky: float | None = None,
    ):
        self.spec, self.num_envs, self.seed = spec, num_envs, seed
        self.episode_life, self.clip_rewards = episode_life, clip_rewards
        sticky = spec.sticky if sticky is None else sticky
        if backend == "ale":
            self.vec = ale_py.AtariVectorEnv(
                spec.game,
                num_envs,
                num_threads=threads or min(num_envs, default_threads()),
                repeat_action_probability=sticky,
                max_num_frames_per_episode=MAX_FRAMES,
                autoreset_mode=AutoresetMode.SAME_STEP,
                stack_num=4 if frame_stack else 1,
                frameskip=FRAME_SKIP,
                noop_max=noop_max,
                episodic_life=False,  # life loss is handled below: the game must go on
                reward_clipping=False,  # real scores are logged; clipping is done below
                use_fire_reset=True,
            )
        elif backend == "gym":
            make = functools.partial(
                make_gym_env, spec, frame_stack=frame_stack, noop_max=noop_max, sticky=sticky
            )
            self.vec = gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        self.observation_shape: tuple[int, ...] = self.vec.single_observation_space.shape
        self.num_actions: int = int(self.vec.single_action_space.n)
        self._score = np.zeros(num_envs, dtype=np.float64)
        self._length = np.zeros(num_envs, dtype=np.int64)
        self._clipped = np.zeros(num_envs, dtype=np.float64)
        self._lives = np.zeros(num_envs, dtype=np.int64)

    def reset(self) -> np.ndarray:
        """Start new games; env i gets seed[i], or seed + i for an int seed."""
        seeds = np.asarray(self.seed) + (0 if np.ndim(self.seed) else np.arange(self.num_envs))
        if isinstance(self.vec, gym.vector.SyncVectorEnv):
            obs, info = self.vec.reset(seed=seeds.tolist())
        else:
            obs, info = self.vec.reset(seed=seeds)
        self._lives[:] = info["lives"]
        self._score[:] = self._length[:] = self._clipped[:] = 0
        return obs

    def step(self, actions: np.ndarray) -> Step:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Start stepping; the ale backend's C++ threads run while Python does other work."""
        if isinstance(self.vec, gym.vector.SyncVectorEnv):
            self._actions = actions
        else:
            self.vec.send(actions)

    def step_wait(self) -> Step:
        if isinstance(self.vec, gym.vector.SyncVectorEnv):
            obs, raw, terminated, truncated, info = self.vec.step(self._actions)
        else:
            obs, raw, terminated, truncated, info = self.vec.recv()
        game_over = terminated | truncated
        lives = np.asarray(info["lives"])
        # After a game over the reported lives are the new game's, so only compare the others.
        life_lost = ~game_over & (lives < self._lives)
        self._lives[:] = lives
        raw = raw.astype(np.float64)
        rewards = np.sign(raw) if self.clip_rewards else raw  # baselines ClipRewardEnv
        self._score += raw
        self._length += 1
        self._clipped += rewards
        dones = game_over | life_lost if self.episode_life else game_over
        step = Step(
            obs=obs,
            rewards=rewards.astype(np.float32),
            dones=dones,
            truncated=truncated & dones,
            final_obs=info.get("final_obs") if game_over.any() else None,
        )
        if step.final_obs is not None and step.final_obs.dtype == object:
            step.final_obs = np.stack([o if o is not None else obs[0] for o in step.final_obs])
        if dones.any():
            step.clipped_returns = self._clipped[dones].tolist()
            self._clipped[dones] = 0
        if game_over.any():
            step.scores = self._score[game_over].tolist()
            step.lengths = self._length[game_over].tolist()
            self._score[game_over] = 0
            self._length[game_over] = 0
        return step

    def close(self) -> None:
        self.vec.close()
