"""Does splitting the work over ranks cost anything? 1 rank x 8 envs vs 2 ranks x 4 envs.

    python benchmarks/scaling.py [--env_steps 20480] [--json out.json] [extra `ppo1 train` flags]

Runs the real `ppo1 train` (plain, then under torchrun with 2 processes) for the same global
batch, and reports steps/s over whole iterations after the first, and the share of update time
spent in the gradient all-reduce (including waiting for the slower rank).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(ranks: int, envs: int, env_steps: int, extra: list[str], threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        flags = ["--num_envs", str(envs), "--env_steps", str(env_steps), "--checkpoint_dir", tmp]
        flags += ["--torch_threads", str(threads), "--env_threads", str(threads), "--model_name", "b"]
        if ranks == 1:
            cmd = [sys.executable, "-m", "ppo1", "train", *flags, *extra]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks)]
            cmd += ["-m", "ppo1", "train", *flags, *extra]
        subprocess.run(
            cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": str(threads)}
        )
        rows = list(csv.DictReader((Path(tmp) / "b" / "progress.csv").open()))
    steps = float(rows[-1]["TimestepsSoFar"]) - float(rows[0]["TimestepsSoFar"])
    wall = float(rows[-1]["TimeElapsed"]) - float(rows[0]["TimeElapsed"])
    update = sum(float(r["TimeUpdate"]) for r in rows[1:])
    comm = sum(float(r["TimeAllReduce"]) for r in rows[1:])
    return {
        "ranks": ranks,
        "envs_per_rank": envs,
        "sps": steps / wall,
        "allreduce_share_of_update": comm / update,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env_steps", type=int, default=20480)
    p.add_argument("--json", type=Path)
    args, extra = p.parse_known_args()
    cores = len(os.sched_getaffinity(0))
    one = run(1, 8, args.env_steps, extra, cores)
    two = run(2, 4, args.env_steps, extra, max(1, cores // 2))
    result = {"one_rank": one, "two_ranks": two, "two_vs_one": two["sps"] / one["sps"], "cores": cores}
    print(f"1 rank x 8 envs: {one['sps']:,.0f} steps/s")
    print(
        f"2 ranks x 4 envs: {two['sps']:,.0f} steps/s ({100 * (two['sps'] / one['sps'] - 1):+.0f}%), "
        f"all-reduce {100 * two['allreduce_share_of_update']:.1f}% of update time"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
