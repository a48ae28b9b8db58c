"""benchmarks/gpu_check.sh, dry-run on the CPU with tiny settings: the script a GPU machine runs
first must not go stale unseen (it once looked for the run folder of a default that had changed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu_passes(tmp_path):
    env = dict(os.environ, DEVICE="cpu", PONG_SECONDS="300", PHASE_SECONDS="1", NUM_ENVS="2", HORIZON="32")
    env["LOOP_SECONDS"] = "4"
    # Pong stops by itself after 2 tiny iterations: a time limit alone cut a loaded machine's run
    # before its imports were done.
    env["PONG_FLAGS"] = "--num_envs 2 --timesteps_per_actorbatch 32 --env_steps 128"
    env["OUT"] = str(tmp_path / "out")
    p = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["all_passed"] is True
    assert summary["distributed"]["passed"] is True and summary["distributed"]["iterations"] == 6
    assert summary["pong-5min"]["TimestepsSoFar"] > 0
    for k in ("throughput-default", "throughput-4x-envs"):
        assert summary[k]["train_sps"] > 0 and summary[k]["serial_bound_sps"] > 0
