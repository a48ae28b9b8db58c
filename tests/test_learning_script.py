"""benchmarks/learning.py --stop_at_target: a real CartPole run that stops at the end of the iteration
at which its last-100 mean reached the target, and is evaluated there. Its step counts, and
steps_table.py's, are the real step counter (progress.csv), not the sum of the games' lengths."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env, read_progress, timesteps

from ppo1.runfiles import MonitorWriter, drop_rows_after

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning import last100_at, locked, reached, read_monitor  # noqa: E402

TARGET = 25.0  # CartPole's random policy scores about 22, so a full window of 100 games decides


def learning(out: Path, *flags: str) -> subprocess.CompletedProcess:
    args = ["--env_name", "CartPole-v1", "--preset", "classic", "--num_envs", "2"]
    args += ["--timesteps_per_actorbatch", "64", "--torch_threads", "1", "--eval_episodes", "2"]
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "learning.py"), *args, "--out", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env=cli_env(),
    )


@pytest.mark.slow
def test_stops_at_the_iteration_that_reached_the_target(tmp_path):
    r = learning(tmp_path, "--target", str(TARGET), "--stop_at_target", "--max_steps", "4e4")
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "CartPole-v1-classic-seed1"
    result = json.loads((tmp_path / "results.json").read_text())["seeds"][0]
    rows = read_progress(run)
    final = result["agent_steps"]
    assert final == timesteps(rows)[-1] < 40_000
    # the last iteration is the first whose last-100 window (full: 100 games) reached the target
    hits = [int(r["EpisodesSoFar"]) >= 100 and float(r["EpRewMean"]) >= TARGET for r in rows]
    assert hits.index(True) == len(rows) - 1
    assert result["target_step"] == reached(read_monitor(run), TARGET)[0] is not None
    assert result["target_step"] in timesteps(rows)  # the counter at the end of an iteration
    ev = json.loads((tmp_path / "CartPole-v1-classic-seed1-eval.json").read_text())
    assert ev["checkpoint_step"] == final  # the evaluation is of the agent where it stopped


def test_stop_at_target_needs_a_target(tmp_path):
    r = learning(tmp_path / "out", "--stop_at_target")
    assert r.returncode == 2 and r.stderr.startswith("learning.py: --stop_at_target needs --target")
    assert len(r.stderr.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_seeds_run_at_once_merge_results_in_turn(tmp_path):
    """The lock learning.py holds while it merges results.json keeps a second process out until
    it is released."""
    grab = (
        "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    )
    other = [sys.executable, "-c", grab, str(tmp_path)]
    with locked(tmp_path):
        held = subprocess.run(other, capture_output=True, text=True)
    assert held.returncode == 1 and "BlockingIOError" in held.stderr
    assert subprocess.run(other).returncode == 0


GAME, ITERATION = 350, 1000  # agent steps of every game and of every iteration (1 env, 10 s each)


def train(run: Path, start: int, stop: int) -> None:
    """What training writes for iterations start+1..stop after (re)starting at iteration `start`:
    the emulator starts a fresh game, so a game in flight at `start` is never logged. Games score
    -21 up to the 90th, then +21."""
    run.mkdir(exist_ok=True)
    monitor = MonitorWriter(run / "monitor.csv", "PongNoFrameskip-v4")
    games = len((run / "monitor.csv").read_text().splitlines()) - 2
    new = not (run / "progress.csv").exists()
    with (run / "progress.csv").open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["EpThisIter", "TimestepsSoFar", "TimeElapsed"])
        played = 0
        for i in range(start + 1, stop + 1):
            n, played = divmod(played + ITERATION, GAME)
            elapsed = 10.0 * i + 0.123456789
            monitor.write([-21.0 if games + g < 90 else 21.0 for g in range(n)], [GAME] * n, elapsed)
            writer.writerow([n, ITERATION * i, round(elapsed, 2)])
            games += n
    monitor.close()


@pytest.fixture
def resumed(tmp_path) -> Path:
    """A run that stopped after 40 iterations with its checkpoint at 30 (step 30,000, 250 steps into
    a game), resumed from there (the rows after the checkpoint dropped, as a resume does) to 80."""
    run = tmp_path / "run"
    train(run, 0, 40)
    drop_rows_after(run, 30 * ITERATION, 10.0 * 30 + 0.123456789)
    train(run, 30, 80)
    return run


def test_steps_are_the_real_counter_not_the_sum_of_lengths(resumed):
    games = read_monitor(resumed)
    assert len(games) == 85 + 142  # 85 games before the checkpoint, the game in flight lost
    # The 140th game (the 50th win) ended at step 30,000 + 55 x 350 = 49,250, in iteration 50: its
    # step is 50,000; the summed lengths say 140 x 350 = 49,000.
    assert reached(games, 0.0) == (50_000, 500.123457)
    lengths = [int(row["l"]) for row in csv.DictReader((resumed / "monitor.csv").open().readlines()[1:])]
    assert sum(lengths[:140]) == 49_000
    # By step 49,500: the games logged by iteration 49 (139 of them), 49 wins in the last 100; the
    # summed lengths would take 141 games, 51 wins (+0.42).
    assert last100_at(games, 49_500, 80_000) == pytest.approx(-0.42)
    assert last100_at(games, 81_000, 80_000) is None


def test_steps_table_reads_the_real_counter_and_fails_on_a_game_without_its_iteration(resumed, tmp_path):
    table = [sys.executable, str(ROOT / "benchmarks" / "steps_table.py"), str(resumed)]
    r = subprocess.run([*table, "--at", "4.95e4"], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[2] == f"| {resumed} | 80,000 | -0.4 |"
    (resumed / "config.json").write_text('{"resumes": 1}')
    r = subprocess.run([*table, "--reach=0"], capture_output=True, text=True, env=cli_env())
    assert r.stdout.splitlines()[2] == f"| {resumed} | 80,000 | 13 min | 1 | 0.05M (8 min) |  |"
    with (resumed / "monitor.csv").open("a") as f:
        f.write("21.0,350,455.5\n")  # logged at a time no iteration ended
    r = subprocess.run([*table, "--reach=0"], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("steps_table.py: ") and "t=455.5 s has no progress.csv row" in r.stderr
