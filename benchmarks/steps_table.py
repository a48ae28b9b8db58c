"""Last-100 real score of runs at given agent steps, as a Markdown table (from monitor.csv).

    python benchmarks/steps_table.py RUN_DIR [RUN_DIR ...] [--at 2e5,3.5e5,5e5] [-o table.md]

A cell is empty where the run did not reach that step. Costs nothing: it reads files.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning import last100_at, read_monitor  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--at", default="2e5,3.5e5,5e5")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args()
    steps = [int(float(a)) for a in args.at.split(",")]
    lines = ["| run | steps reached | " + " | ".join(f"{s / 1e6:g}M" for s in steps) + " |"]
    lines.append("|---" * (len(steps) + 2) + "|")
    for run in args.run_dirs:
        games = read_monitor(run / "monitor.csv")
        with (run / "progress.csv").open() as f:
            total = int(float(list(csv.DictReader(f))[-1]["TimestepsSoFar"]))
        cells = [last100_at(games, s, total) for s in steps]
        text = ["" if c is None else f"{c:+.1f}" for c in cells]
        lines.append(f"| {run} | {total:,} | " + " | ".join(text) + " |")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
