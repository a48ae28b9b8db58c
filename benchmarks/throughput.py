"""How close does training get to what this machine can do?

    python benchmarks/throughput.py [--seconds 10] [--json out.json] [any `ppo1 train` flag]

Measures, in one run: env-only steps/s (random actions, the training backend), inference
samples/s at batch num_envs, training samples/s at the configured minibatch (forward, backward,
Adam step), the bare network's rate at that minibatch (its torso alone: the limit the training step
is held against), the serial bound 1 / (1/env + 1/inference + epochs/training), the real training
loop's steps/s over whole iterations after one warm-up iteration with its time split, and the
peak resident memory.

The phases are measured alone in child processes under three OpenMP wait policies (idle threads
spinning, sleeping, and OpenMP's default: spinning a while, then sleeping, which `ppo1 train` runs
under unless OMP_WAIT_POLICY is set) and the bound takes the fastest for each phase; the loop runs
as `ppo1 train` does.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ppo1.cli import add_config_flags  # noqa: E402
from ppo1.config import resolve  # noqa: E402
from ppo1.device import default_threads, pick_device, torch_threads  # noqa: E402
from ppo1.envs import VecEnv  # noqa: E402
from ppo1.envspec import parse_env_name  # noqa: E402
from ppo1.launch import start  # noqa: E402
from ppo1.learner import make_optimizer, ppo_loss  # noqa: E402
from ppo1.policies import make_policy  # noqa: E402
from ppo1.rollout import Batch  # noqa: E402
from ppo1.runfiles import read_progress  # noqa: E402
from ppo1.trainer import stop_after  # noqa: E402


def rate(fn, items_per_call: int, seconds: float, warmup: int = 3, sync=lambda: None) -> float:
    """Calls of fn per second x items_per_call; sync() waits for queued GPU work before each clock read."""
    for _ in range(warmup):
        fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
        if n % 10 == 0:
            sync()
    sync()
    return n * items_per_call / (time.perf_counter() - t0)


def measure_env(cfg, seconds: float) -> float:
    env = VecEnv(
        parse_env_name(cfg.env_name),
        cfg.num_envs,
        seed=cfg.seed,
        frame_stack=cfg.frame_stacking,
        threads=cfg.env_threads,
    )
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.num_actions, size=(4096, cfg.num_envs))
    i = iter(range(10**12))

    def step():
        env.step(actions[next(i) % len(actions)])

    sps = rate(step, cfg.num_envs, seconds)
    env.close()
    return sps


def bare_network_rate(policy, obs: torch.Tensor, cfg, seconds: float, sync) -> float:
    """The limit for this network at this batch: its convolutions and hidden layer alone (a copy of
    the torso, channels_last), on frames already scaled to floats, forward + backward + the same Adam;
    no heads, no distribution, no loss beyond a mean."""
    torso = copy.deepcopy(policy.torso)
    optimizer = make_optimizer(torso.parameters(), cfg)
    x = (obs.float() / 255.0).contiguous(memory_format=torch.channels_last)

    def step():
        loss = torso(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return rate(step, len(obs), seconds, sync=sync)


def measure_network(cfg, seconds: float, num_actions: int, in_channels: int) -> tuple[float, float, float]:
    device = pick_device(cfg.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    policy = make_policy(cfg, (in_channels, 84, 84), num_actions, True).to(device)
    optimizer = make_optimizer(policy.parameters(), cfg)
    frames = torch.randint(0, 256, (cfg.num_envs, in_channels, 84, 84), dtype=torch.uint8)
    # As in the rollout: the frames come from the emulators on the CPU, the actions go back there.
    inference = rate(lambda: policy.act(frames.to(device))[0].cpu(), cfg.num_envs, seconds, 10, sync)
    mb = cfg.minibatch_size
    obs = torch.randint(0, 256, (mb, in_channels, 84, 84), dtype=torch.uint8, device=device)
    actions = torch.randint(0, num_actions, (mb,), device=device)
    zeros, adv = torch.zeros(mb, device=device), torch.randn(mb, device=device)

    batch = Batch(obs, actions, zeros, zeros, adv, zeros)

    def train_step():
        pd, values = policy.dist(batch.obs)
        loss, _ = ppo_loss(pd, values, batch, cfg.epsilon, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    bare = bare_network_rate(policy, obs, cfg, seconds, sync)
    return inference, rate(train_step, mb, seconds, sync=sync), bare


def measure_loop(overrides: dict, seconds: float) -> dict:
    """The real loop for `seconds`, and for 4 iterations at least (a warm-up and 3 timed ones)."""
    enough_time = stop_after(seconds=seconds)

    def stop_when(trainer) -> bool:
        return enough_time(trainer) and trainer.counters.iterations >= 4

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {**overrides, "checkpoint_dir": tmp, "model_name": "bench", "save_interval": 10**9}
        start(overrides, fresh=True, stop_when=stop_when)
        rows = read_progress(Path(tmp) / "bench")
    if len(rows) < 3:
        raise SystemExit(f"only {len(rows)} iterations ran; give more --seconds")
    rows = rows[1:]  # the first iteration is warm-up
    steps = float(rows[-1]["TimestepsSoFar"]) - float(rows[0]["TimestepsSoFar"])
    wall = float(rows[-1]["TimeElapsed"]) - float(rows[0]["TimeElapsed"])
    rows = rows[1:]
    columns = {"env": "TimeEnv", "inference": "TimeInference", "gae": "TimeGAE", "update": "TimeUpdate"}
    split = {k: sum(float(r[c]) for r in rows) for k, c in columns.items()}
    split["other"] = wall - sum(split.values())
    return {"train_sps": steps / wall, "iterations": len(rows), "phase_seconds": split}


def measure_phases(cfg, seconds: float) -> dict:
    torch.set_num_threads(torch_threads(cfg.torch_threads))
    in_channels = 4 if cfg.frame_stacking else 1
    num_actions = VecEnv(parse_env_name(cfg.env_name), 1, seed=0).num_actions
    env_sps = measure_env(cfg, seconds)
    inference_sps, update_sps, bare_sps = measure_network(cfg, seconds, num_actions, in_channels)
    return {
        "env_sps": env_sps,
        "inference_sps": inference_sps,
        "update_sps": update_sps,
        "bare_network_sps": bare_sps,
    }


def phases_by_policy(argv: list[str]) -> dict[str, dict]:
    """Each phase measured alone in a child process under each OpenMP wait policy ("default": unset)."""
    out = {}
    for policy in ("ACTIVE", "PASSIVE", "default"):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "phases.json"
            subprocess.run([sys.executable, __file__, *argv, "--phases_json", str(path)], check=True, env=env)
            out[policy] = json.loads(path.read_text())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument(
        "--loop_seconds", type=float, help="seconds of the real loop (default: 3 x --seconds, at least 20)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--phases_json", type=Path, help=argparse.SUPPRESS)  # the child processes
    add_config_flags(parser)
    args = parser.parse_args()
    own = ("seconds", "loop_seconds", "json", "phases_json")
    overrides = {k: v for k, v in vars(args).items() if v is not None and k not in own}
    cfg = resolve(overrides)
    if args.phases_json:
        args.phases_json.write_text(json.dumps(measure_phases(cfg, args.seconds)))
        return
    by_policy = phases_by_policy(sys.argv[1:])
    env_sps, inference_sps, update_sps, bare_sps = (
        max(p[k] for p in by_policy.values())
        for k in ("env_sps", "inference_sps", "update_sps", "bare_network_sps")
    )
    bound = 1.0 / (1.0 / env_sps + 1.0 / inference_sps + cfg.optim_epochs / update_sps)
    loop = measure_loop(overrides, args.loop_seconds or max(3 * args.seconds, 20.0))
    result = {
        "env_sps": env_sps,
        "inference_sps": inference_sps,
        "update_sps": update_sps,
        "bare_network_sps": bare_sps,
        "update_vs_bare_network": update_sps / bare_sps,
        "serial_bound_sps": bound,
        "phases_by_omp_wait_policy": by_policy,
        "omp_wait_policy_of_loop": os.environ.get("OMP_WAIT_POLICY", "default"),
        "train_sps": loop["train_sps"],
        "train_vs_bound": loop["train_sps"] / bound,
        "phase_seconds": loop["phase_seconds"],
        "loop_iterations": loop["iterations"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "settings": cfg.to_dict(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "ale_py": __import__("ale_py").__version__,
            "machine": f"{platform.machine()}, {default_threads()} cores",
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
    }
    total = sum(loop["phase_seconds"].values())
    lines = [
        ("env only (random actions)", f"{env_sps:,.0f} steps/s"),
        (f"inference, batch {cfg.num_envs}", f"{inference_sps:,.0f} samples/s"),
        (f"bare network, minibatch {cfg.minibatch_size}", f"{bare_sps:,.0f} samples/s"),
        (
            f"training, minibatch {cfg.minibatch_size}",
            f"{update_sps:,.0f} samples/s ({100 * update_sps / bare_sps:.0f}% of the bare network)",
        ),
        (f"serial bound ({cfg.optim_epochs} epochs)", f"{bound:,.0f} steps/s"),
        (
            "real training loop",
            f"{loop['train_sps']:,.0f} steps/s ({100 * loop['train_sps'] / bound:.0f}% of bound)",
        ),
        *[(f"  {k}", f"{100 * v / total:.0f}% of loop time") for k, v in loop["phase_seconds"].items()],
        ("peak resident memory", f"{result['peak_rss_mb']:,.0f} MB"),
    ]
    width = max(len(a) for a, _ in lines)
    print(
        f"{cfg.env_name}, preset {cfg.preset}, {cfg.model_type} network, {cfg.num_envs} envs, "
        f"{cfg.optim_epochs} epochs, minibatch {cfg.minibatch_size}, torch {torch.__version__}"
    )
    for a, b in lines:
        print(f"  {a:<{width}}  {b}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
