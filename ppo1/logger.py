"""What a run writes: the iteration table, progress.csv, monitor.csv, TensorBoard, a progress bar."""

from __future__ import annotations

import csv
import json
import struct
import sys
import time
from pathlib import Path

from tqdm import tqdm

PROGRESS = "progress.csv"


def monitor_name(rank: int) -> str:
    return "monitor.csv" if rank == 0 else f"monitor.{rank}.csv"


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


class Logger:
    """Rank 0's table, CSV, TensorBoard and progress bar."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.csv_path = run_dir / PROGRESS
        self.fieldnames: list[str] = []
        if self.csv_path.exists() and self.csv_path.stat().st_size > 0:
            with self.csv_path.open(newline="") as f:
                self.fieldnames = next(csv.reader(f), [])
        self.csv_file = self.csv_path.open("a", newline="")
        # purge_step drops TensorBoard events logged after the checkpoint we resume from.
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step or None)
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
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

    def dump(self, row: dict[str, float | int], step: int) -> None:
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

    def add_gif(self, tag: str, gif: bytes, step: int) -> None:
        """An animated GIF in TensorBoard's Images tab (what SummaryWriter.add_video writes, without
        its moviepy dependency)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        width, height = struct.unpack("<HH", gif[6:10])  # the GIF header's logical screen size
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
        self.tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self.tb.flush()

    def progress(self, step: int, sps: float, score: float) -> None:
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(sps=f"{sps:.0f}", score=f"{score:.1f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
        self.csv_file.close()
        self.tb.close()
