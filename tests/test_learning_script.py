"""benchmarks/learning.py --stop_at_target: a real CartPole run that stops at the end of the iteration
at which its last-100 mean reached the target, and is evaluated there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import cli_env, read_progress, timesteps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning import reached, read_monitor  # noqa: E402

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
    assert result["target_step"] == reached(read_monitor(run / "monitor.csv"), TARGET)[0] is not None
    ev = json.loads((tmp_path / "CartPole-v1-classic-seed1-eval.json").read_text())
    assert ev["checkpoint_step"] == final  # the evaluation is of the agent where it stopped


def test_stop_at_target_needs_a_target(tmp_path):
    r = learning(tmp_path / "out", "--stop_at_target")
    assert r.returncode == 2 and r.stderr.startswith("learning.py: --stop_at_target needs --target")
    assert len(r.stderr.splitlines()) == 1 and not (tmp_path / "out").exists()
