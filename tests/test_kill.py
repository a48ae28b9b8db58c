"""kill -9 at random moments, mid-checkpoint included: the checkpoint on disk always loads, the same
command resumes from it, and progress.csv / monitor.csv never count a step or a game twice."""

import json
import os
import random
import re
import signal
import time
from itertools import groupby

import pytest
import torch

GAME = "BreakoutNoFrameskip-v4"  # random play ends Breakout games in ~100-400 steps: monitor rows
# The run's length: long enough that the kills below never finish it. Iterations take about 0.1 s
# here, so three start-up kills of up to 6 s each can run through 100 of them on a fast machine.
ITERATIONS = 240
RESUMING = re.compile(r"resuming \S+ at step (\d+) \(iteration (\d+), resume \d+\)")
# Where each kill lands (shuffled with a fixed seed):
# start-up: a random time after launch (importing, loading the checkpoint, dropping rows, first steps);
# mid save: as soon as the checkpoint's temporary file appears (torch.save or fsync in progress);
# just saved: as soon as a new checkpoint.pt has been renamed into place;
# mid iteration: a random time after a new checkpoint (collecting, updating, logging);
# after a game: as soon as monitor.csv has a game the next checkpoint does not hold yet.
MODES = ["start-up"] * 3 + ["mid save"] * 3 + ["just saved", "mid iteration", "after a game"] * 2


def stat_key(path):
    """Changes whenever a checkpoint is renamed over the old one (a new inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def temp_files(run_dir) -> set[str]:
    try:
        return {n for n in os.listdir(run_dir) if n.startswith(".checkpoint-")}
    except FileNotFoundError:
        return set()


def wait_until(predicate, proc, what, timeout=180):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"ppo1 exited ({proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def progress_rows(run_dir, cli):
    return [r for r in cli.progress(run_dir) if r.get("TimeIteration")]  # not a line torn by the kill


def monitor_rows(run_dir) -> list[list[str]]:
    path = run_dir / "monitor.csv"
    lines = path.read_text().splitlines() if path.exists() else []
    if lines:
        assert json.loads(lines[0][1:])["env_id"] == GAME and lines[1] == "r,l,t"
    return [line.split(",") for line in lines[2:]]


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tmp_path, cli):
    B = cli.BATCH
    args = ["train", *cli.TINY, "--env_name", GAME, "--model_name", "run", "--checkpoint_dir", "ck"]
    args += ["--save_interval", "1", "--optim_epochs", "1", "--env_steps", str(ITERATIONS * B)]
    run_dir = tmp_path / "ck" / "run"
    ckpt = run_dir / "checkpoint.pt"
    rng = random.Random(6)
    modes = rng.sample(MODES, len(MODES))
    saved, episodes = None, 0
    landed = dict(mid_save=0, progress_rows=0, monitor_rows=0)  # kills that left something to clean up

    for mode in modes:
        before, temps_before = stat_key(ckpt), temp_files(run_dir)
        p = cli.popen(args, tmp_path)
        if mode == "start-up":
            time.sleep(rng.uniform(0.2, 6.0))
        elif mode == "mid save":
            wait_until(lambda t=temps_before: temp_files(run_dir) - t, p, "a checkpoint being written")
        else:
            wait_until(lambda b=before: stat_key(ckpt) != b, p, "a new checkpoint")
            if mode == "mid iteration":
                time.sleep(rng.uniform(0.0, 1.0))
            elif mode == "after a game":
                games = len(monitor_rows(run_dir))  # all in the checkpoint just written, or the next
                wait_until(lambda g=games: len(monitor_rows(run_dir)) > g, p, "a game", timeout=300)
        p.kill()
        out, err = p.communicate()
        assert p.returncode == -signal.SIGKILL, (mode, out[-2000:], err[-2000:])
        if mode == "mid save" and temp_files(run_dir) - temps_before:
            landed["mid_save"] += 1  # the kill left the temporary file: it came while writing it

        # The run resumed from the checkpoint the previous kill left, if it got that far.
        resumed = RESUMING.search(out)
        if saved is None:
            assert resumed is None, out
        elif mode != "start-up":  # these waited for a save, which comes after the resume
            assert resumed is not None, out
        if resumed is not None:
            assert int(resumed[1]) == saved and int(resumed[2]) == saved // B

        # The checkpoint on disk loads, and its counters never go back.
        if ckpt.exists():
            c = torch.load(ckpt, map_location="cpu", weights_only=True)["counters"]
            assert c["timesteps"] == c["iterations"] * B >= (saved or 0)
            assert c["episodes"] >= episodes
            saved, episodes = c["timesteps"], c["episodes"]
        else:
            assert saved is None

        # progress.csv: each iteration once; at most one logged after the checkpoint (the kill
        # came between the row and the save), and the next resume drops it.
        steps = cli.timesteps(progress_rows(run_dir, cli))
        assert steps == list(range(B, len(steps) * B + 1, B))
        assert len(steps) * B <= (saved or 0) + B
        landed["progress_rows"] += len(steps) * B > (saved or 0)
        # monitor.csv: the checkpoint's games, and maybe games of the iteration after it.
        games = monitor_rows(run_dir)
        assert [float(t) for _, _, t in games] == sorted(float(t) for _, _, t in games)
        assert len(games) >= episodes
        landed["monitor_rows"] += len(games) > episodes

    assert saved is not None and saved < ITERATIONS * B  # the kills stopped it before the end
    assert min(landed.values()) >= 1, landed

    # The same command once more, to the end.
    p = cli.run(args, tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert [int(x) for x in RESUMING.search(p.stdout).groups()] == [saved, saved // B]
    c = torch.load(ckpt, map_location="cpu", weights_only=True)["counters"]
    assert (c["timesteps"], c["iterations"]) == (ITERATIONS * B, ITERATIONS)

    rows = progress_rows(run_dir, cli)
    assert cli.timesteps(rows) == list(range(B, ITERATIONS * B + 1, B))  # no step twice, none missing
    assert [int(r["Iteration"]) for r in rows] == list(range(1, ITERATIONS + 1))
    assert int(rows[-1]["EpisodesSoFar"]) == c["episodes"]
    # monitor.csv: one row per game of the iterations kept, none of those lost to a kill. An
    # iteration's games share its elapsed time t, so the rows group by iteration, in order.
    games = monitor_rows(run_dir)
    assert len(games) == c["episodes"] >= 1
    assert all(float(r) >= 0 and int(n) > 0 for r, n, _ in games)
    groups = [(float(t), len(list(g))) for t, g in groupby(t for _, _, t in games)]
    with_games = [r for r in rows if int(r["EpThisIter"]) > 0]
    assert [n for _, n in groups] == [int(r["EpThisIter"]) for r in with_games]
    for (t, _), r in zip(groups, with_games):
        assert abs(t - float(r["TimeElapsed"])) <= 0.01  # TimeElapsed is t rounded to 0.01
    assert [t for t, _ in groups] == sorted(t for t, _ in groups)
