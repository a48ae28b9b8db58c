"""Where the network runs and on how many threads: --device, --torch_threads, --env_threads.

OMP_WAIT_POLICY is left to OpenMP's default (idle threads spin a while, then sleep): in the large
network's loop it ran 26% faster than sleeping at once (PASSIVE, ppo1's earlier setting) and 7%
faster than spinning always (ACTIVE) (benchmarks/README.md, "Which OpenMP wait policy runs the loop
fastest?").
"""

from __future__ import annotations

import os

import torch

from ppo1.config import DEVICES
from ppo1.errors import ConfigError


def pick_device(name: str | torch.device) -> torch.device:
    """--device: auto (CUDA where available), cpu or cuda."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    if name not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    return torch.device(name)


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def torch_threads(requested: int) -> int:
    """--torch_threads: 0 picks the number of cores."""
    return requested or default_threads()


def env_threads(requested: int, num_envs: int) -> int:
    """--env_threads: 0 picks one per env, at most the number of cores."""
    return requested or min(num_envs, default_threads())
