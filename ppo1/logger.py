"""What a run writes: the iteration table, progress.csv, monitor.csv, TensorBoard, a progress bar."""

from __future__ import annotations

import csv
import json
import struct
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ppo1.config import Config
from ppo1.errors import ConfigError, first_line

PROGRESS = "progress.csv"


def monitor_name(rank: int) -> str:
    return "monitor.csv" if rank == 0 else f"monitor.{rank}.csv"


class Timer:
    """Seconds spent in each named phase since reset(), for the Time* columns of the logs."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.started = time.perf_counter()

    def reset(self) -> None:
        self.seconds.clear()
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    def since_reset(self) -> float:
        return time.perf_counter() - self.started


def format_table(row: dict[str, float | int | str]) -> str:
    """An aligned key/value table like baselines logger's HumanOutputFormat."""

    def fmt(v):
        return f"{v:<8.3g}" if isinstance(v, float) else str(v)

    cells = [(k, fmt(v)) for k, v in row.items()]
    kw = max(len(k) for k, _ in cells)
    vw = max(len(v) for _, v in cells)
    dashes = "-" * (kw + vw + 7)
    lines = [dashes] + [f"| {k:<{kw}} | {v:<{vw}} |" for k, v in cells] + [dashes]
    return "\n".join(lines)


def _filter_csv(path: Path, keep, skip_comment: bool = False) -> None:
    """Rewrite a CSV keeping the rows for which keep(row) is true (atomic rename)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    head = lines[:1] if skip_comment and lines and lines[0].startswith("#") else []
    reader = csv.DictReader(lines[len(head) :])
    out = head + lines[len(head) : len(head) + 1]
    # A torn last line (a crash mid-write) has missing fields: drop it with the rest.
    kept = [r for r in reader if None not in r.values() and keep(r)]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        f.writelines(out)
        if kept:
            csv.DictWriter(f, fieldnames=reader.fieldnames).writerows(kept)
    tmp.replace(path)


def drop_rows_after(run_dir: Path, timesteps: int, elapsed: float) -> None:
    """On resume, forget what was logged after the checkpoint, so nothing is counted twice."""
    _filter_csv(run_dir / PROGRESS, lambda r: int(float(r["TimestepsSoFar"])) <= timesteps)
    for mon in run_dir.glob("monitor*.csv"):
        _filter_csv(mon, lambda r: float(r["t"]) <= round(elapsed, 6), skip_comment=True)


def missing_logs(run_dir: Path, counters) -> str:
    """What progress.csv and the monitor files lack of the iterations and games a checkpoint counted
    (counters: checkpoint.Counters), in words; empty when they hold all of them."""
    path, rows = run_dir / PROGRESS, []
    if path.exists():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("Iteration")]
    logged = {int(float(r["Iteration"])) for r in rows}
    gaps = []
    lost = [i for i in range(1, counters.iterations + 1) if i not in logged]
    if lost:
        gaps.append(f"progress.csv lacks iterations {spans(lost)}")
    ends = np.array([t for mon in run_dir.glob("monitor*.csv") for t in _monitor_times(mon)])
    if len(ends) < counters.episodes:
        where = ""
        if rows:  # each game was logged with its iteration's clock: count them per iteration
            times = np.array([float(r["TimeElapsed"]) for r in rows])
            right = np.clip(np.searchsorted(times, ends), 1, len(times) - 1) if len(times) > 1 else 0
            near = np.where(np.abs(times[right - 1] - ends) <= np.abs(times[right] - ends), right - 1, right)
            counted = np.bincount(np.atleast_1d(near), minlength=len(rows))
            short = [int(float(r["Iteration"])) for r, n in zip(rows, counted) if n < float(r["EpThisIter"])]
            where = f" (iterations {spans(short)})" if short else ""
        gaps.append(f"the monitor files lack {counters.episodes - len(ends)} games{where}")
    return "; ".join(gaps)


def _monitor_times(path: Path) -> list[float]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return [float(r["t"]) for r in csv.DictReader(lines) if r.get("t")]


def spans(numbers: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out, first = [], None
    for i, n in enumerate(numbers):
        first = n if first is None else first
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(first) if first == n else f"{first}-{n}")
            first = None
    return ", ".join(out)


class MonitorWriter:
    """One row per real game in baselines' bench.Monitor format: '#{json}', then r,l,t."""

    def __init__(self, path: Path, env_name: str):
        new = not path.exists() or path.stat().st_size == 0
        self.file = path.open("a", newline="")
        if new:
            header = {"t_start": time.time(), "env_id": env_name}
            self.file.write("#" + json.dumps(header) + "\n")
            self.file.write("r,l,t\n")
        self.writer = csv.writer(self.file)

    def write(self, scores: list[float], lengths: list[int], elapsed: float) -> None:
        for r, n in zip(scores, lengths):
            self.writer.writerow([r, n, round(elapsed, 6)])  # drop_rows_after compares it rounded
        self.file.flush()

    def close(self) -> None:
        self.file.close()


WANDB_EXTRA = "pip install -e '.[wandb]'"
WANDB_ID = "wandb_run_id"  # in the run folder: a resumed run continues the same W&B run


