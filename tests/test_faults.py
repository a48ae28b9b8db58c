"""Faults on real processes: SIGTERM saves and exits 0; a failing disk keeps the last checkpoint."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time

import conftest
import pytest
import torch

TINY = [*conftest.TINY, "--save_interval", "1"]


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
    ckpt = tmp_path / "Pong-wallclock" / "checkpoint.pt"
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


@pytest.mark.slow
def test_a_failing_disk_keeps_the_last_checkpoint(tmp_path):
    """Writes past 200 kB fail at the OS level (RLIMIT_FSIZE), as on a full disk."""
    run = [sys.executable, "-m", "ppo1", "train", *TINY, "--checkpoint_dir", str(tmp_path)]
    ok = subprocess.run(run + ["--env_steps", "64"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    ckpt = tmp_path / "Pong-wallclock" / "checkpoint.pt"
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


@pytest.mark.slow
def test_nan_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    """NaN in the optimizer state (what a diverging run leaves) makes the first update's weights
    NaN: the run stops with one line naming the iteration, exit 1, and does not save over the last
    checkpoint even with --save_interval 1."""
    from ppo1 import checkpoint

    run = [sys.executable, "-m", "ppo1", "train", *TINY, "--checkpoint_dir", str(tmp_path)]
    ok = subprocess.run(run + ["--env_steps", "64"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    ckpt = tmp_path / "Pong-wallclock" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    for s in state["optimizer"]["state"].values():
        s["exp_avg"].fill_(float("nan"))
    checkpoint.save(ckpt, state)
    before = ckpt.read_bytes()
    p = subprocess.run(run + ["--env_steps", "256"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "non-finite" in lines[0] and "iteration 2" in lines[0] and str(ckpt) in lines[0]
    assert ckpt.read_bytes() == before
    assert "TimestepsSoFar" not in p.stdout  # the bad iteration was not logged either


@pytest.mark.slow
def test_nan_weights_in_a_checkpoint_are_refused(tmp_path):
    """A checkpoint whose weights hold NaN or inf (saved by hand, or by another tool) cannot act:
    refused at start with one line, exit 2, nothing changed."""
    run = [sys.executable, "-m", "ppo1", "train", *TINY, "--checkpoint_dir", str(tmp_path)]
    ok = subprocess.run(run + ["--env_steps", "64"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    ckpt = tmp_path / "Pong-wallclock" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    state["model"]["logits.bias"][0] = float("inf")
    torch.save(state, ckpt)
    before = {p: p.read_bytes() for p in ckpt.parent.iterdir() if p.is_file()}
    p = subprocess.run(run + ["--env_steps", "256"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "non-finite" in lines[0]
    assert {p: p.read_bytes() for p in ckpt.parent.iterdir() if p.is_file()} == before
