"""`ppo1 movie` and `ppo1 play`: real games, real ffmpeg encoding, files read back with imageio."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import pytest
from conftest import one_error_line, run_cli

from ppo1.envs import make_gym_env
from ppo1.envspec import parse_env_name

WROTE = re.compile(r"wrote (\S+) \(score (-?\d+), (\d+) agent steps, (\d+) frames\)")


def first_frame_of_game(seed: int) -> np.ndarray:
    """The colour screen right after a paper-protocol reset with this seed, rendered directly."""
    env = make_gym_env(parse_env_name("PongNoFrameskip-v4"), render_mode="rgb_array")
    try:
        env.reset(seed=seed)
        return env.render()
    finally:
        env.close()


def test_movie_mp4_decodes_with_one_frame_per_step(tiny, tmp_path):
    assets = tmp_path / "assets"
    args = ["movie", "--checkpoint_dir", str(tiny), "--model_name", "tiny", "--asset_dir", str(assets)]
    r = run_cli([*args, "--seed", "5"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = WROTE.search(r.stdout)
    assert m, r.stdout
    path, score, steps, frames = Path(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))
    assert path.parent == assets / "tiny"
    assert path.name == f"Pong-score-{score}-step-256.mp4"
    assert [p.name for p in (assets / "tiny").iterdir()] == [path.name]  # no temporary file left
    assert -21 <= score <= 21 and steps > 21 * 20  # a full game
    assert frames == steps + 1  # the screen after the reset, then one per agent step

    reader = imageio_v2.get_reader(path)
    meta = reader.get_meta_data()
    assert meta["codec"] == "h264"
    assert meta["fps"] == pytest.approx(15.0)
    count, first, later = 0, None, []
    for frame in reader:  # streamed: the file is read back frame by frame
        if count == 0:
            first = frame
        if count in (steps // 4, steps // 2, 3 * steps // 4):
            later.append(frame)
        count += 1
    reader.close()
    assert count == frames
    assert first.shape == (420, 320, 3)  # 160x210 at the default scale 2
    assert first.std() > 10 and all(f.std() > 10 for f in later)  # not a blank screen
    # The game moves: the paddles, the ball and the score differ from the first screen.
    assert max(np.abs(first.astype(int) - f.astype(int)).mean() for f in later) > 0.5
    # In colour: Pong's field is brown (red > blue), its paddles orange and green.
    assert np.abs(first[..., 0].astype(int) - first[..., 2].astype(int)).mean() > 30
    # The first frame is the game's own first screen (H.264 is lossy: compare on average).
    expected = first_frame_of_game(5).repeat(2, axis=0).repeat(2, axis=1)
    assert np.abs(first.astype(int) - expected.astype(int)).mean() < 6


@pytest.mark.slow
def test_movie_gif_has_exact_colours(tiny, tmp_path):
    assets = tmp_path / "assets"
    args = ["movie", "--checkpoint_dir", str(tiny), "--model_name", "tiny", "--asset_dir", str(assets)]
    r = run_cli([*args, "--gif", "--scale", "1", "--seed", "7"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = WROTE.search(r.stdout)
    assert m, r.stdout
    path, score, steps, frames = Path(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))
    assert path.name == f"Pong-score-{score}-step-256.gif"
    gif = iio.imread(path, index=None)
    assert gif.shape[0] == frames == steps + 1
    assert gif.shape[1:3] == (210, 160)
    assert gif[..., :3].std() > 10
    # A palette per frame: Atari colours survive exactly.
    assert np.array_equal(gif[0, ..., :3], first_frame_of_game(7))


def test_movie_without_the_video_extra_names_it(tiny, tmp_path):
    """imageio-ffmpeg made unimportable in a real child process, as if it were not installed."""
    assets = tmp_path / "assets"
    code = (
        "import sys; sys.modules['imageio_ffmpeg'] = None; from ppo1.cli import main; "
        f"main(['movie', '--checkpoint_dir', {str(tiny)!r}, '--model_name', 'tiny', "
        f"'--asset_dir', {str(assets)!r}])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppo1 movie: error: "), r.stderr
    assert "pip install -e '.[video]'" in lines[0]
    assert not assets.exists()


def test_movie_without_checkpoint_writes_nothing(capsys, tmp_path):
    assets = tmp_path / "assets"
    args = ["movie", "--checkpoint_dir", str(tmp_path), "--model_name", "none", "--asset_dir", str(assets)]
    line = one_error_line(capsys, args, "movie")
    assert "no checkpoint" in line and "--allow_random" in line
    assert not assets.exists()


@pytest.mark.slow
def test_movie_max_frames_writes_the_start_of_the_same_game(tiny, tmp_path):
    """--max_frames 40: the first 40 frames of the game the whole movie shows (the same seed), named
    with the whole game's score and -first40; a limit longer than the game changes nothing."""
    args = [
        "movie",
        "--checkpoint_dir",
        str(tiny),
        "--model_name",
        "tiny",
        "--gif",
        "--scale",
        "1",
        "--seed",
        "7",
    ]
    whole = WROTE.search(run_cli([*args, "--asset_dir", str(tmp_path / "whole")], cwd=tmp_path).stdout)
    cut = WROTE.search(
        run_cli([*args, "--asset_dir", str(tmp_path / "cut"), "--max_frames", "40"], cwd=tmp_path).stdout
    )
    assert whole and cut
    assert (
        cut.group(2, 3) == whole.group(2, 3) and int(cut.group(4)) == 40
    )  # score and steps: the whole game's
    assert Path(cut.group(1)).name == f"Pong-score-{whole.group(2)}-step-256-first40.gif"
    frames, first = iio.imread(cut.group(1), index=None), iio.imread(whole.group(1), index=None)
    assert frames.shape[0] == 40 and np.array_equal(frames, first[:40])
    longer = ["--asset_dir", str(tmp_path / "longer"), "--max_frames", str(int(whole.group(4)) + 1)]
    again = WROTE.search(run_cli([*args, *longer], cwd=tmp_path).stdout)
    assert Path(again.group(1)).name == Path(whole.group(1)).name and again.group(4) == whole.group(4)


