"""`ppo1 plot`: learning curves (real game score vs agent steps and vs frames) from run folders.

Data per run: monitor.csv (baselines bench.Monitor format: a '#{json}' line, then r,l,t) merged with
the monitor.<rank>.csv files of distributed runs by the time t. The agent step of each game is the
run's real step counter when it was logged: a game is written at the end of the iteration in which
it ended, with t = that iteration's training time, so its step is the TimestepsSoFar of the
progress.csv row whose TimeElapsed (the same clock, to 2 decimals) is t (see game_steps). Not the sum
of the games' lengths l, which leaves out the games in flight and those cut at each resume. Where
no game was logged, the curve is progress.csv's EpRewMean (already a mean over the last 100 games)
vs TimestepsSoFar. Frames = 4 x agent steps.

Runs whose folder names are equal after stripping a seed suffix (-seed1, _seed1, -s1, _s1) form a
group, drawn as the mean over its runs on a common step grid with a shaded band (min-max by
default, or mean +- std).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppo1.envs import FRAME_SKIP, parse_env_name
from ppo1.errors import ConfigError

SEED_SUFFIX = re.compile(r"[-_](?:seed|s)\d+$", re.IGNORECASE)
MONITOR_FILE = re.compile(r"monitor(?:\.\d+)?\.csv")
GRID_POINTS = 256


def group_name(run_name: str) -> str:
    """'tiny-seed1', 'tiny_s2' -> 'tiny': runs of one setting with different seeds."""
    return SEED_SUFFIX.sub("", run_name) or run_name


@dataclass
class Curve:
    name: str  # the run folder's name
    steps: np.ndarray  # agent steps, increasing
    scores: np.ndarray  # smoothed real game score at those steps
    source: str  # "monitor" or "progress"
    env_id: str | None = None
    games: int = 0  # games behind the curve (0 when read from progress.csv)


def read_monitors(run_dir: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(times t, scores) of every game in the run's monitor files, ordered by t; the env id."""
    rows: list[tuple[float, float]] = []  # (t, r)
    env_id = None
    for path in sorted(p for p in run_dir.iterdir() if MONITOR_FILE.fullmatch(p.name)):
        lines = path.read_text().splitlines()
        body = []
        for line in lines:
            if line.startswith("#"):
                try:
                    env_id = env_id or json.loads(line[1:]).get("env_id")
                except ValueError:
                    pass
            elif line.strip():
                body.append(line)
        for row in csv.DictReader(body):
            try:
                t, r, _ = float(row["t"]), float(row["r"]), int(float(row["l"]))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"{path} is not a monitor file (columns r,l,t)") from None
            rows.append((t, r))
    rows.sort(key=lambda x: x[0])  # stable: games of one file logged at the same t keep their order
    times = np.array([t for t, _ in rows], dtype=np.float64)
    scores = np.array([r for _, r in rows], dtype=np.float64)
    return times, scores, env_id


def read_clock(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """progress.csv's (TimeElapsed, TimestepsSoFar) per iteration: the training clock and the real
    agent-step counter at the end of each iteration."""
    path = run_dir / "progress.csv"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has monitor files but no progress.csv to read the games' agent steps from"
        )
    with path.open(newline="") as f:
        try:
            rows = [(float(r["TimeElapsed"]), int(float(r["TimestepsSoFar"]))) for r in csv.DictReader(f)]
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}: want TimeElapsed and TimestepsSoFar in every row") from None
    return np.array([t for t, _ in rows]), np.array([s for _, s in rows], dtype=np.int64)


