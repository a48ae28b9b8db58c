"""The Python API: the code the ppo1 command runs, called from a script or a notebook.

import ppo1
agent = ppo1.train(env_name="CartPole-v1", env_steps=20_000)  # or resume: the same call again
agent = ppo1.load("checkpoints/CartPole-classic")             # a run folder or a checkpoint file
actions = agent.act(observations)                             # sampled; deterministic=True: argmax
ppo1.evaluate_policy(agent, episodes=10)                      # as `ppo1 evaluate`
agent.save("pong.pt")                                          # weights and config only, to ship
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ppo1.agent import Agent, load_agent
from ppo1.checkpoint import CHECKPOINT
from ppo1.config import Config
from ppo1.errors import ConfigError
from ppo1.evaluate import evaluate
from ppo1.launch import start


def train(config: Config | None = None, *, fresh: bool = False, **settings) -> Agent:
    """Start a run, or resume it, exactly as `ppo1 train` with these settings: a Config and/or
    keyword arguments named as the flags (env_name="PongNoFrameskip-v4", preset="wallclock",
    env_steps=2_000_000, ...); keywords win over the Config, whose fields left at their defaults
    yield to the preset. Writes the same run folder and logs; returns the agent of its last
    checkpoint."""
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(unknown)}; the settings are Config's fields")
    # A Config's fields left at their defaults yield to the preset, as flags not given do.
    defaults = Config().to_dict()
    given = {k: v for k, v in (config.to_dict() if config is not None else {}).items() if v != defaults[k]}
    overrides = {**given, **settings}
    cfg, _ = start(overrides, fresh=fresh)
    return load(cfg.run_dir)


def load(path: str | Path, *, seed: int = 0, device: str = "cpu") -> Agent:
    """The agent of a run folder (holding checkpoint.pt) or of a checkpoint file, on `device`; `seed`
    seeds the generator its sampled actions come from."""
    path = Path(path)
    file = path / CHECKPOINT if path.is_dir() else path
    return load_agent(checkpoint=file, seed=seed, device=device)


def evaluate_policy(
    agent: Agent,
    episodes: int = 10,
    *,
    protocol: str | None = None,
    deterministic: bool = False,
    seed: int = 0,
) -> dict:
    """Full games as `ppo1 evaluate --seed seed` plays them: the same games, the same action draws,
    the same result (mean, std, min, max, scores, lengths, protocol, ...)."""
    return evaluate(
        agent.policy,
        agent.cfg,
        episodes,
        agent.protocol(protocol),
        deterministic,
        seed,
        next(agent.policy.parameters()).device,
        checkpoint_step=agent.step if agent.path is not None else None,
    )