@pytest.mark.parametrize(
    "bad", [["--episodes", "0"], ["--protocol", "nope"], ["--scale", "0"], ["--max_frames", "-1"]]
)
def test_movie_bad_values(capsys, tiny, tmp_path, bad):
    assets = tmp_path / "assets"
    args = ["movie", "--checkpoint_dir", str(tiny), "--model_name", "tiny", "--asset_dir", str(assets)]
    one_error_line(capsys, [*args, *bad], "movie")
    assert not assets.exists()


def test_movie_checkpoint_of_another_game(capsys, tiny, tmp_path):
    args = ["movie", "--checkpoint_dir", str(tiny), "--model_name", "tiny", "--env_name", "MsPacman"]
    line = one_error_line(capsys, [*args, "--asset_dir", str(tmp_path / "a")], "movie")
    assert "Pong" in line and "MsPacman" in line


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux's")
def test_play_without_display_says_so_and_suggests_movie(capsys, monkeypatch, tiny):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    args = ["play", "--checkpoint_dir", str(tiny), "--model_name", "tiny", "--episodes", "1", "--fps", "30"]
    line = one_error_line(capsys, args, "play")
    assert "display" in line and "ppo1 movie" in line


def test_movie_of_a_checkpoint_file_is_named_after_the_file(tiny, tmp_path):
    """A shipped agent's movie goes to <asset_dir>/<file name>/, not to the folder of the run that
    trained it (whose name the file's config still holds)."""
    agent = tmp_path / "pong-agent.pt"
    shutil.copy(tiny / "tiny" / "checkpoint.pt", agent)
    assets = tmp_path / "assets"
    r = run_cli(
        ["movie", "--checkpoint", str(agent), "--asset_dir", str(assets), "--gif", "--scale", "1"], tmp_path
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p.parent.name for p in assets.rglob("*.gif")] == ["pong-agent"]
