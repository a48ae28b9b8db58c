"""Tables of runs from their monitor.csv and progress.csv, in Markdown: the last-100 real score at
given agent steps (--at), or the agent steps and training time at which it first reached given
scores (--reach), with the run's training time and how many times it was resumed.

    python benchmarks/steps_table.py RUN_DIR [RUN_DIR ...] [--at 2e5,3.5e5,5e5] [-o table.md]
    python benchmarks/steps_table.py RUN_DIR [RUN_DIR ...] --reach=-15,0,18,20

A game's agent step is the run's real step counter when it was logged: progress.csv's
TimestepsSoFar at the end of the iteration in which the game ended (the row whose TimeElapsed is
the game's monitor.csv t), not the sum of the games' lengths, which misses the games in flight and
those cut at each resume. A monitor row with no such progress.csv row is an error (exit 2).
--at: the last 100 games logged by that step; a cell is empty where the run did not reach that
step. --reach: the first game at whose end the mean of the last 100 games is at least the score (a
full window of 100 games); "not reached" where the run never got there, with the steps it ran. The
time is the run's training time at that game (monitor.csv's t: seconds trained, summed over
resumes). The eval column is <RUN_DIR>-eval.json beside the run folder (as benchmarks/learning.py
writes it), where there is one. Costs nothing: it reads files.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning import last100_at, reached, read_monitor  # noqa: E402

from ppo1.errors import ConfigError  # noqa: E402


def total_steps(run: Path) -> tuple[int, float]:
    """Agent steps and seconds trained at the last progress.csv row."""
    with (run / "progress.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    return int(float(last["TimestepsSoFar"])), float(last["TimeElapsed"])


def resumes_cell(run: Path) -> str:
    """How many times the run was resumed (config.json; runs before it was recorded: unknown)."""
    path = run / "config.json"
    n = json.loads(path.read_text()).get("resumes") if path.exists() else None
    return "" if n is None else str(n)


def eval_cell(run: Path) -> str:
    path = run.parent / f"{run.name}-eval.json"
    if not path.exists():
        return ""
    ev = json.loads(path.read_text())
    at = ev["checkpoint_step"] / 1e6
    return f"{ev['mean']:+.1f} +- {ev['std']:.1f} ({ev['episodes']} games, {ev['protocol']}, at {at:.2f}M)"


def reach_cell(games: list[tuple[float, int, float]], score: float, total: int) -> str:
    step, seconds = reached(games, score)
    if step is None:
        return f"not reached (ran {total / 1e6:.2f}M)"
    return f"{step / 1e6:.2f}M ({seconds / 60:.0f} min)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--at", default="2e5,3.5e5,5e5", help="agent steps, comma-separated")
    p.add_argument("--reach", help="scores, comma-separated: when the last-100 mean first got there")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args()
    for run in args.run_dirs:
        if not (run / "monitor.csv").is_file():
            p.exit(2, f"steps_table.py: {run} is not a run folder (no monitor.csv)\n")
    if args.reach:
        scores = [float(a) for a in args.reach.split(",")]
        head = ["trained", "resumes"] + [f"to {s:+g}" for s in scores] + ["eval (final)"]
    else:
        steps = [int(float(a)) for a in args.at.split(",")]
        head = [f"{s / 1e6:g}M" for s in steps]
    lines = ["| run | steps reached | " + " | ".join(head) + " |", "|---" * (len(head) + 2) + "|"]
    for run in args.run_dirs:
        try:
            games, (total, seconds) = read_monitor(run), total_steps(run)
        except ConfigError as e:
            p.exit(2, f"steps_table.py: {e}\n")
        if args.reach:
            cells = [f"{seconds / 60:.0f} min", resumes_cell(run)]
            cells += [reach_cell(games, s, total) for s in scores] + [eval_cell(run)]
        else:
            cells = [last100_at(games, s, total) for s in steps]
            cells = ["" if c is None else f"{c:+.1f}" for c in cells]
        lines.append(f"| {run} | {total:,} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