def require_wandb():
    """The wandb package, or a one-line error naming the extra."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(f"--track needs wandb, an optional extra: {WANDB_EXTRA}") from None
    return wandb


class Tracker:
    """--track: the same scalars as TensorBoard, the resolved config and the evaluation videos, in
    one W&B run per run folder (CleanRL's --track, --wandb_project_name, --wandb_entity)."""

    def __init__(self, cfg: Config, resuming: bool):
        """resuming: continue the W&B run whose id the run folder keeps; otherwise a new W&B run (a
        run that starts over from step 0 cannot log below the old run's last step)."""
        self.wandb = require_wandb()
        id_file = cfg.run_dir / WANDB_ID
        run_id = id_file.read_text().strip() if resuming and id_file.exists() else uuid.uuid4().hex[:8]
        try:
            self.run = self.wandb.init(
                project=cfg.wandb_project,
                entity=cfg.wandb_entity or None,
                name=cfg.run_name,
                id=run_id,
                resume="allow",
                config=cfg.to_dict(),
                dir=str(cfg.run_dir),
            )
        except Exception as e:  # not logged in, no network, a bad entity: one line
            raise ConfigError(
                f"--track: W&B did not start ({first_line(e)[:200]}); WANDB_MODE=offline works"
            ) from None
        id_file.write_text(run_id + "\n")

    def log(self, row: dict, step: int) -> None:
        self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def video(self, tag: str, path: Path, step: int) -> None:
        self.run.log({tag: self.wandb.Video(str(path), format="mp4")}, step=step)

    def close(self) -> None:
        self.run.finish()


class RunBar(tqdm):
    """A progress bar whose clock is the run's training time, counted over resumes (as TimeElapsed),
    not this session's; its rate and estimate stay this session's."""

    def __init__(self, *args, trained: float = 0.0, **kwargs):
        self.trained = trained
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self):
        values = super().format_dict
        values["elapsed"] += self.trained
        return values


class Logger:
    """Rank 0's table, CSV, TensorBoard, progress bar, and the tracker (--track) if there is one."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int,
        tracker: Tracker | None = None,
        trained: float = 0.0,
    ):
        """start_step, trained: where a resumed run starts, in agent steps and seconds trained."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir, self.tracker = run_dir, tracker
        self.csv_path = run_dir / PROGRESS
        self.fieldnames: list[str] = []
        if self.csv_path.exists() and self.csv_path.stat().st_size > 0:
            with self.csv_path.open(newline="") as f:
                self.fieldnames = next(csv.reader(f), [])
        self.csv_file = self.csv_path.open("a", newline="")
        # purge_step drops the TensorBoard events logged after the checkpoint we resume from; its own
        # step stays, as progress.csv keeps its row.
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        self.bar = RunBar(
            total=total_steps,
            initial=start_step,
            trained=trained,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            disable=not sys.stdout.isatty(),
        )

    def info(self, msg: str) -> None:
        if self.bar.disable:
            print(msg, flush=True)
        else:
            self.bar.write(msg)

    def last(self, msg: str) -> None:
        """The run's last line, below the bar's final state (not followed by a redrawn bar)."""
        self.bar.close()
        print(msg, flush=True)

    def dump(self, row: dict[str, float | int], step: int, show: bool = True) -> None:
        """Every row to progress.csv, TensorBoard and the tracker; the table only if `show`."""
        if show:
            self.info(format_table(row))
        new = [k for k in row if k not in self.fieldnames]
        if new:
            self._add_columns(new)
        csv.DictWriter(self.csv_file, fieldnames=self.fieldnames).writerow(row)
        self.csv_file.flush()
        for k, v in row.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, step)
        self.tb.flush()
        if self.tracker is not None:
            self.tracker.log(row, step)

    def _add_columns(self, names: list[str]) -> None:
        """A key first logged now (a new column): rewrite the file with the wider header, older rows
        left blank there, as baselines' CSV logger does."""
        self.csv_file.close()
        with self.csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f)) if self.fieldnames else []
        self.fieldnames = self.fieldnames + names
        tmp = self.csv_path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.csv_path)
        self.csv_file = self.csv_path.open("a", newline="")

    def add_video(self, tag: str, mp4: Path, gif: bytes, step: int) -> None:
        """An evaluation game: the MP4 to the tracker, the GIF to TensorBoard."""
        self.add_gif(tag, gif, step)
        if self.tracker is not None:
            self.tracker.video(tag, mp4, step)

    def add_gif(self, tag: str, gif: bytes, step: int) -> None:
        """An animated GIF in TensorBoard's Images tab (what SummaryWriter.add_video writes, without
        its moviepy dependency)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        width, height = struct.unpack("<HH", gif[6:10])  # the GIF header's logical screen size
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
        self.tb.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self.tb.flush()

    def progress(self, step: int, sps: float, score: float) -> None:
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(sps=f"{sps:.0f}", last100=f"{score:.1f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
        self.csv_file.close()
        self.tb.close()
        if self.tracker is not None:
            self.tracker.close()
