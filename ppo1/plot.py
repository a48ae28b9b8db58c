"""Learning curves (real game score vs agent steps and vs frames) from run folders, for `ppo1 plot`.

Data per run: its games in monitor.csv and the monitor.<rank>.csv files of distributed runs, each at
the run's real step counter when it was logged (ppo1.runfiles.game_steps). Where no game was logged,
the curve is progress.csv's EpRewMean (already a mean over the last 100 games) vs TimestepsSoFar.
Frames = 4 x agent steps.

Runs whose folder names are equal after stripping a seed suffix (-seed1, _seed1, -s1, _s1) form a
group, drawn as the mean over its runs on a common step grid with a shaded band (min-max by
default, or mean +- std).
"""

from __future__ import annotations

import csv
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppo1.envspec import FRAME_SKIP, parse_env_name
from ppo1.errors import ConfigError
from ppo1.runfiles import MONITOR_FILE, PROGRESS, game_steps, read_clock, read_monitors, read_progress

SEED_SUFFIX = re.compile(r"[-_](?:seed|s)\d+$", re.IGNORECASE)
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


def trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each point (of all values so far at the start)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def progress_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """progress.csv's (TimestepsSoFar, EpRewMean) where both are numbers."""
    steps, scores = [], []
    for row in read_progress(run_dir):
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
    has_progress = (run_dir / PROGRESS).exists()
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
        steps, scores = progress_curve(run_dir)
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
