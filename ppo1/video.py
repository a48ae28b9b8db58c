"""`ppo1 movie` (MP4 / GIF of full games) and `ppo1 play` (a window, in real time).

Both run the agent in one gymnasium env (ppo1.envs.make_gym_env) with the evaluation semantics:
full games, real scores. The movie has one colour frame per agent step (the last of the 4
emulator frames each step repeats its action), at 15 frames per second = 60 Hz / frameskip 4,
so it plays at the game's own speed. Frames are streamed to ffmpeg as they are rendered:
memory stays flat however long the game.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ppo1.config import Config, ConfigError
from ppo1.envs import FRAME_SKIP, EnvSpec, make_gym_env, parse_env_name
from ppo1.errors import first_line
from ppo1.evaluate import (
    EVAL_SEED,
    ActionPicker,
    Agent,
    default_protocol,
    describe_protocol,
    load_agent_from_args,
    policy_in_channels,
    protocol_settings,
)
from ppo1.policies import pick_device

ATARI_HZ = 60
MOVIE_FPS = ATARI_HZ / FRAME_SKIP  # one frame per agent step, in real time
VIDEO_EXTRA = "pip install -e '.[video]'"


def require_ffmpeg():
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


def movie_name(title: str, score: float, step: int, ext: str, game: int | None = None) -> str:
    score_text = f"{score:g}" if float(score).is_integer() else f"{score:.1f}"
    suffix = f"-game{game}" if game is not None else ""
    return f"{title}-score-{score_text}-step-{step}{suffix}.{ext}"


def _env_for(agent: Agent, protocol: str, render_mode: str):
    return render_env(agent.spec, render_mode, policy_in_channels(agent.policy) > 1, protocol)


def one_action(pick: ActionPicker, obs: np.ndarray):
    """The picker's action for one env's observation: an int (Discrete) or an array (Box)."""
    action = pick(obs[None])[0]
    return action.item() if action.ndim == 0 else action


def movie_fps(spec: EnvSpec, env) -> float:
    """Real time: Atari 60 Hz / frameskip 4; other envs their render_fps."""
    return MOVIE_FPS if spec.atari else float(env.metadata.get("render_fps") or 30)


def render_env(spec: EnvSpec, render_mode: str, frame_stack: bool = True, protocol: str | None = None):
    """One env of `spec` that renders (played under `protocol`, default the training one); a render
    that cannot work here (pygame missing, no OpenGL for MuJoCo) is a one-line error up front."""
    noop_max, sticky = protocol_settings(protocol or default_protocol(spec), spec)
    env = None
    try:
        env = make_gym_env(
            spec, frame_stack=frame_stack, noop_max=noop_max, sticky=sticky, render_mode=render_mode
        )
        if render_mode == "rgb_array" and not spec.atari:
            env.reset(seed=0)
            env.render()
    except Exception as e:
        if env is not None:
            env.close()
        if spec.atari:
            raise
        first = first_line(e)
        raise ConfigError(f"cannot render {spec.name} here: {first}") from None
    return env


def record_game(env, pick: ActionPicker, paths: list[Path], fps: float, scale: int, seed: int):
    """Play one full game, writing a frame after the reset and after every agent step to each of
    `paths` (MP4 or GIF by suffix) at once. Returns (score, agent steps, frames written)."""
    obs, _ = env.reset(seed=seed)
    frame = env.render()
    writers = [VideoWriter(p, frame.shape[1], frame.shape[0], fps, scale=scale) for p in paths]
    try:
        for w in writers:
            w.write(frame)
        score, steps, over = 0.0, 0, False
        while not over:
            obs, reward, terminated, truncated, _ = env.step(one_action(pick, obs))
            score += float(reward)
            steps += 1
            frame = env.render()
            for w in writers:
                w.write(frame)
            over = terminated or truncated
    finally:
        for w in writers:
            w.close()
    return score, steps, writers[0].frames


def capture_video(policy, cfg: Config, step: int, device) -> tuple[Path, bytes]:
    """`--capture_video`: one more evaluation game (seeded as the evaluation's) of the policy being
    trained, written to <run>/videos/<Game>-score-S-step-N.mp4; returns that path and the same game
    as GIF bytes, which TensorBoard shows animated."""
    spec = parse_env_name(cfg.env_name)
    env = render_env(spec, "rgb_array", cfg.frame_stacking)
    pick = ActionPicker(policy, False, cfg.seed + EVAL_SEED, device)
    out_dir = cfg.run_dir / "videos"
    out_dir.mkdir(exist_ok=True)
    tmp = out_dir / f".recording-{os.getpid()}.mp4"
    gif = tmp.with_suffix(".gif")
    try:
        score, _, _ = record_game(env, pick, [tmp, gif], movie_fps(spec, env), 1, cfg.seed + EVAL_SEED)
        path = out_dir / movie_name(spec.title, score, step, "mp4")
        tmp.replace(path)
        return path, gif.read_bytes()
    finally:
        env.close()
        tmp.unlink(missing_ok=True)
        gif.unlink(missing_ok=True)


def _load(args) -> Agent:
    if args.fps is not None and not args.fps > 0:
        raise ConfigError(f"--fps must be positive, got {args.fps}")
    return load_agent_from_args(args)


def run_movie(args) -> int:
    """`ppo1 movie`: one file per game in <asset_dir>/<run name>/, named after game, score, step."""
    if args.scale < 1 or args.scale > 8:
        raise ConfigError(f"--scale must be 1 to 8, got {args.scale}")
    require_ffmpeg()
    agent = _load(args)
    protocol = args.protocol or default_protocol(parse_env_name(agent.trained_env))
    env = _env_for(agent, protocol, "rgb_array")
    fps = args.fps or movie_fps(agent.spec, env)
    out_dir = Path(args.asset_dir or agent.cfg.asset_dir) / agent.cfg.run_name
    ext = "gif" if args.gif else "mp4"
    print(
        f"{agent.spec.title} ({agent.cfg.env_name}), {agent.describe()}; protocol "
        f"{describe_protocol(protocol)}; {fps:g} fps",
        flush=True,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    pick = ActionPicker(agent.policy, args.deterministic, args.seed, pick_device(args.device))
    try:
        for game in range(args.episodes):
            # The name holds the score, known only at the end: write a hidden file, then rename.
            tmp = out_dir / f".{agent.spec.title}-recording-{os.getpid()}.{ext}"
            score, steps, frames = record_game(env, pick, [tmp], fps, args.scale, args.seed + game)
            if not tmp.exists():
                raise ConfigError(f"ffmpeg wrote no {ext} file")
            name = movie_name(
                agent.spec.title, score, agent.step, ext, game + 1 if args.episodes > 1 else None
            )
            tmp.replace(out_dir / name)
            print(
                f"wrote {out_dir / name} (score {score:g}, {steps} agent steps, {frames} frames)",
                flush=True,
            )
    except BaseException:
        for stale in out_dir.glob(f".*-recording-{os.getpid()}.{ext}"):
            stale.unlink(missing_ok=True)
        raise
    finally:
        env.close()
    return 0


def has_display() -> bool:
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # macOS and Windows always have a window server for a desktop session


def run_play(args) -> int:
    """`ppo1 play`: ALE's own window (render_mode="human"). ALE locks the emulation to the ROM's
    60 frames/s there, i.e. 15 agent steps/s; --fps below 15 slows it down further."""
    if not has_display():
        raise ConfigError(
            "no display to open a window on (DISPLAY and WAYLAND_DISPLAY are unset); "
            "use `ppo1 movie` to write an MP4 instead"
        )
    agent = _load(args)
    protocol = args.protocol or default_protocol(parse_env_name(agent.trained_env))
    env = _env_for(agent, protocol, "human")
    fps = args.fps or movie_fps(agent.spec, env)
    print(
        f"{agent.spec.title} ({agent.cfg.env_name}), {agent.describe()}; protocol "
        f"{describe_protocol(protocol)}; {fps:g} agent steps/s; Ctrl-C stops",
        flush=True,
    )
    pick = ActionPicker(agent.policy, args.deterministic, args.seed, pick_device(args.device))
    try:
        for game in range(args.episodes):
            obs, _ = env.reset(seed=args.seed + game)
            score, steps, over = 0.0, 0, False
            next_time = time.perf_counter()
            while not over:
                obs, reward, terminated, truncated, _ = env.step(one_action(pick, obs))
                score += float(reward)
                steps += 1
                over = terminated or truncated
                next_time += 1.0 / fps
                delay = next_time - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_time = time.perf_counter()  # running late: do not rush to catch up
            print(f"game {game + 1}: score {score:g} in {steps} agent steps", flush=True)
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 130
    finally:
        env.close()
    return 0
