"""Starting a run: resolve the flags, take the run folder (one writer), resume or move the old run
aside, check what the logs hold, then train on every rank."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

import torch

from ppo1 import checkpoint, distributed, runfiles
from ppo1.checkpoint import Counters, TrainState
from ppo1.config import Config, resolve
from ppo1.device import env_threads, pick_device, torch_threads
from ppo1.envs import check_env, render_env
from ppo1.envspec import parse_env_name
from ppo1.errors import ConfigError, RankFailure
from ppo1.logger import Tracker, require_wandb
from ppo1.trainer import StopWhen, train
from ppo1.video import require_ffmpeg

LOCK_HOLDER = "lock"  # in the run folder: which process holds it (the lock itself is on the folder)
GAPS = "gaps.txt"  # in the run folder: what a resume found missing from the logs


def start(overrides: dict, fresh: bool = False, stop_when: StopWhen | None = None) -> tuple[Config, Counters]:
    """`ppo1 train`: resolve the flags (every rank, before joining the group), set up on rank 0, share
    the config and checkpoint with the other ranks, and train. stop_when: a benchmark's extra stop
    condition (trainer.stop_after). Returns the config it trained under and where it stopped."""
    cfg = resolve(overrides)
    check_env(parse_env_name(cfg.env_name))
    device = pick_device(cfg.device)
    dist = distributed.init(cfg.dist_timeout, device)
    if device.type == "cuda" and dist.active:
        device = torch.device("cuda", dist.local_rank % torch.cuda.device_count())  # ranks may share a GPU
        torch.cuda.set_device(device)
    lock = None
    try:
        error, resume, tracker = None, None, None
        if dist.rank == 0:
            try:
                cfg, resume, lock = prepare(cfg, overrides, fresh, dist.world_size, device)
                tracker = Tracker(cfg, resuming=resume is not None) if cfg.track else None
            except ConfigError as e:
                error = str(e)
        error, cfg, resume = dist.broadcast_object((error, cfg, resume))
        if error is not None:
            raise ConfigError(error if dist.rank == 0 else f"rank 0 refused to start: {error}")
        cfg.run_dir.mkdir(parents=True, exist_ok=True)  # for monitor.<rank>.csv on other machines
        counters = train(cfg, resume, dist, device, tracker, stop_when)
    except RankFailure:
        distributed.abandon()
        raise
    except BaseException:
        distributed.shutdown()
        raise
    finally:
        if lock is not None:  # only a kill leaves the holder's name behind; the next run replaces it
            (cfg.run_dir / LOCK_HOLDER).unlink(missing_ok=True)
            os.close(lock)  # the kernel also drops the lock when the process dies
    distributed.shutdown()
    return cfg, counters


def prepare(
    cfg: Config, overrides: dict, fresh: bool, world_size: int, device: torch.device
) -> tuple[Config, TrainState | None, int | None]:
    """Rank 0: take the run folder, load the checkpoint to resume, set it up. Every check that can
    fail on bad input runs before anything is written. Returns the config, the state to resume and
    the lock (a file descriptor to keep open while training; None where the folder cannot be
    locked)."""
    check_writable(cfg.run_dir)
    existed = cfg.run_dir.is_dir()
    lock = lock_run_dir(cfg.run_dir) if existed else None
    try:
        cfg, resume = (cfg, None) if fresh else load_resume(cfg, overrides, world_size)
        if cfg.track:
            require_wandb()
        if cfg.capture_video:
            require_ffmpeg()
            render_env(parse_env_name(cfg.env_name), "rgb_array", cfg.frame_stacking).close()
        if fresh and existed:
            move_aside(cfg.run_dir)
        try:
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"cannot create run folder {cfg.run_dir} ({e.strerror}); check --model_name"
            ) from None
        if fresh or not existed:  # a new folder: lock it (the old one, moved aside, is let go)
            new = lock_run_dir(cfg.run_dir)
            if lock is not None:
                os.close(lock)
            lock = new
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    (cfg.run_dir / LOCK_HOLDER).write_text(holder + "\n")
    checkpoint.remove_temporaries(cfg.run_dir)
    c = resume.counters if resume else Counters()
    runfiles.drop_rows_after(cfg.run_dir, c.timesteps, c.elapsed)
    if resume is not None:
        report_gaps(cfg.run_dir, c)
        c.resumes += 1
    record = dict(cfg.to_dict(), model_name=cfg.run_name, device=device.type, resumes=c.resumes)
    record.update(torch_threads=torch_threads(cfg.torch_threads))
    record.update(env_threads=env_threads(cfg.env_threads, cfg.num_envs))
    runfiles.write_config(cfg.run_dir, record)  # what it runs with
    print(f"run folder {cfg.run_dir}; preset {cfg.preset}; {cfg.env_name}", flush=True)
    return cfg, resume, lock


def lock_run_dir(run_dir: Path) -> int | None:
    """An exclusive flock on the run folder itself, or a one-line error naming the process that
    holds it. The kernel releases it when the holder exits or is killed, so it is never stale.
    Where the filesystem cannot lock (some network filesystems), say so and run without."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        try:
            holder = (run_dir / LOCK_HOLDER).read_text().strip() or "another process"
        except OSError:
            holder = "another process"
        raise ConfigError(
            f"run folder {run_dir} is in use by {holder}; stop that run first, or pick another --model_name"
        ) from None
    except OSError as e:
        os.close(fd)
        print(
            f"warning: cannot lock {run_dir} ({e.strerror}): a second ppo1 train on it would not be stopped",
            flush=True,
        )
        return None
    return fd


