"""A trained agent, loaded from its run folder, and how it picks actions: for evaluate, movie, play.

`config.AgentOptions` holds what those three commands share (which run, which games, how the
agent acts), built once from the command line; `open_agent()` checks it and loads the `Agent`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from ppo1 import runfiles
from ppo1.checkpoint import AGENT_HINT, CHECKPOINT, FILE_HINT, AgentState, save
from ppo1.config import Config, resolve
from ppo1.device import pick_device
from ppo1.envs import check_env, env_dims, render_env
from ppo1.envspec import EnvSpec, default_protocol, describe_protocol, parse_env_name
from ppo1.errors import ConfigError, first_line
from ppo1.policies import Policy, make_policy, sample


@dataclass
class Agent:
    """A trained policy with the config it was trained under (`ppo1.load` gives one)."""

    policy: Policy
    cfg: Config  # the run's saved config (the env it was trained on), env_name as used now
    trained_env: str  # the env name it was trained under: sets the default protocol
    step: int  # agent steps trained (0 for an untrained policy)
    path: Path | None  # the checkpoint, None for an untrained policy
    seed: int = 0  # of the generator act() samples with
    _picker: ActionPicker | None = field(default=None, repr=False)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions for observations of `make_env()`'s kind, one (C, 84, 84) / (D,) or a batch: the
        most likely ones, or drawn from a generator seeded with `seed` (as `ppo1 evaluate --seed`)."""
        if self._picker is None:
            self._picker = ActionPicker(self.policy, False, self.seed, next(self.policy.parameters()).device)
        obs = np.asarray(obs)
        one = obs.ndim == len(env_dims(self.spec, self.cfg.frame_stacking)[0])
        actions = self._picker.pick(obs[None] if one else obs, deterministic)
        return actions[0] if one else actions

    def make_env(self, protocol: str | None = None, render_mode: str | None = None) -> gym.Env:
        """One gymnasium env as the agent sees it under `protocol` (default: its training one), with
        the evaluation wrappers: full games, real scores."""
        return render_env(self.spec, render_mode, self.cfg.frame_stacking, self.protocol(protocol))

    def save(self, path: str | Path) -> Path:
        """Write the agent alone, to ship it: its weights, the config it trained under and its step
        count; no optimizer or RNG state (a third of a training checkpoint's size). `ppo1.load`,
        `--checkpoint` and torch.load(weights_only=True) read it."""
        path = Path(path)
        config = dict(self.cfg.to_dict(), env_name=self.trained_env)
        model = {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}
        counters = dict(timesteps=self.step)
        save(path, dict(model=model, config=config, num_actions=self.policy.num_actions, counters=counters))
        return path

    @property
    def name(self) -> str:
        """What the agent's files are named after: its run folder, or a shipped file's own name."""
        if self.path is None or self.path.name == CHECKPOINT:
            return self.path.parent.name if self.path is not None else self.cfg.run_name
        return self.path.stem

    @property
    def spec(self) -> EnvSpec:
        return parse_env_name(self.cfg.env_name)

    def describe(self) -> str:
        if self.path is None:
            return f"an untrained (random) policy, {self.cfg.model_type} network"
        return f"checkpoint {self.path} at step {self.step:,}"

    def protocol(self, requested: str | None) -> str:
        """`requested`, or else the protocol the agent was trained under."""
        return requested or default_protocol(parse_env_name(self.trained_env))

    def headline(self, protocol: str, *details: str) -> str:
        """The first line of evaluate, movie and play: the game, the agent, the protocol, `details`."""
        game = f"{self.spec.title} ({self.cfg.env_name}), {self.describe()}"
        return "; ".join([game, f"protocol {describe_protocol(protocol)}", *details])


