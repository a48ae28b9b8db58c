"""Faults on real processes: SIGTERM saves and exits 0; a failing disk keeps the last checkpoint."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time

import torch

TINY = [
    "--num_envs", "2", "--timesteps_per_actorbatch", "32", "--optim_batchsize", "16",
    "--torch_threads", "1", "--env_threads", "1", "--save_interval", "1",
]  # fmt: skip


def wait_for(path, timeout=90.0):
    deadline = time.time() + timeout
    while time.time() < deadline and not path.exists():
        time.sleep(0.1)
    assert path.exists(), f"{path} did not appear"


def test_sigterm_saves_and_exits_zero(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "ppo1",
        "train",
        *TINY,
        "--env_steps",
        "1000000",
        "--checkpoint_dir",
        str(tmp_path),
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "Pong-ppo-paper" / "checkpoint.pt"
    wait_for(ckpt)
    p.send_signal(signal.SIGTERM)
    sent = time.time()
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err[-2000:]
    assert time.time() - sent < 10
    assert "SIGTERM: saved" in out
    state = torch.load(ckpt, weights_only=True)
    assert state["counters"]["timesteps"] > 0 and state["counters"]["timesteps"] % 64 == 0


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_failing_disk_keeps_the_last_checkpoint(tmp_path):
    """Writes past 200 kB fail at the OS level (RLIMIT_FSIZE), as on a full disk."""
    run = [sys.executable, "-m", "ppo1", "train", *TINY, "--checkpoint_dir", str(tmp_path)]
    ok = subprocess.run(run + ["--env_steps", "64"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    ckpt = tmp_path / "Pong-ppo-paper" / "checkpoint.pt"
    before = ckpt.read_bytes()
    p = subprocess.run(
        run + ["--env_steps", "256"], capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size
    )
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "cannot write checkpoint" in lines[0] and str(ckpt) in lines[0]
    assert ckpt.read_bytes() == before  # the previous checkpoint is intact
    assert not list(ckpt.parent.glob(".checkpoint-*"))  # no temporary file left behind
    assert torch.load(ckpt, weights_only=True)["counters"]["timesteps"] == 64
