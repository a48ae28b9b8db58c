"""What an environment name means (EnvSpec, parse_env_name) and the evaluation protocols.

Light on purpose: the CLI's parser and the config import it, and `ppo1 --help` must answer before
torch or ale-py load, so ale-py's ROM list and gymnasium's registry are read on first use.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from ppo1.errors import ConfigError

FRAME_SKIP = 4  # baselines MaxAndSkipEnv(skip=4): max-pool over the last 2 of 4 frames
MAX_FRAMES = 108_000  # 30 minutes at 60 Hz, the DQN / PPO-paper episode cap
EVAL_SEED = 10**8  # evaluation during training plays games seeded seed + EVAL_SEED + i
NOOP_MAX = 30  # DQN (Mnih et al. 2015) / baselines NoopResetEnv
STICKY_V5 = 0.25  # ALE/*-v5 sticky actions (Machado et al. 2018)
# Evaluation protocols: name -> (no-op starts at most, sticky-action probability). Both Atari ones
# keep the MAX_FRAMES cap.
PROTOCOLS: dict[str, tuple[int, float]] = {
    # DQN (Mnih et al. 2015) / PPO paper: up to 30 no-op starts, deterministic emulator.
    "paper": (NOOP_MAX, 0.0),
    # Machado et al. 2018 ("Revisiting the ALE"): sticky actions 0.25, no no-op starts.
    "machado": (0, STICKY_V5),
    # Not Atari: the env's own episodes and time limit.
    "env": (0, 0.0),
}
MUJOCO_EXTRA = "pip install -e '.[mujoco]'"


@dataclass(frozen=True)
class EnvSpec:
    """What an environment name means."""

    name: str  # as the user wrote it
    game: str  # ale-py ROM id, snake_case: "ms_pacman"; the gymnasium id for other envs
    title: str  # CamelCase: "MsPacman", "CartPole", "HalfCheetah"
    sticky: float  # repeat_action_probability (Atari)
    kind: str = "atari"  # atari, mujoco (gymnasium.envs.mujoco), classic (classic control) or gym

    @property
    def atari(self) -> bool:
        return self.kind == "atari"


@functools.cache
def _titles() -> dict[str, str]:
    """CamelCase title -> ROM id for every ROM ale-py ships."""
    import ale_py.roms  # first use: loads the emulator library

    return {"".join(p.capitalize() for p in g.split("_")): g for g in ale_py.roms.get_all_rom_ids()}


@functools.cache
def _gym_ids() -> dict[str, str]:
    """gymnasium id -> entry point, for every registered env that is not an ALE game."""
    import gymnasium as gym  # first use

    return {
        k: str(v.entry_point) for k, v in gym.registry.items() if not str(v.entry_point).startswith("ale_py")
    }


def _kind(entry_point: str) -> str:
    for module, kind in (("gymnasium.envs.mujoco", "mujoco"), ("gymnasium.envs.classic_control", "classic")):
        if entry_point.startswith(module):
            return kind
    return "gym"


def parse_env_name(name: str) -> EnvSpec:
    """PongNoFrameskip-v4 and Pong: no sticky actions; ALE/Pong-v5: sticky actions 0.25; any other
    registered gymnasium id (CartPole-v1, HalfCheetah-v5) as it is."""
    m = re.fullmatch(r"ALE/(\w+)-v5", name) or re.fullmatch(r"(\w+?)(NoFrameskip-v4)?", name)
    titles = _titles()
    if m is not None and m.group(1) in titles:
        title = m.group(1)
        sticky = STICKY_V5 if name.startswith("ALE/") else 0.0
        return EnvSpec(name=name, game=titles[title], title=title, sticky=sticky)
    gym_ids = _gym_ids()
    if name in gym_ids:
        kind = _kind(gym_ids[name])
        if kind == "mujoco":
            try:
                import mujoco  # noqa: F401  (an optional extra)
            except ImportError:
                raise ConfigError(f"{name} needs MuJoCo, an optional extra: {MUJOCO_EXTRA}") from None
        return EnvSpec(name=name, game=name, title=name.split("-v")[0].split("/")[-1], sticky=0.0, kind=kind)
    valid = [f"{t}NoFrameskip-v4" for t in titles] + [f"ALE/{t}-v5" for t in titles]
    valid += list(titles) + list(gym_ids)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "e.g. PongNoFrameskip-v4 or CartPole-v1"
    raise ConfigError(f"unknown environment {name!r}; {hint}")


def default_protocol(spec: EnvSpec) -> str:
    """The protocol an agent trained on `spec` was trained under: ALE/*-v5 (sticky) -> machado."""
    if not spec.atari:
        return "env"
    return "machado" if spec.sticky > 0 else "paper"


def protocol_settings(protocol: str, spec: EnvSpec | None = None) -> tuple[int, float]:
    """(no-op starts at most, sticky-action probability) of `protocol`; ConfigError for an unknown
    name, or for one that is not for `spec` (env for an Atari game, paper or machado for others)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown --protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if spec is not None and spec.atari == (protocol == "env"):
        raise ConfigError(
            f"--protocol {protocol} is not for {spec.name}; use --protocol {default_protocol(spec)}"
            + (" (paper or machado)" if spec.atari else "")
        )
    return PROTOCOLS[protocol]


def describe_protocol(protocol: str) -> str:
    """The protocol in words, for the commands' first line."""
    if protocol == "env":
        return "env (the env's own episodes and time limit)"
    noop_max, sticky = protocol_settings(protocol)
    noops = f"up to {noop_max} no-op starts" if noop_max else "no no-op starts"
    sticky_text = f"sticky actions {sticky:g}" if sticky else "no sticky actions"
    return f"{protocol} ({noops}, {sticky_text}, {MAX_FRAMES:,}-frame cap)"
