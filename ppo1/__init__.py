"""ppo1: PPO (Schulman et al. 2017) for Atari from pixels, faithful to OpenAI baselines ppo1.

The public Python API (nothing else is promised): `train`, `load`, `evaluate_policy`, `Agent`,
`Config`, `PRESETS`. They load on first use, so `import ppo1` stays light.
"""

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