def load_agent(
    *,
    env_name: str | None = None,
    checkpoint_dir: str | None = None,
    model_name: str | None = None,
    preset: str | None = None,
    allow_random: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
) -> Agent:
    """The policy of run `<checkpoint_dir>/<model_name>` (empty model_name: <Game>-<preset>), or of
    the checkpoint file `checkpoint`, with the config it was trained under. env_name given
    explicitly must be the checkpoint's game.

    No checkpoint: ConfigError, unless allow_random, which builds a freshly initialized policy
    (seeded with `seed`) for the run's saved config.json, or for the flags given.
    """
    given = dict(env_name=env_name, checkpoint_dir=checkpoint_dir, model_name=model_name, preset=preset)
    given = {k: v for k, v in given.items() if v is not None}
    cfg = resolve(given)
    device = pick_device(device)
    path = Path(checkpoint) if checkpoint is not None else cfg.run_dir / CHECKPOINT
    state, saved = _read_run(path, allow_random, explicit=checkpoint is not None)
    trained_env = cfg.env_name
    if saved is not None:
        trained = parse_env_name(saved["env_name"])
        if env_name is not None and parse_env_name(env_name).game != trained.game:
            where = path if state is not None else cfg.run_dir / runfiles.CONFIG
            raise ConfigError(
                f"{where} is a {trained.title} agent ({saved['env_name']}), "
                f"but --env_name {env_name} is {parse_env_name(env_name).title}"
            )
        cfg = resolve({k: v for k, v in given.items() if k != "env_name"}, base=saved)
        trained_env = saved["env_name"]
        if env_name is not None:
            cfg.env_name = env_name  # the same game; the protocol decides sticky actions / no-ops
    policy = _build_policy(cfg, state, path, seed)
    policy.to(device).eval()
    if state is None:
        return Agent(policy, cfg, trained_env, 0, None, seed)
    return Agent(policy, cfg, trained_env, state.step, path, seed)


def _read_run(path: Path, allow_random: bool, explicit: bool) -> tuple[AgentState | None, dict | None]:
    """(the checkpoint's state, the config it was trained under); no checkpoint: (None, the
    config.json beside it, if any) with allow_random, else ConfigError. explicit: a file the user
    named, which must exist."""
    if path.is_file():
        state = AgentState.load(path, FILE_HINT if explicit else AGENT_HINT)
        return state, state.config
    if explicit:
        raise ConfigError(f"no checkpoint file {path}")
    if allow_random:
        return None, runfiles.read_config(path.parent)
    raise ConfigError(
        f"no checkpoint in {path.parent} (no {CHECKPOINT}): train one with `ppo1 train`, "
        "or pass --allow_random to run an untrained policy"
    )


def _build_policy(cfg: Config, state: AgentState | None, path: Path, seed: int) -> Policy:
    """The checkpoint's weights in the network of its config; no state: fresh weights from `seed`
    (the global torch RNG is left as it was)."""
    spec = parse_env_name(cfg.env_name)
    check_env(spec)
    shape, actions, discrete = env_dims(spec, cfg.frame_stacking)
    if state is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make_policy(cfg, shape, actions, discrete)
    policy = make_policy(cfg, shape, state.num_actions or actions, discrete)
    try:
        policy.load_state_dict(state.model)
    except (RuntimeError, KeyError) as e:
        raise ConfigError(f"checkpoint {path} does not fit its own config ({first_line(e)[:160]})") from None
    return policy


class ActionPicker:
    """Most likely action (deterministic) or a sample drawn from a seeded generator, so that an
    evaluation with the same seed plays the same games; the global torch RNG is left alone."""

    def __init__(self, policy: Policy, deterministic: bool, seed: int, device: torch.device):
        self.policy, self.deterministic, self.device = policy, deterministic, device
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions for a batch of observations (N, ...)."""
        return self.pick(obs, self.deterministic)

    @torch.inference_mode()
    def pick(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        pd, _ = self.policy.dist(torch.from_numpy(np.ascontiguousarray(obs)).to(self.device))
        actions = pd.mode if deterministic else sample(pd, self.generator)
        return actions.cpu().numpy()

    def one(self, obs: np.ndarray) -> int | np.ndarray:
        """The action for one env's observation: an int (Discrete) or an array (Box)."""
        action = self(obs[None])[0]
        return action.item() if action.ndim == 0 else action
