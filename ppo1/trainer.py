"""Training: one rank's run, the iteration (collect, GAE, update, log, save) and the loop around it."""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import torch

from ppo1 import checkpoint
from ppo1.checkpoint import Counters, TrainState, restore_rng, rng_state
from ppo1.config import Config
from ppo1.device import pick_device, torch_threads
from ppo1.distributed import Dist
from ppo1.envs import VecEnv
from ppo1.envspec import parse_env_name
from ppo1.errors import RankFailure
from ppo1.evaluate import evaluate_in_training
from ppo1.learner import make_optimizer, update
from ppo1.logger import Logger, Tracker
from ppo1.policies import make_policy
from ppo1.rollout import Rollout, Segment
from ppo1.runfiles import MonitorWriter, monitor_name
from ppo1.timer import Timer
from ppo1.video import capture_video


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


class Trainer:
    """One rank's training run: its envs, the policy and Adam, the rollout, the counters and the
    last-100 buffers, and (rank 0) the logs. iteration() is the loop body."""

    def __init__(
        self,
        cfg: Config,
        resume: TrainState | None,
        dist: Dist,
        device: torch.device,
        tracker: Tracker | None = None,
    ):
        self.cfg, self.dist, self.device = cfg, dist, device
        torch.set_num_threads(torch_threads(cfg.torch_threads))
        torch.manual_seed(cfg.seed + 10000 * dist.rank)
        self.counters = Counters() if resume is None else resume.counters
        self.recent = {k: deque(maxlen=100) for k in ("scores", "lengths", "clipped")}
        self.generator = torch.Generator().manual_seed(cfg.seed)  # minibatch order, the same on all ranks
        self.envs = self._make_envs()
        env = self.envs[0]
        self.policy = make_policy(cfg, env.observation_shape, env.num_actions, env.discrete).to(device)
        self.optimizer = make_optimizer(self.policy.parameters(), cfg)
        if resume is not None:
            self._resume(resume)
        dist.broadcast_state(self.policy, self.optimizer)  # baselines MpiAdam.sync(): identical start
        self.timer = Timer()
        self.rollout = Rollout(self.envs, self.policy, cfg, device, self.timer)
        self.monitor = MonitorWriter(cfg.run_dir / monitor_name(dist.rank), cfg.env_name)
        self.logger = (
            Logger(cfg.run_dir, cfg.env_steps, self.counters.timesteps, tracker, self.counters.elapsed)
            if dist.rank == 0
            else None
        )
        self.stop = StopFlag()
        # One process may drop a half-collected batch at once; ranks agree once per iteration.
        self.stop_in_rollout = self.stop if not dist.active else (lambda: False)
        self.session_start, self.session_steps = time.perf_counter(), self.counters.timesteps
        self.elapsed_at_start = self.counters.elapsed
        self.ckpt_path = cfg.run_dir / checkpoint.CHECKPOINT

    def _make_envs(self) -> list[VecEnv]:
        cfg = self.cfg
        seeds = env_seeds(cfg, self.dist.rank, self.counters.iterations)
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
        """The checkpoint's state (launch checked that it fits: checkpoint.check_compatible)."""
        for k, v in resume.recent.items():
            self.recent[k].extend(v)
        self.policy.load_state_dict(resume.model)
        self.optimizer.load_state_dict(resume.optimizer)
        for group in self.optimizer.param_groups:  # a checkpoint from before Adam was fused
            group["fused"] = True
        self.generator.set_state(resume.generator)
        # Each rank its own generators; a rank the checkpoint has none for (a larger world) keeps its seed.
        if self.dist.rank < len(resume.rank_rngs):
            restore_rng(resume.rank_rngs[self.dist.rank], self.device)

    def iteration(self) -> dict | None:
        """One PPO iteration, as CleanRL's ppo_atari.py loop body. Returns the log row (on every
        rank), or None if a stop signal came during collection (the partial batch is dropped)."""
        cfg, timer = self.cfg, self.timer
        timer.reset()
        seg = self.rollout.collect(should_stop=self.stop_in_rollout)
        if seg is None:
            return None
        with timer("update"):
            step = self.counters.timesteps  # the schedules' position
            stats = update(self.policy, self.optimizer, seg, cfg, step, self.generator, self.dist, timer)
        self.check_finite(stats)
        games = self.record_iteration(seg)
        if self.counters.iterations % cfg.sync_check_interval == 0:
            self.dist.check_synced(self.policy, self.counters.iterations)
        row = self.log_row(stats, games)
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

    def record_iteration(self, seg: Segment) -> int:
        """The counters and last-100 buffers over all ranks, this rank's games in its monitor file.
        One gather brings every rank's games and rank 0's clock: every monitor file is written at
        rank 0's time, the TimeElapsed of progress.csv that plots and resumes match games to (each
        rank's own clock drifts from it). Returns the number of games that ended this iteration."""
        c, dist = self.counters, self.dist
        mine = self.elapsed_at_start + time.perf_counter() - self.session_start
        ranks = dist.gather_object((mine, seg.scores, seg.lengths, seg.clipped_returns))
        c.elapsed = ranks[0][0]
        self.monitor.write(seg.scores, seg.lengths, c.elapsed)
        games = 0
        for _, scores, lengths, clipped in ranks:  # in rank order
            self.recent["scores"].extend(scores)
            self.recent["lengths"].extend(lengths)
            self.recent["clipped"].extend(clipped)
            games += len(scores)
        c.timesteps += self.cfg.batch_size * dist.world_size
        c.iterations += 1
        c.episodes += games
        return games

    def log_row(self, stats: dict, games: int) -> dict:
        """baselines' logger keys: the losses, then the last-100 real scores, counters and timings."""
        c, seconds = self.counters, self.timer.seconds
        sps = (c.timesteps - self.session_steps) / (time.perf_counter() - self.session_start)
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
            TimeEnv=round(seconds["env"], 4),
            TimeInference=round(seconds["inference"], 4),
            TimeGAE=round(seconds["gae"], 4),
            TimeUpdate=round(seconds["update"], 4),
            TimeAllReduce=round(seconds["allreduce"], 4),
            TimeIteration=round(self.timer.since_reset(), 4),
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
        rank_rngs = self.dist.gather_object(rng_state(self.device))
        if self.dist.rank != 0:
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
            world_size=self.dist.world_size,
        )
        checkpoint.save_state(self.ckpt_path, state)

    def close(self) -> None:
        self.stop.restore()
        self.monitor.close()
        if self.logger is not None:
            self.logger.close()
        for e in self.envs:
            e.close()