def game_steps(run_dir: Path, times: np.ndarray) -> np.ndarray:
    """The real agent step of each game logged at training time t (monitor.csv, increasing): the
    TimestepsSoFar of the progress.csv row whose TimeElapsed is t to 2 decimals (the nearest row
    within 0.006 s). A game with no such row is a ConfigError."""
    clock, steps = read_clock(run_dir)
    if not len(clock):  # no iteration logged: no game matches
        clock, steps = np.array([np.inf]), np.array([0])
    lo = np.minimum(np.searchsorted(clock, times - 0.006), len(clock) - 1)  # the first row not too early
    hi = np.minimum(lo + 1, len(clock) - 1)
    i = np.where(np.abs(clock[hi] - times) < np.abs(clock[lo] - times), hi, lo)
    bad = np.flatnonzero(np.abs(clock[i] - times) > 0.006)
    if len(bad):
        raise ConfigError(
            f"{run_dir}: the game logged at t={times[bad[0]]:g} s has no progress.csv row with "
            f"TimeElapsed {times[bad[0]]:.2f} ({len(bad)} such games), so its agent step is unknown"
        )
    return steps[i]


def trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each point (of all values so far at the start)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def read_progress(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / "progress.csv"
    steps, scores = [], []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                s, r = float(row["TimestepsSoFar"]), float(row["EpRewMean"])
            except (KeyError, TypeError, ValueError):
                continue
            if np.isfinite(s) and np.isfinite(r):
                steps.append(s)
                scores.append(r)
    return np.array(steps), np.array(scores)


def load_run(run_dir: Path | str, smooth: int = 100) -> Curve | None:
    """The run's curve, or None when it has logged no finished game yet."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist")
    name = Path(os.path.abspath(run_dir)).name  # a symlink's own name: runs can be relabelled
    has_monitor = any(MONITOR_FILE.fullmatch(p.name) for p in run_dir.iterdir())
    has_progress = (run_dir / "progress.csv").exists()
    if not has_monitor and not has_progress:
        raise ConfigError(f"{run_dir} has no monitor.csv or progress.csv")
    env_id = None
    if has_monitor:
        times, scores, env_id = read_monitors(run_dir)
        scores = trailing_mean(scores, smooth)
        if len(times) and has_progress:  # a live run: the games of the iteration being logged wait
            logged = times <= read_clock(run_dir)[0].max(initial=-1.0) + 0.006
            times, scores = times[logged], scores[logged]
        if len(times):
            steps = game_steps(run_dir, times).astype(np.float64)
            return Curve(name, steps, scores, "monitor", env_id, len(times))
    if has_progress:
        steps, scores = read_progress(run_dir)
        if len(steps):
            order = np.argsort(steps, kind="stable")
            return Curve(name, steps[order], scores[order], "progress", env_id)
    return None


def band(curves: list[Curve], kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and spread of the curves, interpolated on a common grid over the steps all of them
    cover; None when they do not overlap."""
    start = max(c.steps[0] for c in curves)
    end = min(c.steps[-1] for c in curves)
    if not end > start:
        return None
    grid = np.linspace(start, end, GRID_POINTS)
    ys = np.stack([np.interp(grid, c.steps, c.scores) for c in curves])
    mean = ys.mean(axis=0)
    if kind == "std":
        std = ys.std(axis=0)
        return grid, mean, mean - std, mean + std
    return grid, mean, ys.min(axis=0), ys.max(axis=0)


def read_references(path: Path | str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """label -> (agent steps, scores), in the file's order, from a label,agent_steps,score CSV."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--reference {path} does not exist")
    points: dict[str, list[tuple[float, float]]] = {}
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                point = float(row["agent_steps"]), float(row["score"])
                label = row["label"].strip()
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ConfigError(f"--reference {path} line {i}: want label,agent_steps,score") from None
            points.setdefault(label, []).append(point)
    if not points:
        raise ConfigError(f"--reference {path} holds no points (columns label,agent_steps,score)")
    return {k: (np.array([s for s, _ in v]), np.array([r for _, r in v])) for k, v in points.items()}


def is_atari(curve: Curve) -> bool:
    """Atari runs skip 4 frames per agent step; other envs, and unknown ones, count 1."""
    try:
        return parse_env_name(curve.env_id).atari if curve.env_id else True
    except ConfigError:
        return False


def draw_panel(ax, groups: dict[str, list[Curve]], references: dict, scale: float, spread: str) -> None:
    """One panel: a line per run, or a mean and band per group of seeds; then the published points.
    x is agent steps times `scale`."""
    for i, (group, members) in enumerate(groups.items()):
        color = f"C{i % 10}"
        spread_data = band(members, spread) if len(members) > 1 else None
        if spread_data is not None:
            grid, mean, lo, hi = spread_data
            what = "min-max" if spread == "minmax" else "+-std"
            ax.plot(grid * scale, mean, color=color, label=f"{group} (mean of {len(members)} runs, {what})")
            ax.fill_between(grid * scale, lo, hi, color=color, alpha=0.25, linewidth=0)
        else:  # one run, or runs that share no steps: one line each
            for j, c in enumerate(members):
                ax.plot(c.steps * scale, c.scores, color=color, label=c.name, alpha=1.0 if j == 0 else 0.6)
    for j, (label, (steps, scores)) in enumerate(references.items()):
        color = f"C{(len(groups) + j) % 10}"
        ax.plot(steps * scale, scores, "--o", color=color, label=label, markersize=4, linewidth=1)


def plot_runs(
    run_dirs: list[Path | str],
    out: Path | str | None = None,
    smooth: int = 100,
    spread="minmax",
    reference: Path | str | None = None,
    max_steps: float | None = None,
):
    """Draw the curves of `run_dirs` in two panels (agent steps, frames), and the published points
    of `reference` (see read_references), up to `max_steps` agent steps if given; save to `out` if
    given. Returns the matplotlib Figure (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    if smooth < 1:
        raise ConfigError(f"--smooth must be at least 1, got {smooth}")
    if spread not in ("minmax", "std"):
        raise ConfigError(f"--spread must be minmax or std, got {spread!r}")
    if max_steps is not None and not max_steps > 0:
        raise ConfigError(f"--max_steps must be above 0, got {max_steps:g}")
    if not run_dirs:
        raise ConfigError("give at least one RUN_DIR")
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    if out is not None:
        out = Path(out)
        fmt = out.suffix.lstrip(".").lower()
        if fmt not in fig.canvas.get_supported_filetypes():
            raise ConfigError(f"-o {out}: unknown image format {fmt!r}; use .png, .pdf or .svg")
    references = read_references(reference) if reference is not None else {}
    curves = [load_run(d, smooth) for d in run_dirs]
    empty = [str(d) for d, c in zip(run_dirs, curves) if c is None]
    curves = [c for c in curves if c is not None]
    if not curves:
        raise ConfigError(f"no finished game logged yet in {', '.join(empty)}")
    for d in empty:
        print(f"ppo1 plot: {d} has no finished game yet; left out", file=sys.stderr)
    groups: dict[str, list[Curve]] = {}
    for c in curves:
        groups.setdefault(group_name(c.name), []).append(c)

    axes = fig.subplots(1, 2, sharey=True)
    frames = (FRAME_SKIP, "frames (4 x agent steps)") if all(map(is_atari, curves)) else (1, "frames")
    for ax, (scale, xlabel) in zip(axes, [(1, "agent steps"), frames]):
        draw_panel(ax, groups, references, scale, spread)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.grid(True, alpha=0.3)
        if max_steps is not None:
            ax.set_xlim(0, max_steps * scale)
    sources = {c.source for c in curves}
    ylabel = "game score"
    if "monitor" in sources:
        ylabel += f" (mean of the last {smooth} games)"
    axes[0].set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    # Below both panels, so that long reference labels cover neither the curves nor the axis label.
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 2), fontsize="small")
    envs = sorted({c.env_id for c in curves if c.env_id})
    fig.suptitle(f"ppo1 learning curves{': ' + ', '.join(envs) if envs else ''}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    return fig


def run_plot(args) -> int:
    out = Path(args.output)
    plot_runs(
        args.run_dirs,
        out,
        smooth=args.smooth,
        spread=args.spread,
        reference=args.reference,
        max_steps=args.max_steps,
    )
    print(f"wrote {out}", flush=True)
    return 0
