"""The training loop: collect, update, log, checkpoint; resume where a run stopped."""

from __future__ import annotations

import signal
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from ppo1 import checkpoint, distributed
from ppo1.config import Config, ConfigError, RankFailure, resolve
from ppo1.distributed import Dist
from ppo1.envs import VecEnv, default_threads, env_dims, parse_env_name
from ppo1.evaluate import evaluate_in_training
from ppo1.learner import lr_multiplier, update
from ppo1.logger import Logger, MonitorWriter, drop_rows_after, monitor_name
from ppo1.policies import MlpPolicy, make_policy, pick_device
from ppo1.rollout import Rollout, compute_gae
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


def train(
    cfg: Config,
    resume: dict | None = None,
    d: Dist | None = None,
    device: torch.device | None = None,
    max_seconds: float | None = None,
    max_steps: int | None = None,
) -> dict:
    """Train until cfg.env_steps agent steps (over all ranks), a stop signal, max_seconds of wall
    clock in this session or max_steps agent steps (benchmarks use these two: the schedules still
    anneal over cfg.env_steps). Returns the counters."""
    d = d or Dist()
    device = device or pick_device(cfg.device)
    run_dir: Path = cfg.run_dir
    torch.set_num_threads(cfg.torch_threads or default_threads())
    torch.manual_seed(cfg.seed + 10000 * d.rank)
    counters = dict(timesteps=0, iterations=0, episodes=0, elapsed=0.0)
    recent = {k: deque(maxlen=100) for k in ("scores", "lengths", "clipped")}
    generator = torch.Generator().manual_seed(cfg.seed)  # minibatch order, the same on all ranks
    if resume is not None:
        counters.update(resume["counters"])
        for k, v in resume["recent"].items():
            recent[k].extend(v)

    seeds = env_seeds(cfg, d.rank, counters["iterations"])
    envs = [
        VecEnv(
            parse_env_name(cfg.env_name),
            len(group),
            seed=group,
            frame_stack=cfg.frame_stacking,
            episode_life=cfg.episode_life,
            clip_rewards=cfg.clip_rewards,
            threads=cfg.env_threads,
        )
        for group in np.array_split(seeds, cfg.env_groups)
    ]
    env = envs[0]
    policy = make_policy(
        cfg.model_type,
        env.observation_shape,
        env.num_actions,
        env.discrete,
        cfg.hid_size,
        cfg.num_hid_layers,
        cfg.pi_gain,
    ).to(device)
    # The seed's deviation: torch Adam with eps 1e-5 instead of baselines' MpiAdam (eps 1e-8).
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.optim_stepsize, eps=1e-5)
    if resume is not None:
        if resume["num_actions"] != env.num_actions:
            raise ConfigError(
                f"checkpoint has {resume['num_actions']} actions, {cfg.env_name} has "
                f"{env.num_actions}; use another --model_name or --fresh"
            )
        policy.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["rng"]["generator"])
        # Every rank's own generators (checkpoints before per-rank states held rank 0's only); a
        # rank the checkpoint has no state for (a larger world) keeps its seed.
        ranks = resume["rng"].get("ranks") or [dict(torch=resume["rng"]["torch"])]
        if d.rank < len(ranks):
            restore_rng(ranks[d.rank], device)
    d.broadcast_state(policy, optimizer)  # baselines MpiAdam.sync(): identical start on all ranks
    params = list(policy.parameters())

    def save() -> None:
        """Every rank hands its generators to rank 0, which writes the checkpoint."""
        ranks = d.gather_object(rng_state(device))
        if d.rank != 0:
            return
        state = dict(
            model=policy.state_dict(),
            optimizer=optimizer.state_dict(),
            config=cfg.to_dict(),
            counters=dict(counters),
            recent={k: list(v) for k, v in recent.items()},
            rng=dict(generator=generator.get_state(), ranks=ranks),
            num_actions=env.num_actions,
            observation_shape=list(env.observation_shape),
            world_size=d.world_size,
        )
        checkpoint.save(ckpt_path, state)

    monitor = MonitorWriter(run_dir / monitor_name(d.rank), cfg.env_name)
    logger = Logger(run_dir, cfg.env_steps, counters["timesteps"]) if d.rank == 0 else None
    rollout = Rollout(envs, policy, cfg.timesteps_per_actorbatch, cfg.gamma, device)
    stop = StopFlag()
    # One process may drop a half-collected batch at once; ranks agree once per iteration.
    stop_in_rollout = stop if not d.active else (lambda: False)
    session_start, session_steps = time.perf_counter(), counters["timesteps"]
    elapsed_at_start = counters["elapsed"]
    ckpt_path = run_dir / checkpoint.CHECKPOINT
    try:
        while counters["timesteps"] < min(cfg.env_steps, max_steps or cfg.env_steps):
            out_of_time = max_seconds is not None and time.perf_counter() - session_start > max_seconds
            if d.any(stop() or out_of_time):
                break
            t_iter = time.perf_counter()
            rollout.timings.clear()
            d.comm_seconds = 0.0
            lrmult = lr_multiplier(counters["timesteps"], cfg.env_steps, cfg.schedule)
            seg = rollout.collect(should_stop=stop_in_rollout)
            if seg is None:
                break  # interrupted mid-collection: the partial batch is dropped
            t_gae = time.perf_counter()
            seg.advantages, seg.returns = compute_gae(
                seg.rewards, seg.values, seg.dones, seg.last_values, cfg.gamma, cfg.lam
            )
            if isinstance(policy, MlpPolicy):
                # baselines: pi.ob_rms.update(ob) before the epochs; oldpi copies pi with its new
                # statistics, so the old log-probs are recomputed with them (ratio 1 at the start).
                policy.ob_rms.update(seg.obs, d.sum)
                with torch.no_grad():
                    flat = seg.obs.reshape(-1, *seg.obs.shape[2:])
                    pd, _ = policy.dist(flat)
                    actions = seg.actions.reshape(flat.shape[0], *seg.actions.shape[2:])
                    seg.log_probs = pd.log_prob(actions).reshape(seg.log_probs.shape)
            t_update = time.perf_counter()
            stats = update(
                policy,
                optimizer,
                seg,
                lrmult=lrmult,
                optim_stepsize=cfg.optim_stepsize,
                epsilon=cfg.epsilon,
                ent_coef=cfg.ent_coef,
                optim_epochs=cfg.optim_epochs,
                minibatch_size=cfg.minibatch_size,
                generator=generator,
                norm_adv=cfg.norm_adv,
                moments=d.moments,
                reduce_grads=lambda: d.reduce_grads(params),
            )
            now = time.perf_counter()
            bad = [k for k, v in stats.items() if k != "ev_tdlam_before" and not np.isfinite(v)]
            bad += [n for n, p in policy.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                raise FloatingPointError(
                    f"non-finite {', '.join(bad)} at iteration {counters['iterations'] + 1}; "
                    f"stopped without saving: the last good checkpoint is {ckpt_path}"
                )
            monitor.write(seg.scores, seg.lengths, elapsed_at_start + now - session_start)
            scores, lengths = d.gather(seg.scores), d.gather(seg.lengths)
            clipped = d.gather(seg.clipped_returns)
            counters["timesteps"] += cfg.batch_size * d.world_size
            counters["iterations"] += 1
            counters["episodes"] += len(scores)
            counters["elapsed"] = elapsed_at_start + now - session_start
            recent["scores"].extend(scores)
            recent["lengths"].extend(lengths)
            recent["clipped"].extend(clipped)
            if counters["iterations"] % cfg.sync_check_interval == 0:
                d.check_synced(policy, counters["iterations"])
            if logger is not None:
                sps = (counters["timesteps"] - session_steps) / (now - session_start)
                row = dict(stats)
                row.update(
                    EpLenMean=nanmean(recent["lengths"]),
                    EpRewMean=nanmean(recent["scores"]),
                    EpRewMeanClipped=nanmean(recent["clipped"]),
                    EpThisIter=len(scores),
                    EpisodesSoFar=counters["episodes"],
                    TimestepsSoFar=counters["timesteps"],
                    Iteration=counters["iterations"],
                    TimeElapsed=round(counters["elapsed"], 2),
                    StepsPerSecond=round(sps, 1),
                    TimeEnv=round(rollout.timings["env"], 4),
                    TimeInference=round(rollout.timings["inference"], 4),
                    TimeGAE=round(t_update - t_gae, 4),
                    TimeUpdate=round(now - t_update, 4),
                    TimeAllReduce=round(d.comm_seconds, 4),
                    TimeIteration=round(now - t_iter, 4),
                )
                if cfg.eval_interval and counters["iterations"] % cfg.eval_interval == 0:
                    row.update(evaluate_in_training(policy, cfg, device))
                    if cfg.capture_video:
                        path, gif = capture_video(policy, cfg, counters["timesteps"], device)
                        logger.add_gif("eval/video", gif, counters["timesteps"])
                        logger.info(f"recorded {path}")
                logger.dump(row, counters["timesteps"])
                logger.progress(counters["timesteps"], sps, row["EpRewMean"])
            if counters["iterations"] % cfg.save_interval == 0:
                save()
        save()
        if logger is not None:
            if stop():
                logger.info(
                    f"{stop.signal_name}: saved {ckpt_path} at step {counters['timesteps']}; "
                    "run the same command again to resume"
                )
            else:
                logger.info(f"stopped at step {counters['timesteps']}; saved {ckpt_path}")
    except RuntimeError as e:  # a collective failed: name the rank that went away
        if d.active and not isinstance(e, RankFailure):
            raise RankFailure(d.describe_failure(e)) from e
        raise
    finally:
        stop.restore()
        monitor.close()
        if logger is not None:
            logger.close()
        for e in envs:
            e.close()
    return counters


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


def prepare(overrides: dict, fresh: bool, world_size: int) -> tuple[Config, dict | None]:
    """Rank 0: resolve the config, load the checkpoint to resume, set up the run folder.

    Every check that can fail on bad input runs before anything is written.
    """
    cfg = resolve(overrides)
    check_writable(cfg.run_dir)
    path = cfg.run_dir / checkpoint.CHECKPOINT
    resume = None
    if path.exists() and not fresh:
        resume = checkpoint.load(path)
        saved = resume["config"]
        cfg = resolve(overrides, base=saved)
        checkpoint.check_compatible(saved, cfg.to_dict(), path)
        actions = env_dims(parse_env_name(cfg.env_name), cfg.frame_stacking)[1]
        if resume.get("num_actions", actions) != actions:
            raise ConfigError(
                f"checkpoint {path} has {resume['num_actions']} actions, {cfg.env_name} has "
                f"{actions}; use another --model_name or --fresh"
            )
    pick_device(cfg.device)
    if cfg.capture_video:
        require_ffmpeg()
        render_env(parse_env_name(cfg.env_name), "rgb_array", cfg.frame_stacking).close()
    if fresh and cfg.run_dir.exists():
        stamp = f"{cfg.run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        aside, n = cfg.run_dir.with_name(stamp), 1
        while aside.exists():
            aside, n = cfg.run_dir.with_name(f"{stamp}-{n}"), n + 1
        cfg.run_dir.rename(aside)
        print(f"--fresh: moved the old run folder to {aside}", flush=True)
    if resume is not None:
        c = resume["counters"]
        changed = [
            f"{k}: {v!r} -> {getattr(cfg, k)!r}"
            for k, v in resume["config"].items()
            if getattr(cfg, k, v) != v
        ]
        if resume.get("world_size", 1) != world_size:
            changed.append(f"world size: {resume.get('world_size', 1)} -> {world_size}")
        print(
            f"resuming {path} at step {c['timesteps']} (iteration {c['iterations']})"
            + (f"; changed: {', '.join(changed)}" if changed else ""),
            flush=True,
        )
    try:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create run folder {cfg.run_dir} ({e.strerror}); check --model_name"
        ) from None
    for stale in cfg.run_dir.glob(".checkpoint-*"):  # a save interrupted by a kill
        stale.unlink(missing_ok=True)
    c = resume["counters"] if resume else {"timesteps": 0, "elapsed": 0.0}
    drop_rows_after(cfg.run_dir, c["timesteps"], c["elapsed"])
    cfg.save(cfg.run_dir / "config.json")
    print(f"run folder {cfg.run_dir}; preset {cfg.preset}; {cfg.env_name}", flush=True)
    return cfg, resume


def start(
    overrides: dict, fresh: bool = False, max_seconds: float | None = None, max_steps: int | None = None
) -> dict:
    """Set up (rank 0), share the config and checkpoint with the other ranks, and train."""
    cfg = resolve(overrides)  # every rank checks the flags before joining the group
    device = pick_device(cfg.device)
    d = distributed.init(cfg.dist_timeout, device)
    if device.type == "cuda" and d.active:
        device = torch.device("cuda", d.local_rank % torch.cuda.device_count())  # ranks may share a GPU
        torch.cuda.set_device(device)
    try:
        error, resume = None, None
        if d.rank == 0:
            try:
                cfg, resume = prepare(overrides, fresh, d.world_size)
            except ConfigError as e:
                error = str(e)
        error, cfg, resume = d.broadcast_object((error, cfg, resume))
        if error is not None:
            raise ConfigError(error if d.rank == 0 else f"rank 0 refused to start: {error}")
        cfg.run_dir.mkdir(parents=True, exist_ok=True)  # for monitor.<rank>.csv on other machines
        counters = train(cfg, resume, d, device, max_seconds, max_steps)
    except RankFailure:
        distributed.abandon()
        raise
    except BaseException:
        distributed.shutdown()
        raise
    distributed.shutdown()
    return counters
