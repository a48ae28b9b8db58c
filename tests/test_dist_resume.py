"""Distributed resume on real processes (gloo on CPU): a group restarted by `torchrun --max-restarts`
picks up from the last checkpoint, and a run resumes under another world size with global counters."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import BATCH, TINY

from ppo1 import checkpoint

# conftest's TINY: 2 envs x 32 steps = 64 agent steps per rank and iteration; one thread per process.
FLAGS = [*TINY, "--dist_timeout", "20"]
RESUMING = re.compile(
    r"^resuming \S+ at step (\d+) \(iteration (\d+), resume \d+\)(?:; changed: (.*))?$", re.M
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The environment of a fresh shell: no launcher variables inherited from whoever runs pytest."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("OMPI_", "PMIX_", "TORCHELASTIC_")) or k in (
            "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        ):  # fmt: skip
            env.pop(k)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def torchrun(nproc: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *extra]


def ppo1_train(checkpoint_dir: Path, env_steps: int, *extra: str) -> list[str]:
    args = ["-m", "ppo1", "train", *FLAGS, "--checkpoint_dir", str(checkpoint_dir)]
    return [*args, "--env_steps", str(env_steps), *extra]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env())
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


def steps(run_dir: Path) -> list[int]:
    with (run_dir / "progress.csv").open(newline="") as f:
        return [int(float(r["TimestepsSoFar"])) for r in csv.DictReader(f)]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def rounded_up(target: int, start: int, per_iteration: int) -> int:
    """Where the counters stop: whole iterations of per_iteration steps from start, up to target."""
    return start + -(-(target - start) // per_iteration) * per_iteration


def children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is pid (from /proc, without psutil)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def ppo1_workers(launcher: int) -> dict[int, int]:
    """{rank: pid} of the ppo1 workers that the torchrun agent (pid launcher) started."""
    workers = {}
    for pid in children(launcher):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ppo1" in cmdline:
            env = dict(kv.split(b"=", 1) for kv in environ if b"=" in kv)
            workers[int(env[b"RANK"])] = pid
    return workers


def logged_so_far(run_dir: Path) -> list[int]:
    """steps(), read while rank 0 may be appending: a torn last line (missing fields) is skipped."""
    try:
        with (run_dir / "progress.csv").open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if None not in r.values()]
    except FileNotFoundError:
        return []
    return [int(float(r["TimestepsSoFar"])) for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_max_restarts_resumes_from_the_last_checkpoint(tmp_path, victim):
    """`torchrun --max-restarts 1`: SIGKILL one worker mid-run (rank 0, the one that writes the logs
    and checkpoints, or rank 1); the restarted group resumes from the last checkpoint by itself.

    torchrun stops the survivor and reruns the same command; the new rank 0 finds checkpoint.pt and
    says "resuming ... at step S". The kill lands while progress.csv already holds a row newer than
    the checkpoint (--save_interval 2, killed after an odd iteration), so the resumed run must drop
    that row: progress.csv ends with every iteration exactly once, TimestepsSoFar strictly rising,
    and the run exits 0 with the final checkpoint at --env_steps rounded up to whole iterations.
    """
    per_iteration = 2 * BATCH  # the counters are global: 2 ranks x 64
    env_steps = 1000  # 8 iterations: 1024
    end = rounded_up(env_steps, 0, per_iteration)
    run_dir = tmp_path / "Pong-wallclock"
    ckpt = run_dir / "checkpoint.pt"
    log, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    cmd = torchrun(2, "--max-restarts", "1", "--master-port", str(free_port()))
    cmd += ppo1_train(tmp_path, env_steps, "--save_interval", "2")
    with log.open("w") as out, err.open("w") as errf:
        launcher = subprocess.Popen(cmd, stdout=out, stderr=errf, text=True, env=clean_env())

    def logs() -> str:
        return f"{log.read_text()[-2000:]}\n{err.read_text()[-4000:]}"

    try:
        # Wait for a checkpoint past step 0 and a newer row in progress.csv than that checkpoint.
        deadline, saved, mtime, workers = time.time() + 90, 0, 0, {}
        while time.time() < deadline and launcher.poll() is None:
            if ckpt.exists() and ckpt.stat().st_mtime_ns != mtime:
                mtime = ckpt.stat().st_mtime_ns
                saved = load(ckpt)["counters"]["timesteps"]
                workers = workers or ppo1_workers(launcher.pid)
            logged = logged_so_far(run_dir)
            if saved > 0 and logged and logged[-1] > saved:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"no checkpoint and newer progress.csv row in time\n{logs()}")
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[victim], signal.SIGKILL)
        at_kill = load(ckpt)["counters"]["timesteps"]
        assert at_kill == saved < logged[-1], (at_kill, saved, logged)  # no save slipped in meanwhile
        launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:  # a hang or a failed assertion: leave no process behind
            for pid in ppo1_workers(launcher.pid).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            launcher.kill()
            launcher.wait(timeout=10)
    assert launcher.returncode == 0, logs()
    # Only the restarted group resumed (the first one started fresh), from the checkpoint at the kill.
    resumed = [(int(s), int(i)) for s, i, _ in RESUMING.findall(log.read_text())]
    assert resumed == [(saved, saved // per_iteration)], (resumed, saved, logs())
    # Every iteration logged exactly once: the row after the checkpoint was dropped, not repeated.
    assert steps(run_dir) == list(range(per_iteration, end + 1, per_iteration))
    final = load(ckpt)
    assert final["counters"]["timesteps"] == end == 1024
    assert final["counters"]["iterations"] == end // per_iteration
    assert final["world_size"] == 2


@pytest.mark.slow
def test_resume_with_another_world_size(tmp_path):
    """1 process -> torchrun 2 ranks -> 1 process, each resuming the same run folder.

    Each resume names the world size change in its "resuming ..." line. The counters stay global:
    the first row after a switch is the checkpoint's step plus one iteration of the new world size
    (2 x 64 steps with two ranks, 64 with one), each session stops at its --env_steps rounded up to
    whole iterations, progress.csv rises without a repeat or a gap, and the checkpoint records the
    world size that wrote it.
    """
    run_dir = tmp_path / "Pong-wallclock"
    ckpt = run_dir / "checkpoint.pt"

    def counters() -> tuple[int, int, int]:
        state = load(ckpt)
        return state["world_size"], state["counters"]["timesteps"], state["counters"]["iterations"]

    # One process, 2 iterations of 64 steps.
    p = run([sys.executable, *ppo1_train(tmp_path, 2 * BATCH)])
    assert RESUMING.search(p.stdout) is None
    assert counters() == (1, 128, 2)
    assert steps(run_dir) == [64, 128]

    # Two ranks to 400: 128 + 3 x 128 = 512 (400 is not a whole number of iterations past 128).
    p = run(torchrun(2, "--master-port", str(free_port())) + ppo1_train(tmp_path, 400))
    (s, i, changed), *more = RESUMING.findall(p.stdout)
    assert not more and (int(s), int(i)) == (128, 2), p.stdout[-2000:]
    assert "world size: 1 -> 2" in changed.split(", "), changed
    assert rounded_up(400, 128, 2 * BATCH) == 512
    assert counters() == (2, 512, 5)
    assert steps(run_dir) == [64, 128, 128 + 2 * BATCH, 384, 512]
    assert (run_dir / "monitor.1.csv").exists()  # rank 1 really played

    # Back to one process, to 600: 512 + 2 x 64 = 640.
    p = run([sys.executable, *ppo1_train(tmp_path, 600)])
    (s, i, changed), *more = RESUMING.findall(p.stdout)
    assert not more and (int(s), int(i)) == (512, 5), p.stdout[-2000:]
    assert "world size: 2 -> 1" in changed.split(", "), changed
    assert rounded_up(600, 512, BATCH) == 640
    assert counters() == (1, 640, 7)
    assert steps(run_dir) == [64, 128, 256, 384, 512, 512 + BATCH, 640]


@pytest.mark.slow
def test_every_rank_resumes_its_own_random_generator(tmp_path):
    """The checkpoint holds each rank's torch generator, and each rank resumes from its own.

    A 2-rank run stops after 2 iterations; its folder is copied three times. Two copies resume
    unchanged, one with rank 1's saved generator replaced; each trains one more iteration. The
    unchanged copies end bit-identical (resume is deterministic), the altered one differs: rank 1's
    action draws came from the saved state, not from its seed.
    """
    first = tmp_path / "first"
    run(torchrun(2, "--master-port", str(free_port())) + ppo1_train(first, 2 * 2 * BATCH))
    saved = load(first / "Pong-wallclock" / "checkpoint.pt")
    ranks = saved["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    finals = {}
    for name in ("same", "again", "altered"):
        shutil.copytree(first, tmp_path / name)
        if name == "altered":
            state = {k: v for k, v in saved.items() if k != "format_version"}
            state["rng"]["ranks"][1]["torch"] = torch.Generator().manual_seed(12345).get_state()
            checkpoint.save(tmp_path / name / "Pong-wallclock" / "checkpoint.pt", state)
        run(torchrun(2, "--master-port", str(free_port())) + ppo1_train(tmp_path / name, 3 * 2 * BATCH))
        finals[name] = load(tmp_path / name / "Pong-wallclock" / "checkpoint.pt")["model"]
        assert steps(tmp_path / name / "Pong-wallclock") == [128, 256, 384]

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(finals["same"], finals["again"])
    assert not same(finals["same"], finals["altered"])
