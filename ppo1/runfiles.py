"""A run's files, read and written here alone: progress.csv (one row per iteration), monitor.csv
(one row per real game, baselines' bench.Monitor format), config.json (what the run trains with);
and the one atomic write every file of ppo1 goes through.

The agent step of a game is the run's real step counter when it was logged: a game is written at
the end of the iteration in which it ended, with t = that iteration's training time, so its step is
the TimestepsSoFar of the progress.csv row whose TimeElapsed (the same clock, to 2 decimals) is t
(game_steps). Not the sum of the games' lengths, which leaves out the games in flight and those cut
at each resume.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppo1.errors import ConfigError

PROGRESS = "progress.csv"
CONFIG = "config.json"
# The usual mode of a new file, from the umask read once here: reading it means setting it, which
# at write time would race with other threads creating files.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
MONITOR_FILE = re.compile(r"monitor(?:\.\d+)?\.csv")  # monitor.csv (rank 0), monitor.<rank>.csv


@dataclass
class Pending:
    """A file being written: `tmp` now, `path` once done (a name may be known only at the end)."""

    tmp: Path
    path: Path


@contextmanager
def atomic_write(path: Path, fsync: bool = False) -> Iterator[Pending]:
    """Write to a hidden temporary file beside `path` (same suffix: ffmpeg picks its format by it);
    when the block ends without error it replaces `pending.path` at once (os.replace), so a reader,
    or a kill, sees the old file or the new one, never half of one. fsync: to the disk first (a
    checkpoint). On error the temporary file is removed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600
    pending = Pending(Path(tmp), path)
    try:
        yield pending
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, pending.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.tmp.write_text(text)


def monitor_name(rank: int) -> str:
    return "monitor.csv" if rank == 0 else f"monitor.{rank}.csv"


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


def read_monitors(run_dir: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(times t, scores) of every game in the run's monitor files, ordered by t; the env id."""
    rows: list[tuple[float, float]] = []  # (t, r)
    env_id = None
    for path in sorted(p for p in run_dir.iterdir() if MONITOR_FILE.fullmatch(p.name)):
        body = []
        for line in path.read_text().splitlines():
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


class ProgressWriter:
    """progress.csv: one row per iteration, appended and flushed. A key first logged later (a new
    column) rewrites the file with the wider header, older rows left blank there, as baselines' CSV
    logger does."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / PROGRESS
        self.fieldnames: list[str] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                self.fieldnames = next(csv.reader(f), [])
        self.file = self.path.open("a", newline="")

    def write(self, row: dict[str, float | int]) -> None:
        new = [k for k in row if k not in self.fieldnames]
        if new:
            self._add_columns(new)
        csv.DictWriter(self.file, fieldnames=self.fieldnames).writerow(row)
        self.file.flush()

    def _add_columns(self, names: list[str]) -> None:
        self.file.close()
        rows = read_progress(self.path.parent) if self.fieldnames else []
        self.fieldnames = self.fieldnames + names
        with atomic_write(self.path) as f, f.tmp.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=self.fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        self.file = self.path.open("a", newline="")

    def close(self) -> None:
        self.file.close()


def read_progress(run_dir: Path) -> list[dict[str, str]]:
    """progress.csv's rows as written (empty where there is none)."""
    path = run_dir / PROGRESS
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_clock(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """progress.csv's (TimeElapsed, TimestepsSoFar) per iteration: the training clock and the real
    agent-step counter at the end of each iteration."""
    path = run_dir / PROGRESS
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has monitor files but no progress.csv to read the games' agent steps from"
        )
    try:
        rows = [(float(r["TimeElapsed"]), int(float(r["TimestepsSoFar"]))) for r in read_progress(run_dir)]
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


def _filter_csv(path: Path, keep, skip_comment: bool = False) -> None:
    """Rewrite a CSV keeping the rows for which keep(row) is true."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    head = lines[:1] if skip_comment and lines and lines[0].startswith("#") else []
    reader = csv.DictReader(lines[len(head) :])
    out = head + lines[len(head) : len(head) + 1]
    # A torn last line (a crash mid-write) has missing fields: drop it with the rest.
    kept = [r for r in reader if None not in r.values() and keep(r)]
    with atomic_write(path) as f, f.tmp.open("w", newline="") as csv_file:
        csv_file.writelines(out)
        if kept:
            csv.DictWriter(csv_file, fieldnames=reader.fieldnames).writerows(kept)


def drop_rows_after(run_dir: Path, timesteps: int, elapsed: float) -> None:
    """On resume, forget what was logged after the checkpoint, so nothing is counted twice."""
    _filter_csv(run_dir / PROGRESS, lambda r: int(float(r["TimestepsSoFar"])) <= timesteps)
    for mon in run_dir.glob("monitor*.csv"):
        _filter_csv(mon, lambda r: float(r["t"]) <= round(elapsed, 6), skip_comment=True)


def missing_logs(run_dir: Path, iterations: int, episodes: int) -> str:
    """What progress.csv and the monitor files lack of the iterations and games a checkpoint counted,
    in words; empty when they hold all of them."""
    rows = [r for r in read_progress(run_dir) if r.get("Iteration")]
    logged = {int(float(r["Iteration"])) for r in rows}
    gaps = []
    lost = [i for i in range(1, iterations + 1) if i not in logged]
    if lost:
        gaps.append(f"progress.csv lacks iterations {spans(lost)}")
    ends = read_monitors(run_dir)[0]
    if len(ends) < episodes:
        where = ""
        if rows:  # each game was logged with its iteration's clock: count them per iteration
            times = np.array([float(r["TimeElapsed"]) for r in rows])
            right = np.clip(np.searchsorted(times, ends), 1, len(times) - 1) if len(times) > 1 else 0
            near = np.where(np.abs(times[right - 1] - ends) <= np.abs(times[right] - ends), right - 1, right)
            counted = np.bincount(np.atleast_1d(near), minlength=len(rows))
            short = [int(float(r["Iteration"])) for r, n in zip(rows, counted) if n < float(r["EpThisIter"])]
            where = f" (iterations {spans(short)})" if short else ""
        gaps.append(f"the monitor files lack {episodes - len(ends)} games{where}")
    return "; ".join(gaps)


def spans(numbers: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out, first = [], None
    for i, n in enumerate(numbers):
        first = n if first is None else first
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(first) if first == n else f"{first}-{n}")
            first = None
    return ", ".join(out)


def write_config(run_dir: Path, record: dict) -> None:
    """config.json: the resolved config the run trains with (and how it runs: device, threads)."""
    write_text(run_dir / CONFIG, json.dumps(record, indent=2) + "\n")


def read_config(run_dir: Path) -> dict | None:
    """The run's config.json, None where there is none; ConfigError where it is not a ppo1 config."""
    path = run_dir / CONFIG
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    if not isinstance(saved, dict) or "env_name" not in saved:
        raise ConfigError(f"{path} is not a ppo1 config")
    return saved