def report_gaps(run_dir: Path, counters: Counters) -> None:
    """A resume whose logs do not reach its checkpoint says which iterations they lack, in one line
    and in gaps.txt, instead of logging on as if nothing were missing (once per gap)."""
    what = runfiles.missing_logs(run_dir, counters.iterations, counters.episodes)
    known = (run_dir / GAPS).read_text() if (run_dir / GAPS).exists() else ""
    if what and what not in known:
        line = f"resuming at iteration {counters.iterations}, but {what}"
        with (run_dir / GAPS).open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        print(f"warning: {line} (noted in {run_dir / GAPS})", flush=True)


def check_writable(run_dir: Path) -> None:
    """The run folder, or its nearest existing parent, must be a folder we can really create in
    (tried: permission bits do not stop root, /proc does)."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot create run folder {run_dir}: {existing} is not a folder")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".ppo1-write-test-").cleanup()
    except OSError as e:
        why = "it takes no new folders" if e.errno == errno.ENOENT else e.strerror  # /proc says ENOENT
        raise ConfigError(
            f"cannot create folders in {existing} ({why}); pick another --checkpoint_dir"
        ) from None


def load_resume(cfg: Config, overrides: dict, world_size: int) -> tuple[Config, TrainState | None]:
    """The checkpoint to resume, if the run folder has one, and the config it resumes with: the saved
    one with the flags given on top. Prints what changed."""
    path = cfg.run_dir / checkpoint.CHECKPOINT
    if not path.exists():
        return cfg, None
    resume = checkpoint.load_state(path)
    cfg = resolve(overrides, base=resume.config)  # the folder the flags named holds the base
    checkpoint.check_compatible(resume, cfg, path)
    changed = [
        f"{k}: {v!r} -> {getattr(cfg, k)!r}" for k, v in resume.config.items() if getattr(cfg, k, v) != v
    ]
    if resume.world_size != world_size:
        changed.append(f"world size: {resume.world_size} -> {world_size}")
    c = resume.counters
    print(
        f"resuming {path} at step {c.timesteps} (iteration {c.iterations}, resume {c.resumes + 1})"
        + (f"; changed: {', '.join(changed)}" if changed else ""),
        flush=True,
    )
    return cfg, resume


def move_aside(run_dir: Path) -> None:
    """--fresh: the old run folder becomes <name>.old-<date>[-n], never deleted."""
    stamp = f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, n = run_dir.with_name(stamp), 1
    while aside.exists():
        aside, n = run_dir.with_name(f"{stamp}-{n}"), n + 1
    run_dir.rename(aside)
    print(f"--fresh: moved the old run folder to {aside}", flush=True)
