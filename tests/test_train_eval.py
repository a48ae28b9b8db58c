"""`ppo1 train --eval_interval K [--capture_video]`: evaluation games during training, logged to the
table, progress.csv and TensorBoard, videos in the run folder; training itself is unchanged."""

from __future__ import annotations

import csv
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ppo1.envspec import EVAL_SEED

EVAL = ["--eval_interval", "2", "--eval_episodes", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli):
    """The same 4-iteration tiny run twice: with evaluation every 2 iterations and videos, and
    without evaluation."""
    root = tmp_path_factory.mktemp("train-eval")
    base = ["train", *cli.TINY, "--env_steps", str(4 * cli.BATCH), "--checkpoint_dir", str(root)]
    with_eval = cli.run([*base, "--model_name", "eval", *EVAL, "--capture_video"], root)
    assert with_eval.returncode == 0, with_eval.stderr[-2000:]
    plain = cli.run([*base, "--model_name", "plain"], root)
    assert plain.returncode == 0, plain.stderr[-2000:]
    return root, with_eval.stdout


@pytest.mark.slow
def test_eval_scores_in_progress_csv_and_tensorboard(runs, cli):
    root, stdout = runs
    rows = cli.progress(root / "eval")
    assert cli.timesteps(rows) == [64, 128, 192, 256]
    assert [r["EvalRewMean"] == "" for r in rows] == [True, False, True, False]
    evals = [float(r["EvalRewMean"]) for r in rows if r["EvalRewMean"]]
    assert all(-21 <= e <= 21 for e in evals)
    assert all(float(r["EvalLenMean"]) > 100 for r in rows if r["EvalLenMean"])  # full games
    assert "EvalRewMean" in stdout  # the table shows it
    tb = EventAccumulator(str(root / "eval" / "tb"), size_guidance={"images": 0}).Reload()
    assert [(e.step, e.value) for e in tb.Scalars("EvalRewMean")] == list(zip([128, 256], evals))
    gifs = tb.Images("eval/video")
    assert [g.step for g in gifs] == [128, 256]
    assert all(g.encoded_image_string.startswith(b"GIF89a") and g.width == 160 for g in gifs)
    assert "EvalRewMean" not in cli.progress(root / "plain")[0]


@pytest.mark.slow
def test_eval_score_is_what_ppo1_evaluate_gets_with_the_eval_seed(runs, cli, tmp_path):
    """The last evaluation ran on the final weights: `ppo1 evaluate` with the documented seed replays
    the same games and gets the same mean."""
    root, _ = runs
    out = tmp_path / "eval.json"
    flags = ["--checkpoint_dir", str(root), "--model_name", "eval", "--episodes", "2"]
    p = cli.run(["evaluate", *flags, "--seed", str(EVAL_SEED), "--json", str(out)], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(out.read_text())["mean"] == float(cli.progress(root / "eval")[-1]["EvalRewMean"])


def test_videos_are_full_games_that_decode(runs):
    root, _ = runs
    videos = sorted((root / "eval" / "videos").glob("*.mp4"), key=lambda p: p.stat().st_mtime)
    assert [v.name.split("-step-")[1] for v in videos] == ["128.mp4", "256.mp4"]
    assert not list((root / "eval" / "videos").glob(".*"))  # no temporary files left
    frames = iio.imread(videos[-1])
    assert frames.shape[1:] == (210, 160, 3) and len(frames) > 100
    assert np.ptp(frames.astype(np.int16), axis=0).max() > 50  # the picture changes


def test_evaluation_leaves_training_unchanged(runs, cli):
    """Evaluation uses its own envs and random generator: the same seed trains the same weights and
    logs the same losses with or without it."""
    root, _ = runs
    a = torch.load(root / "eval" / "checkpoint.pt", weights_only=True)
    b = torch.load(root / "plain" / "checkpoint.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    losses = ["pol_surr", "vf_loss", "ent", "TimestepsSoFar"]
    rows = [[{k: r[k] for k in losses} for r in cli.progress(root / name)] for name in ("eval", "plain")]
    assert rows[0] == rows[1]


def test_capture_video_needs_eval_interval(capsys, tmp_path, monkeypatch):
    from conftest import one_error_line

    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, ["train", "--capture_video"])
    assert "--eval_interval" in line
    assert list(tmp_path.iterdir()) == []


def test_logger_widens_progress_csv_for_a_new_column(tmp_path):
    """A column first logged later (an evaluation, or a resumed run with new flags) rewrites the
    header; earlier rows get blanks there."""
    from ppo1.logger import Logger
    from ppo1.runfiles import PROGRESS

    log = Logger(tmp_path, 100, 0)
    log.dump({"a": 1, "b": 2.5}, 1)
    log.dump({"a": 2, "b": 3.5, "c": 7}, 2)
    log.close()
    log = Logger(tmp_path, 100, 2)  # resumed
    log.dump({"a": 3, "b": 4.5}, 3)
    log.dump({"a": 4, "d": 1}, 4)
    log.close()
    with (tmp_path / PROGRESS).open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["a", "b", "c", "d"],
        ["1", "2.5", "", ""],
        ["2", "3.5", "7", ""],
        ["3", "4.5", "", ""],
        ["4", "", "", "1"],
    ]
