"""Does splitting the work over ranks cost anything? 1 rank x 8 envs vs 2 ranks x 4 envs.

    python benchmarks/scaling.py [--env_steps 20480] [--json out.json] [extra `ppo1 train` flags]

Runs the real `ppo1 train` (plain, then under torchrun with 2 processes) for the same global
batch, and reports steps/s over whole iterations after the first, and the share of update time
spent in the gradient all-reduce (including waiting for the slower rank).

Then splits that share: 2 spawned ranks (gloo, 1 thread each) run the update's minibatch step
(the preset's network and per-rank minibatch, forward, backward, Dist.reduce_grads, Adam) with a
barrier before each all-reduce, so the time waiting for the slower rank and the all-reduce's own
time are measured apart.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppo1.cli import add_config_flags  # noqa: E402
from ppo1.config import Config, resolve  # noqa: E402
from ppo1.distributed import Dist  # noqa: E402
from ppo1.learner import ppo_loss  # noqa: E402
from ppo1.policies import CnnPolicy  # noqa: E402
from ppo1.rollout import Batch  # noqa: E402


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


def _split_worker(rank: int, port: int, model: str, mb: int, steps: int, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    d = Dist(rank, 2)
    torch.manual_seed(0)
    policy = CnnPolicy(4, 6, model)
    params = list(policy.parameters())
    optimizer = torch.optim.Adam(params, lr=2.5e-4, eps=1e-5)
    g = torch.Generator().manual_seed(rank)
    obs = torch.randint(0, 256, (mb, 4, 84, 84), dtype=torch.uint8, generator=g)
    actions, adv = torch.randint(0, 6, (mb,), generator=g), torch.randn(mb, generator=g)
    zeros = torch.zeros(mb)
    wait = comm = 0.0
    for i in range(steps + 3):
        if i == 3:  # after warm-up
            wait, comm, t_start = 0.0, 0.0, time.perf_counter()
        pd, values = policy.dist(obs)
        loss, _ = ppo_loss(pd, values, Batch(obs, actions, zeros, zeros, adv, zeros), 0.1, Config())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t0 = time.perf_counter()
        dist.barrier()  # the faster rank waits here for the slower one
        t1 = time.perf_counter()
        wait += t1 - t0
        d.reduce_grads(params)
        comm += time.perf_counter() - t1
        optimizer.step()
    total = time.perf_counter() - t_start
    if rank == 0:
        out.put({"wait_share": wait / total, "transfer_share": comm / total})
    dist.destroy_process_group()


def comm_split(model: str, minibatch: int, steps: int = 60) -> dict:
    """Shares of the minibatch step spent waiting for the other rank and in the all-reduce itself."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_split_worker, args=(port, model, minibatch, steps, out), nprocs=2)
    return out.get()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env_steps", type=int, default=20480)
    p.add_argument("--json", type=Path)
    args, extra = p.parse_known_args()
    cores = len(os.sched_getaffinity(0))
    one = run(1, 8, args.env_steps, extra, cores)
    two = run(2, 4, args.env_steps, extra, max(1, cores // 2))
    train_parser = argparse.ArgumentParser()  # the train flags, parsed as ppo1 train does
    add_config_flags(train_parser)
    overrides = {k: v for k, v in vars(train_parser.parse_args(extra)).items() if v is not None}
    cfg = resolve({**overrides, "num_envs": 4})  # each of the 2 ranks' settings
    split = comm_split(cfg.model_type, cfg.minibatch_size)
    result = {
        "one_rank": one,
        "two_ranks": two,
        "two_vs_one": two["sps"] / one["sps"],
        "minibatch_step_split": split,
        "cores": cores,
    }
    print(f"1 rank x 8 envs: {one['sps']:,.0f} steps/s")
    print(
        f"2 ranks x 4 envs: {two['sps']:,.0f} steps/s ({100 * (two['sps'] / one['sps'] - 1):+.0f}%), "
        f"all-reduce {100 * two['allreduce_share_of_update']:.1f}% of update time"
    )
    print(
        f"minibatch step, 2 ranks: waiting for the other rank {100 * split['wait_share']:.1f}%, "
        f"all-reduce itself {100 * split['transfer_share']:.1f}%"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
