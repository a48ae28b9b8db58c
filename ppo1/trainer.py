"""Training: the iteration (collect, GAE, update, log, save), set-up and resume beside it."""

from __future__ import annotations

import signal
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from ppo1 import checkpoint, distributed
from ppo1.checkpoint import Counters, TrainState
from ppo1.config import Config, resolve
from ppo1.distributed import Dist
from ppo1.envs import VecEnv, default_threads, env_dims, parse_env_name
from ppo1.errors import ConfigError, RankFailure
from ppo1.evaluate import evaluate_in_training
from ppo1.learner import lr_multiplier, update
from ppo1.logger import Logger, MonitorWriter, Tracker, drop_rows_after, monitor_name, require_wandb
from ppo1.policies import make_policy, pick_device
from ppo1.rollout import Rollout, Segment, compute_gae
from ppo1.video import capture_video, render_env, require_ffmpeg


def nanmean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


class StopFlag:
    """First Ctrl-C or SIGTERM asks the loop to save and exit; a second Ctrl-C kills at once."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __call__(self) -> bool:
        return self.requested

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def env_seeds(cfg: Config, rank: int, iterations: int) -> np.ndarray:
    """Env g (numbered across ranks) gets seed + 10000 g: baselines' seed + 10000 * rank, where
    each rank had one env, so N ranks x M envs start the same games as 1 rank x N*M envs.
    A resumed run draws fresh games from (seed, rank, iteration)."""
    if iterations == 0:
        return cfg.seed + 10000 * (rank * cfg.num_envs + np.arange(cfg.num_envs))
    state = np.random.SeedSequence([cfg.seed, rank, iterations]).generate_state(cfg.num_envs)
    return (state >> 2).astype(np.int64)


def rng_state(device: torch.device) -> dict:
    """This process's random generators: torch's CPU one, and the CUDA one that samples actions on a
    GPU. The emulators' state is not saved."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return dict(torch=torch.get_rng_state(), cuda=cuda)


def restore_rng(saved: dict, device: torch.device) -> None:
    torch.set_rng_state(saved["torch"])
    if saved.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda"], device)


