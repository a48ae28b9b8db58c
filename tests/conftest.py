"""Shared helpers: running the real CLI, tiny training flags, reading the run's CSV files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The one tiny config of the suite: the smallest settings that still exercise every part of an
# iteration: 2 envs x 32 steps = 64 agent steps per iteration, minibatches of 2 x 8 samples, the small
# network, one thread each for torch and ale-py. TINY_CONFIG for start() in this process, TINY for
# the command line.
TINY_CONFIG = dict(
    num_envs=2,
    timesteps_per_actorbatch=32,
    optim_batchsize=8,
    model_type="small",
    torch_threads=1,
    env_threads=1,
    device="cpu",
)
TINY = [word for k, v in TINY_CONFIG.items() for word in (f"--{k}", str(v))]
BATCH = 64  # agent steps per iteration with TINY


class Exploit:
    """A pickle payload: unpickling it runs `touch MARKER` (what weights_only loading must refuse)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_cli(
    args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m ppo1 ARGS` in cwd, as a user would type it; env: variables to add (PYTHONPATH is
    put in front of the one there is)."""
    full = cli_env()
    for k, v in (env or {}).items():
        full[k] = os.pathsep.join([v, full[k]]) if k == "PYTHONPATH" and full.get(k) else v
    return subprocess.run(
        [sys.executable, "-m", "ppo1", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
    )


def popen_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ppo1", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


def read_progress(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "progress.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def timesteps(rows: list[dict[str, str]]) -> list[int]:
    return [int(float(r["TimestepsSoFar"])) for r in rows]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = None if p.is_dir() else p.read_bytes()
    return out


@pytest.fixture(scope="session")
def cli():
    """The helpers, as one object, for the test modules."""

    class Helpers:
        TINY = TINY
        BATCH = BATCH
        run = staticmethod(run_cli)
        popen = staticmethod(popen_cli)
        progress = staticmethod(read_progress)
        timesteps = staticmethod(timesteps)
        snapshot = staticmethod(snapshot)

    return Helpers


TRAIN_TINY = ["train", *TINY, "--env_steps", "256"]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A checkpoint_dir holding run `tiny`: 256 agent steps of real training on Pong, by the CLI,
    shared by the evaluate and video tests."""
    root = tmp_path_factory.getbasetemp() / "ppo1-tiny-run"
    if not (root / "tiny" / "checkpoint.pt").exists():
        root.mkdir(exist_ok=True)
        r = run_cli(
            [*TRAIN_TINY, "--checkpoint_dir", str(root), "--model_name", "tiny"], cwd=root, timeout=300
        )
        assert r.returncode == 0, r.stderr[-2000:]
    return root


def one_error_line(capsys, argv: list[str], command: str | None = None) -> str:
    """Run `ppo1 ARGV` in-process: exit 2 and exactly one `ppo1 <command>: error:` line on stderr."""
    from ppo1.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"ppo1 {command or argv[0]}: error: ")
    return lines[0]
