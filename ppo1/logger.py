"""What rank 0 shows and logs each iteration: the table, progress.csv (ppo1.runfiles), TensorBoard,
the progress bar, and --track (Weights & Biases)."""

from __future__ import annotations

import struct
import sys
import uuid
from pathlib import Path

from tqdm import tqdm

from ppo1.config import Config
from ppo1.errors import ConfigError, first_line
from ppo1.runfiles import ProgressWriter


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
    not this session's; its rate, and the estimate from it, are this session's steps over this
    session's seconds (tqdm's own fallback would divide them by the run's, and its smoothed rate
    swings at the last refresh, when a run stops)."""

    def __init__(self, *args, trained: float = 0.0, **kwargs):
        self.trained = trained
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self):
        values = super().format_dict
        session = values["elapsed"]
        values["rate"] = (values["n"] - values["initial"]) / session if session > 0 else None
        values["elapsed"] = session + self.trained
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
        self.progress_csv = ProgressWriter(run_dir)
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
        self.progress_csv.write(row)
        for k, v in row.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, step)
        self.tb.flush()
        if self.tracker is not None:
            self.tracker.log(row, step)

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
        self.progress_csv.close()
        self.tb.close()
        if self.tracker is not None:
            self.tracker.close()
