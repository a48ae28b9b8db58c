"""Evaluation: full games under a named protocol (ppo1.envspec.PROTOCOLS), scores and their statistics.

`evaluate()` plays the games, for the training loop (`evaluate_in_training`), the `ppo1 evaluate`
command and the Python API. Evaluation always uses the evaluation wrappers: full games (no
end-of-life episodes), real unclipped rewards.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from ppo1.agent import ActionPicker
from ppo1.config import Config, at_least
from ppo1.device import pick_device
from ppo1.envs import VecEnv
from ppo1.envspec import (
    EVAL_SEED,
    FRAME_SKIP,
    MAX_FRAMES,
    default_protocol,
    parse_env_name,
    protocol_settings,
)
from ppo1.errors import ConfigError
from ppo1.policies import Policy

MAX_EVAL_ENVS = 16  # games played at once by default


def evaluate(
    policy: Policy,
    cfg: Config,
    episodes: int = 10,
    protocol: str | None = None,
    deterministic: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    num_envs: int | None = None,
    threads: int = 0,
    progress: bool = False,
    checkpoint_step: int | None = None,
) -> dict:
    """Play `episodes` full games of cfg.env_name with `policy` and return their statistics.

    protocol None means the one the env name implies (ALE/*-v5: machado, else paper). Games run
    `num_envs` at a time (default: min(episodes, 16)) on ale-py's vector env; env i is seeded with
    seed + i. The policy is not modified (its train/eval mode is restored).
    """
    at_least("episodes", episodes, 1)
    if num_envs is not None:
        at_least("num_envs", num_envs, 1)
    spec = parse_env_name(cfg.env_name)
    protocol = protocol or default_protocol(spec)
    noop_max, sticky = protocol_settings(protocol, spec)
    device = pick_device(device)
    n = min(episodes, num_envs or MAX_EVAL_ENVS)
    env = VecEnv(
        spec,
        n,
        seed=seed,
        frame_stack=cfg.frame_stacking,
        episode_life=False,
        clip_rewards=False,
        threads=threads,
        noop_max=noop_max,
        sticky=sticky,
    )
    if policy.num_actions != env.num_actions:
        env.close()
        raise ConfigError(f"the policy has {policy.num_actions} actions, {spec.name} has {env.num_actions}")
    was_training = policy.training
    policy.eval()
    pick = ActionPicker(policy, deterministic, seed, device)
    bar = tqdm(total=episodes, unit="game", desc=f"{spec.title} {protocol}", disable=not progress)
    try:
        scores, lengths = _play_quotas(env, pick, episodes, bar)
    finally:
        bar.close()
        env.close()
        policy.train(was_training)
    return summarize(
        scores,
        lengths,
        protocol=protocol,
        deterministic=deterministic,
        env_name=spec.name,
        checkpoint_step=checkpoint_step,
        seed=seed,
        num_envs=n,
    )


def _play_quotas(env: VecEnv, pick: ActionPicker, episodes: int, bar) -> tuple[list[float], list[int]]:
    """Exactly `episodes` games over the env's num_envs envs: (scores, lengths), in the order they end.

    Counting exactly N games without favouring short ones: taking "the first N games to end"
    over n parallel envs over-represents short games (a long game is still running when the
    N-th short one ends). Instead each env plays a fixed quota of games, fixed before any game
    starts (N // n each, one more for the first N % n envs); games an env finishes past its
    quota are ignored. Every game counted is then an unconditioned draw from the env's games.
    """
    n = env.num_envs
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    played = np.zeros(n, dtype=np.int64)
    scores: list[float] = []
    lengths: list[int] = []
    obs = env.reset()
    while (played < quota).any():
        step = env.step(pick(obs))
        obs = step.obs
        # With episode_life=False every done is a game over, listed in env order.
        for i, score, length in zip(np.flatnonzero(step.dones), step.scores, step.lengths):
            if played[i] < quota[i]:
                played[i] += 1
                scores.append(float(score))
                lengths.append(int(length))
                bar.update(1)
                bar.set_postfix(mean=f"{np.mean(scores):.1f}", refresh=False)
    return scores, lengths


def evaluate_in_training(policy: Policy, cfg: Config, device: torch.device) -> dict:
    """`--eval_interval`: cfg.eval_episodes full games under the protocol of the training env, the
    same games (seed + EVAL_SEED) each time; `ppo1 evaluate --seed <that>` replays them. Uses its own
    envs and random generator, so training continues exactly as without evaluation."""
    start = time.perf_counter()
    result = evaluate(
        policy, cfg, cfg.eval_episodes, seed=cfg.seed + EVAL_SEED, device=device, threads=cfg.env_threads
    )
    return dict(
        EvalRewMean=result["mean"],
        EvalRewStd=result["std"],
        EvalLenMean=float(np.mean(result["lengths"])),
        TimeEval=round(time.perf_counter() - start, 4),
    )


def summarize(
    scores: list[float],
    lengths: list[int],
    *,
    protocol: str,
    deterministic: bool,
    env_name: str,
    checkpoint_step: int | None,
    seed: int,
    num_envs: int,
) -> dict:
    """The statistics of the games played (std is the population std, ddof=0), with the protocol."""
    a = np.asarray(scores, dtype=np.float64)
    noop_max, sticky = protocol_settings(protocol)
    return dict(
        mean=float(a.mean()),
        std=float(a.std()),
        min=float(a.min()),
        max=float(a.max()),
        episodes=len(scores),
        scores=[float(s) for s in scores],
        lengths=[int(n) for n in lengths],
        protocol=protocol,
        deterministic=bool(deterministic),
        env_name=env_name,
        checkpoint_step=checkpoint_step,
        seed=seed,
        num_envs=num_envs,
        noop_max=noop_max,
        sticky=sticky,
        max_frames=MAX_FRAMES if protocol != "env" else None,
        frame_skip=FRAME_SKIP if protocol != "env" else None,
    )


def _fmt(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() else f"{x:.2f}"


def format_report(result: dict) -> str:
    """The games' statistics, scores and lengths, as `ppo1 evaluate` prints them."""
    lines = [
        f"{result['episodes']} games: mean {result['mean']:.2f}  std {result['std']:.2f}  "
        f"min {_fmt(result['min'])}  max {_fmt(result['max'])}",
        "scores: " + " ".join(_fmt(s) for s in result["scores"]),
        "lengths (agent steps): " + " ".join(str(n) for n in result["lengths"]),
    ]
    return "\n".join(lines)
