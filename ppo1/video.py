"""Videos of an agent's games, for `ppo1 movie` (MP4 / GIF of full games), `ppo1 play` (a window, in
real time) and --capture_video.

All run the agent in one gymnasium env (ppo1.envs.render_env) with the evaluation semantics:
full games, real scores, stepped by the same loop (`play_game`). The movie has one colour frame
per agent step (the last of the 4 emulator frames each step repeats its action), at 15 frames
per second = 60 Hz / frameskip 4, so it plays at the game's own speed. Frames are streamed to
ffmpeg as they are rendered: memory stays flat however long the game.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np
import torch

from ppo1.agent import ActionPicker
from ppo1.config import Config
from ppo1.envs import render_env
from ppo1.envspec import EVAL_SEED, FRAME_SKIP, EnvSpec, parse_env_name
from ppo1.errors import ConfigError
from ppo1.policies import Policy
from ppo1.runfiles import atomic_write

ATARI_HZ = 60
MOVIE_FPS = ATARI_HZ / FRAME_SKIP  # one frame per agent step, in real time
VIDEO_EXTRA = "pip install -e '.[video]'"


def require_ffmpeg() -> ModuleType:
    """imageio-ffmpeg (with its own ffmpeg binary), or a one-line error naming the extra."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise ConfigError(f"writing videos needs imageio-ffmpeg: {VIDEO_EXTRA}") from None
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise ConfigError(f"imageio-ffmpeg found no ffmpeg binary ({e}); {VIDEO_EXTRA}") from None
    return imageio_ffmpeg


class VideoWriter:
    """Streams RGB frames (H, W, 3) uint8 to ffmpeg: H.264 MP4, or a GIF with a palette per frame
    (an Atari frame has at most 128 colours, so the GIF's colours are exact)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, scale: int = 1):
        ffmpeg = require_ffmpeg()
        self.path, self.scale, self.frames = path, scale, 0
        size = (width * scale, height * scale)
        if path.suffix.lower() == ".gif":
            graph = "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1:dither=none"
            kwargs = dict(codec="gif", pix_fmt_out="pal8", quality=None, output_params=["-vf", graph])
            kwargs["output_params"] += ["-loop", "0"]
        else:
            # yuv420p (what every player decodes) needs even sizes: Atari's 160x210 is.
            kwargs = dict(codec="libx264", pix_fmt_out="yuv420p", quality=8)
        self._gen = ffmpeg.write_frames(str(path), size, fps=fps, macro_block_size=1, **kwargs)
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        if self.scale > 1:  # nearest neighbour: crisp pixels, no colour bleeding in H.264
            frame = frame.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        self._gen.send(np.ascontiguousarray(frame, dtype=np.uint8))
        self.frames += 1

    def close(self) -> None:
        self._gen.close()


def movie_name(title: str, score: float, step: int, ext: str, game: int | None = None, first: int = 0) -> str:
    """<Game>-score-<score>-step-<step>[-game<n>][-first<frames>].<ext>"""
    score_text = f"{score:g}" if float(score).is_integer() else f"{score:.1f}"
    suffix = (f"-game{game}" if game is not None else "") + (f"-first{first}" if first else "")
    return f"{title}-score-{score_text}-step-{step}{suffix}.{ext}"


def movie_fps(spec: EnvSpec, env: gym.Env) -> float:
    """Real time: Atari 60 Hz / frameskip 4; other envs their render_fps."""
    return MOVIE_FPS if spec.atari else float(env.metadata.get("render_fps") or 30)


@dataclass
class Game:
    """A game being played: its score and agent steps so far."""

    score: float = 0.0
    steps: int = 0
    over: bool = False


def play_game(env: gym.Env, pick: ActionPicker, seed: int) -> Iterator[Game]:
    """Play one full game from env.reset(seed=seed), yielding the game (one record, updated) after
    the reset and after every agent step: the caller renders, writes or waits there."""
    obs, _ = env.reset(seed=seed)
    game = Game()
    yield game
    while not game.over:
        obs, reward, terminated, truncated, _ = env.step(pick.one(obs))
        game.score += float(reward)
        game.steps += 1
        game.over = terminated or truncated
        yield game


def paced(steps: Iterator[Game], fps: float) -> Iterator[Game]:
    """`steps` at most `fps` a second, the clock starting at the reset."""
    next_time = 0.0
    for game in steps:
        if game.steps == 0:
            next_time = time.perf_counter()
        else:
            next_time += 1.0 / fps
            delay = next_time - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_time = time.perf_counter()  # running late: do not rush to catch up
        yield game


def record_game(
    env: gym.Env,
    pick: ActionPicker,
    paths: list[Path],
    fps: float,
    scale: int,
    seed: int,
    max_frames: int = 0,
) -> tuple[float, int, int]:
    """Play one full game, writing a frame after the reset and after every agent step (the first
    max_frames of them; 0: all) to each of `paths` (MP4 or GIF by suffix) at once. Returns (score of
    the whole game, agent steps, frames written)."""
    writers: list[VideoWriter] = []
    try:
        for game in play_game(env, pick, seed):
            if max_frames and game.steps >= max_frames:
                continue  # the excerpt is written; play on for the game's score
            frame = env.render()
            if game.steps == 0:  # after the reset: the first frame sets the size
                writers = [VideoWriter(p, frame.shape[1], frame.shape[0], fps, scale=scale) for p in paths]
            for w in writers:
                w.write(frame)
    finally:
        for w in writers:
            w.close()
    return game.score, game.steps, writers[0].frames


def capture_video(policy: Policy, cfg: Config, step: int, device: torch.device) -> tuple[Path, bytes]:
    """`--capture_video`: one more evaluation game (seeded as the evaluation's) of the policy being
    trained, written to <run>/videos/<Game>-score-S-step-N.mp4; returns that path and the same game
    as GIF bytes, which TensorBoard shows animated."""
    spec = parse_env_name(cfg.env_name)
    env = render_env(spec, "rgb_array", cfg.frame_stacking)
    pick = ActionPicker(policy, False, cfg.seed + EVAL_SEED, device)
    out_dir = cfg.run_dir / "videos"
    out_dir.mkdir(exist_ok=True)
    seed = cfg.seed + EVAL_SEED
    try:
        with atomic_write(out_dir / f"{spec.title}.mp4") as mp4, tempfile.TemporaryDirectory() as scratch:
            gif = Path(scratch) / "game.gif"
            score, _, _ = record_game(env, pick, [mp4.tmp, gif], movie_fps(spec, env), 1, seed)
            mp4.path = out_dir / movie_name(spec.title, score, step, "mp4")  # the score names the file
            gif_bytes = gif.read_bytes()
    finally:
        env.close()
    return mp4.path, gif_bytes
