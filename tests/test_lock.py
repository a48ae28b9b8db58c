"""One run folder, one writer, on real processes: a second `ppo1 train` on a run in use is refused
(one line, exit 2, nothing on disk changed) while the first goes on complete; kill -9 leaves no stale
lock; the same under torchrun with 2 ranks; and a resume over logs with a gap says so."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_dist_resume import FLAGS, clean_env, free_port, ppo1_workers, torchrun

RUN = "run"
# A run long enough to be still going while the second command tries: 64 agent steps per rank and
# iteration, a checkpoint every 2.
TRAIN = ["-m", "ppo1", "train", *FLAGS, "--env_steps", "1000000", "--save_interval", "2", "--model_name", RUN]


def launch(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )


def rows(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return [r for r in csv.DictReader(lines) if None not in r.values()]


def wait_for_iterations(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ((run_dir / "progress.csv").exists() and len(rows(run_dir / "progress.csv")) >= n):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the first run exited ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
        assert time.monotonic() < deadline, "the first run logged nothing"
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return out


def state(run_dir: Path) -> tuple:
    """What a second writer would change: the files' bytes and inodes (a rewrite is a new inode)."""
    files = sorted(p for p in run_dir.iterdir() if p.is_file())
    return tuple((p.name, p.stat().st_ino, p.read_bytes()) for p in files)


def assert_complete(run_dir: Path) -> None:
    """progress.csv has every iteration once, 1..N, N at least the checkpoint's; the monitor files
    hold every game the checkpoint counted."""
    iterations = [int(float(r["Iteration"])) for r in rows(run_dir / "progress.csv")]
    assert iterations == list(range(1, len(iterations) + 1))
    counters = torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]
    assert counters["iterations"] == iterations[-1]
    games = sum(len(rows(m)) for m in run_dir.glob("monitor*.csv"))
    assert games == counters["episodes"]