StopWhen = Callable[["Trainer"], bool]


def stop_after(
    seconds: float | None = None, steps: int | None = None, score: float | None = None
) -> StopWhen:
    """A stop condition for benchmarks: seconds of wall clock in this session, agent steps, or a
    full last-100 window whose mean is at least score (the schedules anneal as without it)."""

    def stop_when(trainer: Trainer) -> bool:
        return bool(
            (seconds is not None and time.perf_counter() - trainer.session_start > seconds)
            or (steps is not None and trainer.counters.timesteps >= steps)
            or (score is not None and trainer.reached(score))
        )

    return stop_when


def train(
    cfg: Config,
    resume: TrainState | None = None,
    dist: Dist | None = None,
    device: torch.device | None = None,
    tracker: Tracker | None = None,
    stop_when: StopWhen | None = None,
) -> Counters:
    """Train until cfg.env_steps agent steps (over all ranks), a stop signal, or stop_when(trainer)
    before an iteration (on any rank). Saves at the end; returns the counters."""
    dist = dist or Dist()
    trainer = Trainer(cfg, resume, dist, device or pick_device(cfg.device), tracker)
    try:
        while trainer.counters.timesteps < cfg.env_steps:
            asked = trainer.stop() or (stop_when is not None and stop_when(trainer))
            if dist.any(asked) or trainer.iteration() is None:
                break
        trainer.save()
        if trainer.logger is not None:
            step, path = trainer.counters.timesteps, trainer.ckpt_path
            if trainer.stop():
                trainer.logger.last(
                    f"{trainer.stop.signal_name}: saved {path} at step {step}; "
                    "run the same command again to resume"
                )
            else:
                trainer.logger.last(f"stopped at step {step}; saved {path}")
    except RuntimeError as e:  # a collective failed: name the rank that went away
        if dist.active and not isinstance(e, RankFailure):
            raise RankFailure(dist.describe_failure(e)) from e
        raise
    finally:
        trainer.close()
    return trainer.counters
