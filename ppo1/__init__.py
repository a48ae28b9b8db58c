"""ppo1: PPO (Schulman et al. 2017) for Atari from pixels, faithful to OpenAI baselines ppo1.

The public Python API (nothing else is promised): `train`, `load`, `evaluate_policy`, `Agent`,
`Config`, `PRESETS`. They load on first use, so `import ppo1` stays light.
"""

import os as _os

# Idle OpenMP threads sleep instead of spinning, so that torch's workers leave the cores to
# ale-py's emulator threads between forward passes (measured: README, Throughput). libgomp reads
# it when torch is first imported, after this line; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["PRESETS", "Agent", "Config", "evaluate_policy", "load", "train"]
_HOMES = {"train": "api", "load": "api", "evaluate_policy": "api", "Agent": "agent"}
_HOMES |= {"Config": "config", "PRESETS": "config"}


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"ppo1.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'ppo1' has no attribute {name!r}")