class Trainer:
    """One rank's training run: its envs, the policy and Adam, the rollout, the counters and the
    last-100 buffers, and (rank 0) the logs. iteration() is the loop body."""

    def __init__(
        self,
        cfg: Config,
        resume: TrainState | None,
        d: Dist,
        device: torch.device,
        tracker: Tracker | None = None,
    ):
        self.cfg, self.d, self.device = cfg, d, device
        torch.set_num_threads(cfg.torch_threads or default_threads())
        torch.manual_seed(cfg.seed + 10000 * d.rank)
        self.counters = Counters() if resume is None else resume.counters
        self.recent = {k: deque(maxlen=100) for k in ("scores", "lengths", "clipped")}
        self.generator = torch.Generator().manual_seed(cfg.seed)  # minibatch order, the same on all ranks
        self.envs = self._make_envs()
        env = self.envs[0]
        self.policy = make_policy(
            cfg.model_type,
            env.observation_shape,
            env.num_actions,
            env.discrete,
            cfg.hid_size,
            cfg.num_hid_layers,
            cfg.pi_gain,
        ).to(device)
        # baselines' pposgd_simple.learn also passes adam_epsilon=1e-5 to MpiAdam.
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.optim_stepsize, eps=1e-5)
        if resume is not None:
            self._resume(resume)
        d.broadcast_state(self.policy, self.optimizer)  # baselines MpiAdam.sync(): identical start
        self.params = list(self.policy.parameters())
        self.rollout = Rollout(self.envs, self.policy, cfg.timesteps_per_actorbatch, cfg.gamma, device)
        self.monitor = MonitorWriter(cfg.run_dir / monitor_name(d.rank), cfg.env_name)
        self.logger = (
            Logger(cfg.run_dir, cfg.env_steps, self.counters.timesteps, tracker) if d.rank == 0 else None
        )
        self.stop = StopFlag()
        # One process may drop a half-collected batch at once; ranks agree once per iteration.
        self.stop_in_rollout = self.stop if not d.active else (lambda: False)
        self.session_start, self.session_steps = time.perf_counter(), self.counters.timesteps
        self.elapsed_at_start = self.counters.elapsed
        self.ckpt_path = cfg.run_dir / checkpoint.CHECKPOINT

    def _make_envs(self) -> list[VecEnv]:
        cfg = self.cfg
        seeds = env_seeds(cfg, self.d.rank, self.counters.iterations)
        spec = parse_env_name(cfg.env_name)
        return [
            VecEnv(
                spec,
                len(group),
                seed=group,
                frame_stack=cfg.frame_stacking,
                episode_life=cfg.episode_life,
                clip_rewards=cfg.clip_rewards,
                threads=cfg.env_threads,
            )
            for group in np.array_split(seeds, cfg.env_groups)
        ]

    def _resume(self, resume: TrainState) -> None:
        if resume.num_actions != self.envs[0].num_actions:
            raise ConfigError(
                f"checkpoint has {resume.num_actions} actions, {self.cfg.env_name} has "
                f"{self.envs[0].num_actions}; use another --model_name or --fresh"
            )
        for k, v in resume.recent.items():
            self.recent[k].extend(v)
        self.policy.load_state_dict(resume.model)
        self.optimizer.load_state_dict(resume.optimizer)
        self.generator.set_state(resume.generator)
        # Each rank its own generators; a rank the checkpoint has none for (a larger world) keeps its seed.
        if self.d.rank < len(resume.rank_rngs):
            restore_rng(resume.rank_rngs[self.d.rank], self.device)

    def iteration(self) -> dict | None:
        """One PPO iteration, as CleanRL's ppo_atari.py main loop. Returns the log row (on every
        rank), or None if a stop signal came during collection (the partial batch is dropped)."""
        cfg, t0 = self.cfg, time.perf_counter()
        self.rollout.timings.clear()
        self.d.comm_seconds = 0.0
        lrmult = lr_multiplier(self.counters.timesteps, cfg.env_steps, cfg.schedule)
        seg = self.rollout.collect(should_stop=self.stop_in_rollout)
        if seg is None:
            return None
        t_gae = time.perf_counter()
        seg.advantages, seg.returns = compute_gae(
            seg.rewards, seg.values, seg.dones, seg.last_values, cfg.gamma, cfg.lam
        )
        self.policy.update_statistics(seg, self.d.sum)  # MLP: baselines' ob_rms.update; Atari: none
        t_update = time.perf_counter()
        stats = update(
            self.policy,
            self.optimizer,
            seg,
            lrmult=lrmult,
            optim_stepsize=cfg.optim_stepsize,
            epsilon=cfg.epsilon,
            ent_coef=cfg.ent_coef,
            optim_epochs=cfg.optim_epochs,
            minibatch_size=cfg.minibatch_size,
            generator=self.generator,
            norm_adv=cfg.norm_adv,
            moments=self.d.moments,
            reduce_grads=lambda: self.d.reduce_grads(self.params),
        )
        now = time.perf_counter()
        self.check_finite(stats)
        scores = self.count(seg, now)
        if self.counters.iterations % cfg.sync_check_interval == 0:
            self.d.check_synced(self.policy, self.counters.iterations)
        timings = dict(
            **self.rollout.timings, gae=t_update - t_gae, update=now - t_update, iteration=now - t0
        )
        row = self.log_row(stats, scores, timings, now)
        if self.logger is not None:
            self.log(row)
        if self.counters.iterations % cfg.save_interval == 0:
            self.save()
        return row

    def reached(self, score: float) -> bool:
        """The last-100 window of real scores is full and its mean is at least score."""
        scores = self.recent["scores"]
        return len(scores) == scores.maxlen and sum(scores) / len(scores) >= score

    def check_finite(self, stats: dict) -> None:
        bad = [k for k, v in stats.items() if k != "ev_tdlam_before" and not np.isfinite(v)]
        bad += [n for n, p in self.policy.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise FloatingPointError(
                f"non-finite {', '.join(bad)} at iteration {self.counters.iterations + 1}; "
                f"stopped without saving: the last good checkpoint is {self.ckpt_path}"
            )

    def count(self, seg: Segment, now: float) -> int:
        """Counters and last-100 buffers over all ranks; this rank's games to its monitor file.
        Returns the number of games that ended this iteration (all ranks)."""
        c, d = self.counters, self.d
        c.elapsed = self.elapsed_at_start + now - self.session_start
        self.monitor.write(seg.scores, seg.lengths, c.elapsed)
        scores = d.gather(seg.scores)
        self.recent["scores"].extend(scores)
        self.recent["lengths"].extend(d.gather(seg.lengths))
        self.recent["clipped"].extend(d.gather(seg.clipped_returns))
        c.timesteps += self.cfg.batch_size * d.world_size
        c.iterations += 1
        c.episodes += len(scores)
        return len(scores)

    def log_row(self, stats: dict, games: int, timings: dict, now: float) -> dict:
        """baselines' logger keys: the losses, then the last-100 real scores, counters and timings."""
        c = self.counters
        sps = (c.timesteps - self.session_steps) / (now - self.session_start)
        return dict(
            stats,
            EpLenMean=nanmean(self.recent["lengths"]),
            EpRewMean=nanmean(self.recent["scores"]),
            EpRewMeanClipped=nanmean(self.recent["clipped"]),
            EpThisIter=games,
            EpisodesSoFar=c.episodes,
            TimestepsSoFar=c.timesteps,
            Iteration=c.iterations,
            TimeElapsed=round(c.elapsed, 2),
            StepsPerSecond=round(sps, 1),
            TimeEnv=round(timings["env"], 4),
            TimeInference=round(timings["inference"], 4),
            TimeGAE=round(timings["gae"], 4),
            TimeUpdate=round(timings["update"], 4),
            TimeAllReduce=round(self.d.comm_seconds, 4),
            TimeIteration=round(timings["iteration"], 4),
        )

    def log(self, row: dict) -> None:
        """Rank 0: evaluation games when due, then progress.csv, TensorBoard, --track and the bar; the
        table every --log_interval iterations and with every evaluation."""
        cfg, step, iterations = self.cfg, self.counters.timesteps, self.counters.iterations
        evaluating = cfg.eval_interval and iterations % cfg.eval_interval == 0
        if evaluating:
            row.update(evaluate_in_training(self.policy, cfg, self.device))
            if cfg.capture_video:
                path, gif = capture_video(self.policy, cfg, step, self.device)
                self.logger.add_video("eval/video", path, gif, step)
                self.logger.info(f"recorded {path}")
        self.logger.dump(row, step, show=evaluating or iterations % cfg.log_interval == 0)
        self.logger.progress(step, row["StepsPerSecond"], row["EpRewMean"])

    def save(self) -> None:
        """Every rank hands its generators to rank 0, which writes the checkpoint."""
        rank_rngs = self.d.gather_object(rng_state(self.device))
        if self.d.rank != 0:
            return
        env = self.envs[0]
        state = TrainState(
            model=self.policy.state_dict(),
            optimizer=self.optimizer.state_dict(),
            config=self.cfg.to_dict(),
            counters=self.counters,
            recent={k: list(v) for k, v in self.recent.items()},
            generator=self.generator.get_state(),
            rank_rngs=rank_rngs,
            num_actions=env.num_actions,
            observation_shape=list(env.observation_shape),
            world_size=self.d.world_size,
        )
        checkpoint.save_state(self.ckpt_path, state)

    def close(self) -> None:
        self.stop.restore()
        self.monitor.close()
        if self.logger is not None:
            self.logger.close()
        for e in self.envs:
            e.close()


def train(
    cfg: Config,
    resume: TrainState | None = None,
    d: Dist | None = None,
    device: torch.device | None = None,
    max_seconds: float | None = None,
    max_steps: int | None = None,
    tracker: Tracker | None = None,
    target: float | None = None,
) -> Counters:
    """Train until cfg.env_steps agent steps (over all ranks), a stop signal, max_seconds of wall
    clock in this session, max_steps agent steps or a last-100 mean of at least target (benchmarks
    use these three: the schedules still anneal over cfg.env_steps). Saves at the end; returns the
    counters."""
    d = d or Dist()
    run = Trainer(cfg, resume, d, device or pick_device(cfg.device), tracker)
    end = min(cfg.env_steps, max_steps or cfg.env_steps)
    try:
        while run.counters.timesteps < end:
            out_of_time = max_seconds is not None and time.perf_counter() - run.session_start > max_seconds
            done = target is not None and run.reached(target)
            if d.any(run.stop() or out_of_time or done) or run.iteration() is None:
                break
        run.save()
        if run.logger is not None:
            step, path = run.counters.timesteps, run.ckpt_path
            if run.stop():
                run.logger.info(
                    f"{run.stop.signal_name}: saved {path} at step {step}; "
                    "run the same command again to resume"
                )
            else:
                run.logger.info(f"stopped at step {step}; saved {path}")
    except RuntimeError as e:  # a collective failed: name the rank that went away
        if d.active and not isinstance(e, RankFailure):
            raise RankFailure(d.describe_failure(e)) from e
        raise
    finally:
        run.close()
    return run.counters


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
        raise ConfigError(
            f"cannot write to {existing} ({e.strerror}); pick another --checkpoint_dir"
        ) from None


def load_resume(cfg: Config, overrides: dict, world_size: int) -> tuple[Config, TrainState | None]:
    """The checkpoint to resume, if the run folder has one, and the config it resumes with: the saved
    one with the flags given on top. Prints what changed."""
    path = cfg.run_dir / checkpoint.CHECKPOINT
    if not path.exists():
        return cfg, None
    resume = checkpoint.load_state(path)
    cfg = resolve(overrides, base=resume.config)
    checkpoint.check_compatible(resume.config, cfg.to_dict(), path)
    actions = env_dims(parse_env_name(cfg.env_name), cfg.frame_stacking)[1]
    if resume.num_actions != actions:
        raise ConfigError(
            f"checkpoint {path} has {resume.num_actions} actions, {cfg.env_name} has "
            f"{actions}; use another --model_name or --fresh"
        )
    changed = [
        f"{k}: {v!r} -> {getattr(cfg, k)!r}" for k, v in resume.config.items() if getattr(cfg, k, v) != v
    ]
    if resume.world_size != world_size:
        changed.append(f"world size: {resume.world_size} -> {world_size}")
    c = resume.counters
    print(
        f"resuming {path} at step {c.timesteps} (iteration {c.iterations})"
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


def prepare(cfg: Config, overrides: dict, fresh: bool, world_size: int) -> tuple[Config, TrainState | None]:
    """Rank 0: load the checkpoint to resume, set up the run folder. Every check that can fail on bad
    input runs before anything is written."""
    check_writable(cfg.run_dir)
    cfg, resume = (cfg, None) if fresh else load_resume(cfg, overrides, world_size)
    pick_device(cfg.device)
    if cfg.track:
        require_wandb()
    if cfg.capture_video:
        require_ffmpeg()
        render_env(parse_env_name(cfg.env_name), "rgb_array", cfg.frame_stacking).close()
    if fresh and cfg.run_dir.exists():
        move_aside(cfg.run_dir)
    try:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create run folder {cfg.run_dir} ({e.strerror}); check --model_name"
        ) from None
    for stale in cfg.run_dir.glob(".checkpoint-*"):  # a save interrupted by a kill
        stale.unlink(missing_ok=True)
    c = resume.counters if resume else Counters()
    drop_rows_after(cfg.run_dir, c.timesteps, c.elapsed)
    cfg.save(cfg.run_dir / "config.json")
    print(f"run folder {cfg.run_dir}; preset {cfg.preset}; {cfg.env_name}", flush=True)
    return cfg, resume


def start(
    overrides: dict,
    fresh: bool = False,
    max_seconds: float | None = None,
    max_steps: int | None = None,
    target: float | None = None,
) -> Counters:
    """`ppo1 train`: resolve the flags (every rank, before joining the group), set up on rank 0, share
    the config and checkpoint with the other ranks, and train."""
    cfg = resolve(overrides)
    device = pick_device(cfg.device)
    d = distributed.init(cfg.dist_timeout, device)
    if device.type == "cuda" and d.active:
        device = torch.device("cuda", d.local_rank % torch.cuda.device_count())  # ranks may share a GPU
        torch.cuda.set_device(device)
    try:
        error, resume, tracker = None, None, None
        if d.rank == 0:
            try:
                cfg, resume = prepare(cfg, overrides, fresh, d.world_size)
                tracker = Tracker(cfg, resuming=resume is not None) if cfg.track else None
            except ConfigError as e:
                error = str(e)
        error, cfg, resume = d.broadcast_object((error, cfg, resume))
        if error is not None:
            raise ConfigError(error if d.rank == 0 else f"rank 0 refused to start: {error}")
        cfg.run_dir.mkdir(parents=True, exist_ok=True)  # for monitor.<rank>.csv on other machines
        counters = train(cfg, resume, d, device, max_seconds, max_steps, tracker, target)
    except RankFailure:
        distributed.abandon()
        raise
    except BaseException:
        distributed.shutdown()
        raise
    distributed.shutdown()
    return counters
