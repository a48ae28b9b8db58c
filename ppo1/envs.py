"""Environments: the training/evaluation vector env, the gymnasium path (and the rendering env of
movie, play and --capture_video). What a name means and the protocols: ppo1.envspec.

Atari games have two backends that give the same observations and the same semantics:
- "ale": ale-py's C++ vector env (threads, preprocessing in C++), the training backend;
- "gym": gymnasium's AtariEnv + AtariPreprocessing + FrameStackObservation in a SyncVectorEnv,
  the path used for play, movie and the tests that compare the two.
Both run with raw rewards and real game ends; life-loss episode ends, reward clipping and the
real-score bookkeeping are done once, here, in VecEnv. Any other gymnasium env with a Box
observation and Discrete or Box actions (CartPole-v1, HalfCheetah-v5, ...) runs in gymnasium's
SyncVectorEnv under the same bookkeeping. Envs never touch torch.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from ppo1.device import env_threads
from ppo1.envspec import FRAME_SKIP, MAX_FRAMES, NOOP_MAX, EnvSpec, default_protocol, protocol_settings
from ppo1.errors import ConfigError, first_line

gym.register_envs(ale_py)
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stderr: errors stay one line


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
    """One preprocessed Atari env on gymnasium wrappers; observations (stack, 84, 84) uint8. Other
    envs as gymnasium makes them, Box actions clipped to the bounds on the way in."""
    if not spec.atari:
        env = gym.make(spec.name, render_mode=render_mode)
        return gym.wrappers.ClipAction(env) if isinstance(env.action_space, gym.spaces.Box) else env
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


def render_env(
    spec: EnvSpec, render_mode: str | None, frame_stack: bool, protocol: str | None = None
) -> gym.Env:
    """One env of `spec` that renders (played under `protocol`, default the training one); a render
    that cannot work here (pygame missing, no OpenGL for MuJoCo) is a one-line error up front."""
    noop_max, sticky = protocol_settings(protocol or default_protocol(spec), spec)
    env = None
    try:
        env = make_gym_env(
            spec, frame_stack=frame_stack, noop_max=noop_max, sticky=sticky, render_mode=render_mode
        )
        if render_mode == "rgb_array" and not spec.atari:
            env.reset(seed=0)
            env.render()
    except Exception as e:
        if env is not None:
            env.close()
        if spec.atari:
            raise
        first = first_line(e)
        raise ConfigError(f"cannot render {spec.name} here: {first}") from None
    return env


@dataclass
class Step:
    """What one step of all envs returns. Shapes: N = num_envs."""

    obs: np.ndarray  # (N, stack, 84, 84) uint8 (Atari) or (N, D) float32: the next observation
    rewards: np.ndarray  # (N,) float32, sign-clipped when clip_rewards
    dones: np.ndarray  # (N,) bool, the episode ended: game over, time limit, or life loss
    truncated: np.ndarray  # (N,) bool, the episode ended by the frame cap (bootstrap it)
    final_obs: np.ndarray | None  # the last observation where dones
    scores: list[float] = field(default_factory=list)  # real game scores of games that ended
    lengths: list[int] = field(default_factory=list)  # their lengths in agent steps
    clipped_returns: list[float] = field(default_factory=list)  # per-episode training returns


class VecEnv:
    """N envs with real-score bookkeeping; Atari games with DeepMind preprocessing.

    Atari training semantics (baselines wrap_deepmind): episode ends on life loss, rewards
    sign-clipped. Evaluation semantics (episode_life=False, clip_rewards=False): full games, real
    rewards. Other gymnasium envs: their own episodes (life loss never applies), Box actions
    clipped to the bounds when sent (make_gym_env; the log-prob is of the unclipped action).
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
        if backend == "ale" and spec.atari:
            self.vec = ale_py.AtariVectorEnv(
                spec.game,
                num_envs,
                num_threads=env_threads(threads, num_envs),
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
        elif backend == "gym" or not spec.atari:
            make = functools.partial(
                make_gym_env, spec, frame_stack=frame_stack, noop_max=noop_max, sticky=sticky
            )
            self.vec = gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        self.observation_space, self.action_space = (
            self.vec.single_observation_space,
            self.vec.single_action_space,
        )
        check_spaces(spec, self.observation_space, self.action_space)
        self.observation_shape: tuple[int, ...] = self.observation_space.shape
        self.num_actions, self.discrete = action_dims(self.action_space)
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
        self._lives[:] = info.get("lives", 0)
        self._score[:] = self._length[:] = self._clipped[:] = 0
        return self._obs(obs)

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        return obs if self.spec.atari else obs.astype(np.float32)

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
        lives = np.asarray(info.get("lives", self._lives))
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
            obs=self._obs(obs),
            rewards=rewards.astype(np.float32),
            dones=dones,
            # gymnasium's TimeLimit can set both flags on the last allowed step: a real terminal
            # state is never bootstrapped.
            truncated=truncated & ~terminated,
            final_obs=info.get("final_obs") if game_over.any() else None,
        )
        if step.final_obs is not None and step.final_obs.dtype == object:
            step.final_obs = self._obs(np.stack([o if o is not None else obs[0] for o in step.final_obs]))
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


@functools.cache
def probe_spaces(spec: EnvSpec) -> tuple[gym.Space, gym.Space]:
    """The env's observation and action spaces (one env made and closed; Atari: the raw game's)."""
    try:
        with warnings.catch_warnings():  # e.g. MuJoCo's deprecation notices: errors stay one line
            warnings.simplefilter("ignore")
            if spec.atari:
                env = gym.make(f"ALE/{spec.title}-v5", full_action_space=False)
            else:
                env = gym.make(spec.name)
    except (ImportError, gym.error.Error) as e:
        first = first_line(e)
        raise ConfigError(f"cannot make {spec.name} here: {first}") from None
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def check_env(spec: EnvSpec) -> None:
    """The env can be made here and its spaces fit a policy (ConfigError, one line, if not)."""
    if not spec.atari:
        check_spaces(spec, *probe_spaces(spec))


def env_dims(spec: EnvSpec, frame_stack: bool) -> tuple[tuple[int, ...], int, bool]:
    """What the policy sees: observation shape, number of actions (Box: action dimension), discrete."""
    observation_space, action_space = probe_spaces(spec)
    shape = (4 if frame_stack else 1, 84, 84) if spec.atari else observation_space.shape
    return (shape, *action_dims(action_space))


def action_dims(action_space: gym.Space) -> tuple[int, bool]:
    """(number of actions, True) for Discrete; (action dimension, False) for Box."""
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.n), True
    return int(action_space.shape[0]), False


def check_spaces(spec: EnvSpec, observation_space: gym.Space, action_space: gym.Space) -> None:
    """What the policies handle: Atari frames, or a flat Box observation with Discrete or Box actions."""
    if spec.atari:
        return
    box = isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1
    box_actions = isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
    if not box or not (isinstance(action_space, gym.spaces.Discrete) or box_actions):
        raise ConfigError(
            f"{spec.name} has observations {observation_space} and actions {action_space}; ppo1 "
            "handles a flat Box observation with Discrete or Box actions, and Atari games"
        )