@pytest.mark.slow
def test_a_second_train_on_a_run_in_use_is_refused_and_the_first_stays_complete(tmp_path):
    cmd = [sys.executable, *TRAIN, "--env_name", "BreakoutNoFrameskip-v4", "--checkpoint_dir", "ck"]
    run_dir = tmp_path / "ck" / RUN
    first = launch(cmd, tmp_path)
    wait_for_iterations(run_dir, 3, first)
    inodes = {n: (run_dir / n).stat().st_ino for n in ("progress.csv", "monitor.csv")}
    kept = {n: (run_dir / n).read_bytes() for n in ("config.json", "lock")}
    for extra in ([], ["--fresh"]):
        second = subprocess.run(
            cmd + extra, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=clean_env()
        )
        assert second.returncode == 2, second.stdout + second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"in use by pid {first.pid} on {socket.gethostname()}" in lines[0]
        assert "resuming" not in second.stdout and "moved" not in second.stdout
    assert sorted(p.name for p in tmp_path.joinpath("ck").iterdir()) == [RUN]  # --fresh moved nothing
    assert {n: (run_dir / n).read_bytes() for n in kept} == kept
    # The readers keep working on a run in use.
    plot = subprocess.run(
        [sys.executable, "-m", "ppo1", "plot", str(run_dir), "-o", str(tmp_path / "c.png")],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert plot.returncode == 0 and (tmp_path / "c.png").stat().st_size > 0, plot.stderr
    wait_for_iterations(run_dir, len(rows(run_dir / "progress.csv")) + 2, first)
    stop(first)
    assert not (run_dir / "lock").exists()  # a clean exit takes its name off the folder
    # The first run wrote on to the same files, and they hold every iteration and game it counted.
    assert {n: (run_dir / n).stat().st_ino for n in inodes} == inodes
    assert_complete(run_dir)

    # kill -9 leaves no stale lock: the same command starts and resumes.
    first = launch(cmd, tmp_path)
    wait_for_iterations(run_dir, len(rows(run_dir / "progress.csv")) + 3, first)
    first.kill()
    first.communicate()
    again = launch(cmd, tmp_path)
    wait_for_iterations(run_dir, len(rows(run_dir / "progress.csv")) + 2, again)
    out = stop(again)
    assert "resuming" in out and "warning" not in out
    assert_complete(run_dir)


@pytest.mark.slow
def test_under_torchrun_rank_0_holds_the_folder(tmp_path):
    def group() -> list[str]:
        return torchrun(2, "--master-port", str(free_port())) + TRAIN + ["--checkpoint_dir", "ck"]

    run_dir = tmp_path / "ck" / RUN
    first = launch(group(), tmp_path)
    wait_for_iterations(run_dir, 3, first)
    holder = int((run_dir / "lock").read_text().split()[1])
    second = subprocess.run(
        group(), cwd=tmp_path, capture_output=True, text=True, timeout=180, env=clean_env()
    )
    assert second.returncode != 0
    # Rank 0 says why in one line; rank 1 says that rank 0 refused.
    assert f"in use by pid {holder} on {socket.gethostname()}" in second.stderr
    assert "rank 0 refused to start" in second.stderr
    single = subprocess.run(
        [sys.executable, *TRAIN, "--checkpoint_dir", "ck"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert single.returncode == 2 and f"in use by pid {holder}" in single.stderr
    wait_for_iterations(run_dir, len(rows(run_dir / "progress.csv")) + 2, first)
    workers = ppo1_workers(first.pid)
    assert workers[0] == holder
    for pid in [*workers.values(), first.pid]:  # kill -9 of the whole group, rank 0 first
        os.kill(pid, signal.SIGKILL)
    first.communicate()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers.values()):
        assert time.monotonic() < deadline, "the killed workers did not go away"
        time.sleep(0.1)
    again = launch(group(), tmp_path)
    wait_for_iterations(run_dir, len(rows(run_dir / "progress.csv")) + 2, again)
    for pid in ppo1_workers(again.pid).values():  # Ctrl-C of the workers: they save, torchrun ends
        os.kill(pid, signal.SIGTERM)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-2000:]
    assert "resuming" in out
    assert_complete(run_dir)


def trained(tmp_path: Path, cli, iterations: int) -> tuple[list[str], Path]:
    """A finished Breakout run of that many tiny iterations, saved after each: (its command without
    --env_steps, its folder)."""
    args = ["train", *cli.TINY, "--env_name", "BreakoutNoFrameskip-v4", "--model_name", RUN]
    args += ["--checkpoint_dir", "ck", "--save_interval", "1"]
    r = cli.run([*args, "--env_steps", str(iterations * cli.BATCH)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    return args, tmp_path / "ck" / RUN


@pytest.mark.slow
def test_a_resume_over_logs_with_a_gap_says_which_iterations(tmp_path, cli):
    args, run_dir = trained(tmp_path, cli, 8)
    progress = (run_dir / "progress.csv").read_text().splitlines()
    # Iterations 3-5 lost, as when a second writer replaced the file under the first.
    (run_dir / "progress.csv").write_text("\n".join(progress[:3] + progress[6:]) + "\n")
    r = cli.run([*args, "--env_steps", str(9 * cli.BATCH)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    warning = [line for line in r.stdout.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "progress.csv lacks iterations 3-5" in warning[0], r.stdout
    assert "progress.csv lacks iterations 3-5" in (run_dir / "gaps.txt").read_text()
    # Said once: the next resume over the same gap goes on without a word.
    r = cli.run([*args, "--env_steps", str(10 * cli.BATCH)], cwd=tmp_path)
    assert "warning" not in r.stdout and (run_dir / "gaps.txt").read_text().count("\n") == 1


@pytest.mark.slow
def test_a_resume_over_monitor_files_missing_games_names_their_iterations(tmp_path, cli):
    args, run_dir = trained(tmp_path, cli, 30)
    progress = rows(run_dir / "progress.csv")
    lines = (run_dir / "monitor.csv").read_text().splitlines()
    games = lines[2:]
    assert len(games) >= 2, "random Breakout play ends games within 30 iterations"
    last_t = float(games[-1].split(",")[2])
    iteration = next(int(r["Iteration"]) for r in progress if abs(float(r["TimeElapsed"]) - last_t) < 0.006)
    lost = [g for g in games if float(g.split(",")[2]) == last_t]
    (run_dir / "monitor.csv").write_text("\n".join(lines[: len(lines) - len(lost)]) + "\n")
    r = cli.run([*args, "--env_steps", str(31 * cli.BATCH)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    expected = f"the monitor files lack {len(lost)} games (iterations {iteration})"
    assert expected in r.stdout, r.stdout
