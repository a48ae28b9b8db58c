"""The handlers of the ppo1 commands (train, evaluate, movie, play, plot): they take the parsed flags,
check them, call the library, print what a user reads and choose where files go. Nothing in the
library imports this module; the CLI loads it once the flags are parsed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import gymnasium as gym
import torch

from ppo1.agent import ActionPicker, Agent, load_agent
from ppo1.config import at_least
from ppo1.device import pick_device, torch_threads
from ppo1.errors import ConfigError
from ppo1.evaluate import evaluate as play_games
from ppo1.evaluate import format_report
from ppo1.launch import start
from ppo1.options import AgentOptions
from ppo1.plot import plot_runs
from ppo1.runfiles import atomic_write, write_text
from ppo1.video import movie_fps, movie_name, paced, play_game, record_game, require_ffmpeg


def train(args: argparse.Namespace) -> int:
    """`ppo1 train`: the flags given override the preset and a resumed run's config."""
    overrides = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "fresh")}
    start(overrides, fresh=args.fresh)
    return 0


def agent_options(args: argparse.Namespace) -> AgentOptions:
    """What evaluate, movie and play share, as one record."""
    return AgentOptions(**{f.name: getattr(args, f.name) for f in fields(AgentOptions)})


def open_agent(opts: AgentOptions) -> Agent:
    """Check the shared flags, set torch's threads, then load the agent."""
    opts.check()
    torch.set_num_threads(torch_threads(opts.torch_threads))
    return load_agent(
        env_name=opts.env_name,
        checkpoint_dir=opts.checkpoint_dir,
        model_name=opts.model_name,
        preset=opts.preset,
        allow_random=opts.allow_random,
        seed=opts.seed,
        device=opts.device,
        checkpoint=opts.checkpoint,
    )


def evaluate(args: argparse.Namespace) -> int:
    """`ppo1 evaluate`: every check that can fail on bad input runs before anything is written.
    --json alone: the default file, <asset_dir>/<agent name>/eval-<protocol>-step-<step>.json."""
    opts = agent_options(args)
    agent = open_agent(opts)
    protocol = agent.protocol(opts.protocol)
    json_path = Path(args.json) if args.json else None
    if args.json == "":  # --json alone: beside the agent's movies
        json_name = f"eval-{protocol}-step-{agent.step}.json"
        json_path = Path(args.asset_dir or agent.cfg.asset_dir) / agent.name / json_name
    if json_path is not None and json_path.is_dir():
        raise ConfigError(f"--json {json_path} is a folder")
    mode = "most likely actions" if opts.deterministic else "sampled actions"
    print(agent.headline(protocol, mode, f"seed {opts.seed}"), flush=True)
    result = play_games(
        agent.policy,
        agent.cfg,
        opts.episodes,
        protocol,
        opts.deterministic,
        opts.seed,
        opts.device,
        num_envs=args.num_envs,
        threads=args.env_threads,
        progress=sys.stdout.isatty(),
        checkpoint_step=agent.step if agent.path is not None else None,
    )
    result["trained_env_name"] = agent.trained_env
    result["checkpoint"] = str(agent.path) if agent.path is not None else None
    print(format_report(result), flush=True)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_text(json_path, json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}", flush=True)
    return 0


def _open(
    opts: AgentOptions, fps: float | None, render_mode: str, rate: str
) -> tuple[Agent, gym.Env, ActionPicker, float]:
    """What movie and play share: load the agent, make its env, print the first line ("<fps> <rate>").
    fps None: real time."""
    if fps is not None and not fps > 0:
        raise ConfigError(f"--fps must be positive, got {fps}")
    agent = open_agent(opts)
    protocol = agent.protocol(opts.protocol)
    env = agent.make_env(protocol, render_mode)
    fps = fps or movie_fps(agent.spec, env)
    print(agent.headline(protocol, f"{fps:g} {rate}"), flush=True)
    pick = ActionPicker(agent.policy, opts.deterministic, opts.seed, pick_device(opts.device))
    return agent, env, pick, fps


def movie(args: argparse.Namespace) -> int:
    """`ppo1 movie`: one file per game in <asset_dir>/<agent name>/ (its run folder's, or its file's),
    named after game, score, step (and the excerpt's length, with --max_frames)."""
    opts, scale, max_frames = agent_options(args), args.scale, args.max_frames
    if scale < 1 or scale > 8:
        raise ConfigError(f"--scale must be 1 to 8, got {scale}")
    at_least("max_frames", max_frames, 0)
    require_ffmpeg()
    agent, env, pick, fps = _open(opts, args.fps, "rgb_array", "fps")
    out_dir = Path(args.asset_dir or agent.cfg.asset_dir) / agent.name
    ext = "gif" if args.gif else "mp4"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for game in range(opts.episodes):
            # The name holds the score, known only at the end.
            with atomic_write(out_dir / f"{agent.spec.title}.{ext}") as f:
                seed = opts.seed + game
                score, steps, frames = record_game(env, pick, [f.tmp], fps, scale, seed, max_frames)
                if f.tmp.stat().st_size == 0:
                    raise ConfigError(f"ffmpeg wrote no {ext} file")
                number = game + 1 if opts.episodes > 1 else None
                first = max_frames if frames <= steps else 0
                f.path = out_dir / movie_name(agent.spec.title, score, agent.step, ext, number, first)
            print(f"wrote {f.path} (score {score:g}, {steps} agent steps, {frames} frames)", flush=True)
    finally:
        env.close()
    return 0


def has_display() -> bool:
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # macOS and Windows always have a window server for a desktop session


def play(args: argparse.Namespace) -> int:
    """`ppo1 play`: ALE's own window (render_mode="human"). ALE locks the emulation to the ROM's
    60 frames/s there, i.e. 15 agent steps/s; --fps below 15 slows it down further."""
    if not has_display():
        raise ConfigError(
            "no display to open a window on (DISPLAY and WAYLAND_DISPLAY are unset); "
            "use `ppo1 movie` to write an MP4 instead"
        )
    opts = agent_options(args)
    _, env, pick, fps = _open(opts, args.fps, "human", "agent steps/s; Ctrl-C stops")
    try:
        for n in range(opts.episodes):
            for game in paced(play_game(env, pick, opts.seed + n), fps):
                if game.over:
                    print(f"game {n + 1}: score {game.score:g} in {game.steps} agent steps", flush=True)
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 130
    finally:
        env.close()
    return 0


def plot(args: argparse.Namespace) -> int:
    """`ppo1 plot`: the curves of the run folders, to -o."""
    out = Path(args.output)
    plot_runs(
        args.run_dirs,
        out,
        smooth=args.smooth,
        spread=args.spread,
        reference=args.reference,
        max_steps=args.max_steps,
    )
    print(f"wrote {out}", flush=True)
    return 0
