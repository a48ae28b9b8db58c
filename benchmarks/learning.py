"""Does it learn, and how fast by the wall clock? Train, evaluate, plot, in one folder.

    python benchmarks/learning.py --env_name Pong --minutes 30 --seeds 1 --target 18 --out DIR [flags]
    python benchmarks/learning.py --env_name Hopper-v5 --seeds 3 --out benchmarks/results/mujoco

For each seed: `ppo1 train` with the given flags for at most --minutes of wall clock (or
--max_steps / --env_steps agent steps, or with --stop_at_target until its last-100 mean reaches
--target; a seed with a checkpoint resumes from it unless --fresh), then `ppo1 evaluate` of the
final checkpoint under the protocol it was trained under (PongNoFrameskip-v4: paper; MuJoCo: the
env's own episodes).
Writes into --out: the run folders, results.json (per seed: mean real score of the last 100
training games, evaluation mean and std, agent steps, frames, wall time, steps/s, and the first
agent step and wall time at which the last-100 mean reached --target, and the last-100 mean at the
--at steps; a game's agent step is the real step counter (progress.csv's TimestepsSoFar) at the end
of the iteration in which it ended, matched by the training clock (monitor.csv's t); seeds already in
results.json from a run with the same settings are kept, so seeds can be run one at a time, or at
once into one --out) and curve.png from `ppo1 plot` over every run folder in --out.
Cost: --minutes x --seeds of machine time, plus evaluation (a few minutes).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppo1.cli import add_config_flags  # noqa: E402
from ppo1.config import resolve  # noqa: E402
from ppo1.envspec import FRAME_SKIP, parse_env_name  # noqa: E402
from ppo1.errors import ConfigError  # noqa: E402
from ppo1.launch import start  # noqa: E402
from ppo1.runfiles import game_steps, read_monitors  # noqa: E402
from ppo1.trainer import stop_after  # noqa: E402


def read_monitor(run: Path) -> list[tuple[float, int, float]]:
    """(score, step, t) of each game of a run folder, in the order the games ended: the real score
    (monitor*.csv's r), the real agent-step counter at the end of the iteration in which the game
    ended (progress.csv's TimestepsSoFar in the row whose TimeElapsed is t; not the sum of the
    lengths l, which misses the games in flight and those cut at each resume) and t, the seconds
    of training then. ConfigError where a game has no progress.csv row."""
    times, scores, _ = read_monitors(run)
    return list(zip(scores.tolist(), game_steps(run, times).tolist(), times.tolist()))


def reached(games: list[tuple[float, int, float]], target: float) -> tuple[int | None, float | None]:
    """Agent step and training time (read_monitor's) of the first game at whose end the mean of the
    last 100 games reached target."""
    last = deque(maxlen=100)
    for r, step, t in games:
        last.append(r)
        if len(last) == 100 and sum(last) / 100 >= target:
            return step, t
    return None, None


def last100_at(games: list[tuple[float, int, float]], step: int, total: int) -> float | None:
    """Mean real score of the last 100 games that ended by agent step `step` (read_monitor's real
    step) of a run that trained `total` steps (None: it did not get that far, or no game had ended)."""
    last = [r for r, s, _ in games if s <= step][-100:]
    if not last or step > total:
        return None
    return sum(last) / len(last)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on folder: seeds run at once into one --out merge results.json in turn."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, help="wall-clock budget per seed (default: to --env_steps)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first_seed", type=int, default=1, help="seeds first_seed .. first_seed + seeds - 1")
    p.add_argument(
        "--max_steps",
        type=float,
        help="stop each seed at this many agent steps (schedules anneal as without it)",
    )
    p.add_argument(
        "--at",
        default="",
        help="comma-separated agent steps at which to report the last-100 mean, e.g. 2e5,3.5e5,5e5",
    )
    p.add_argument("--target", type=float, help="score the last-100 mean must reach (Pong: 18)")
    p.add_argument(
        "--stop_at_target",
        action="store_true",
        help="stop each seed at the end of the iteration at which its last-100 mean reached --target "
        "(so the evaluation is of the agent there)",
    )
    p.add_argument("--eval_episodes", type=int, default=10)
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start each seed over; by default a seed whose run folder has a checkpoint resumes from it "
        "(so a run cut off by the end of a session goes on when the same command is run again)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for the seeds' run folders and results: benchmarks/results/<the question it answers>",
    )
    p.add_argument("--env_name", default="PongNoFrameskip-v4")
    args, extra = p.parse_known_args()
    if args.stop_at_target and args.target is None:
        p.exit(2, "learning.py: --stop_at_target needs --target\n")
    args.out.mkdir(parents=True, exist_ok=True)

    train_parser = argparse.ArgumentParser()  # the train flags, parsed as ppo1 train does
    add_config_flags(train_parser)
    overrides = {k: v for k, v in vars(train_parser.parse_args(extra)).items() if v is not None}
    overrides["env_name"] = args.env_name
    overrides.setdefault("save_interval", 50)
    preset = resolve(overrides).preset
    at = [int(float(a)) for a in args.at.split(",") if a]
    frame_skip = FRAME_SKIP if parse_env_name(args.env_name).atari else 1
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        name = f"{args.env_name.replace('/', '_')}-{preset}-seed{seed}"
        run = {**overrides, "seed": seed, "checkpoint_dir": str(args.out), "model_name": name}
        stop_when = stop_after(
            seconds=args.minutes * 60 if args.minutes else None,
            steps=int(args.max_steps) if args.max_steps else None,
            score=args.target if args.stop_at_target else None,
        )
        _, counters = start(run, fresh=args.fresh, stop_when=stop_when)
        try:
            games = read_monitor(args.out / name)
        except ConfigError as e:
            p.exit(2, f"learning.py: {e}\n")
        eval_json = args.out / f"{name}-eval.json"
        subprocess.run(
            [sys.executable, "-m", "ppo1", "evaluate", "--env_name", args.env_name, "--checkpoint_dir",
             str(args.out), "--model_name", name, "--episodes",
             str(args.eval_episodes), "--json", str(eval_json)],
            check=True,
        )  # fmt: skip
        ev = json.loads(eval_json.read_text())
        step_hit, time_hit = reached(games, args.target) if args.target is not None else (None, None)
        last100 = [r for r, _, _ in games[-100:]]
        results.append(
            {
                "seed": seed,
                "last100_mean": sum(last100) / len(last100) if last100 else None,
                "games": len(games),
                "eval_mean": ev["mean"],
                "eval_std": ev["std"],
                "eval_episodes": len(ev["scores"]),
                "eval_protocol": ev["protocol"],
                "agent_steps": counters.timesteps,
                "frames": frame_skip * counters.timesteps,
                "wall_seconds": counters.elapsed,  # training time over every session of this seed
                "steps_per_second": counters.timesteps / counters.elapsed,
                "target": args.target,
                "target_step": step_hit,
                "target_seconds": time_hit,
                "last100_at": {str(a): last100_at(games, a, counters.timesteps) for a in at},
            }
        )
    with locked(args.out):
        runs = [str(args.out / r) for r in sorted(p.name for p in args.out.iterdir() if p.is_dir())]
        subprocess.run(
            [sys.executable, "-m", "ppo1", "plot", *runs, "-o", str(args.out / "curve.png")], check=True
        )
        kept = []  # seeds run earlier into the same folder with the same settings stay in results.json
        old = args.out / "results.json"
        if old.exists():
            prev = json.loads(old.read_text())
            if (prev["env_name"], prev["minutes"], prev.get("max_steps"), prev["settings"]) == (
                args.env_name,
                args.minutes,
                args.max_steps,
                overrides,
            ):
                ran = {r["seed"] for r in results}
                kept = [r for r in prev["seeds"] if r["seed"] not in ran]
        seeds = sorted(kept + results, key=lambda r: r["seed"])
        summary = {"env_name": args.env_name, "minutes": args.minutes, "max_steps": args.max_steps}
        summary |= {"settings": overrides, "seeds": seeds}
        (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in results:
        hit = f"reached {args.target} at step {r['target_step']}" if r["target_step"] else "not reached"
        hit = hit if args.target is not None else "no target"
        print(
            f"seed {r['seed']}: last-100 {r['last100_mean']}, "
            f"eval {r['eval_mean']:.1f} +- {r['eval_std']:.1f} ({r['eval_protocol']} protocol), "
            f"{r['agent_steps']:,} steps in {r['wall_seconds'] / 60:.1f} min "
            f"({r['steps_per_second']:.0f}/s), {hit}"
        )


if __name__ == "__main__":
    main()
