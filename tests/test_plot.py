"""`ppo1 plot`: learning curves from monitor.csv / progress.csv written in the formats a run writes;
a game's agent step is the real step counter of progress.csv when it was logged."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from conftest import one_error_line
from matplotlib.collections import PolyCollection

from ppo1.plot import group_name, load_run, plot_runs
from ppo1.runfiles import MonitorWriter, drop_rows_after, monitor_name


def write_run(run_dir: Path, seed: int, games: int = 200, ranks: int = 1) -> None:
    """A run's monitor file(s), written by the writer training uses, and its progress.csv: a Pong
    agent that improves from -21 to about +15, games of ~1000-3000 agent steps (one per
    iteration, 700 more steps in flight), seed-dependent noise."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    writers = [MonitorWriter(run_dir / monitor_name(rank), "PongNoFrameskip-v4") for rank in range(ranks)]
    rows, steps = [], 700
    for g in range(games):
        score = float(np.clip(np.round(-21 + 36 * g / games + rng.normal(0, 3)), -21, 21))
        length = int(1000 + 10 * g + rng.integers(0, 200))
        elapsed = 10.0 * g + rng.random()
        writers[g % ranks].write([score], [length], elapsed=elapsed)
        steps += length
        rows.append((steps, round(elapsed, 2)))
    for w in writers:
        w.close()
    write_clock(run_dir, rows)


def write_clock(run_dir: Path, rows: list[tuple[int, float]]) -> None:
    """progress.csv's TimestepsSoFar and TimeElapsed, one row per iteration."""
    with (run_dir / "progress.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["TimestepsSoFar", "TimeElapsed", "EpRewMean"])
        w.writerows([(step, t, -20.0) for step, t in rows])


def write_progress(run_dir: Path, rows: list[tuple[int, float]]) -> None:
    run_dir.mkdir(parents=True)
    with (run_dir / "progress.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pol_surr", "EpLenMean", "EpRewMean", "TimestepsSoFar"])
        for step, score in rows:
            w.writerow([0.01, 900.0, score, step])


@pytest.mark.parametrize(
    "name, group",
    [
        ("tiny-seed1", "tiny"),
        ("tiny_seed2", "tiny"),
        ("tiny_s1", "tiny"),
        ("tiny-s12", "tiny"),
        ("Pong-ppo-paper", "Pong-ppo-paper"),
        ("seed1", "seed1"),
        ("exp-seeds", "exp-seeds"),
    ],
)
def test_group_name_strips_a_seed_suffix(name, group):
    assert group_name(name) == group


def test_monitor_files_of_ranks_are_merged_by_time(tmp_path):
    run = tmp_path / "dist"
    run.mkdir()
    rank0 = MonitorWriter(run / monitor_name(0), "PongNoFrameskip-v4")
    rank1 = MonitorWriter(run / monitor_name(1), "PongNoFrameskip-v4")
    rank0.write([-21.0], [100], elapsed=1.0)
    rank1.write([-20.0], [200], elapsed=2.0)
    rank0.write([-19.0], [300], elapsed=3.0)
    rank1.write([-18.0], [400], elapsed=4.0)
    rank0.close()
    rank1.close()
    write_clock(run, [(1024, 1.0), (2048, 2.0), (3072, 3.0), (4096, 4.0)])
    curve = load_run(run, smooth=1)
    assert curve.source == "monitor" and curve.games == 4
    assert curve.steps.tolist() == [1024, 2048, 3072, 4096]  # the step counter when each was logged
    assert curve.scores.tolist() == [-21, -20, -19, -18]
    assert load_run(run, smooth=2).scores.tolist() == [-21, -20.5, -19.5, -18.5]
    assert curve.env_id == "PongNoFrameskip-v4"


def test_the_steps_after_a_resume_are_the_real_counter(tmp_path, capsys):
    """Games cut by a resume leave the summed lengths behind the counter: the curve is at the
    counter. 1 env, iterations of 1,000 steps (10 s), games of 350: the checkpoint at iteration 3
    (3,000 steps, 200 into a game), the run stopped at 5 and resumed from the checkpoint."""
    run = tmp_path / "run"
    run.mkdir()

    def train(start: int, stop: int) -> None:  # the emulator starts a fresh game at `start`
        monitor, played = MonitorWriter(run / "monitor.csv", "PongNoFrameskip-v4"), 0
        for i in range(start + 1, stop + 1):
            n, played = divmod(played + 1000, 350)
            monitor.write([-20.0] * n, [350] * n, elapsed=10.0 * i + 0.004)
        monitor.close()

    train(0, 5)
    write_clock(run, [(1000 * i, 10.0 * i) for i in range(1, 6)])
    drop_rows_after(run, 3000, 30.004)
    train(3, 6)
    write_clock(run, [(1000 * i, 10.0 * i) for i in range(1, 7)])
    curve = load_run(run, smooth=1)
    # 8 games by the checkpoint (2,800 steps), 8 after it: summed lengths would put the last at
    # 16 x 350 = 5,600 steps; it was logged at 6,000.
    assert curve.steps.tolist() == [1000] * 2 + [2000] * 3 + [3000] * 3 + [4000] * 2 + [5000] * 3 + [6000] * 3
    # A live run: the games of the iteration being logged (no progress.csv row yet) wait.
    with (run / "monitor.csv").open("a") as f:
        f.write("-20.0,350,70.001\n")
    assert load_run(run, smooth=1).steps.tolist() == curve.steps.tolist()
    with (run / "monitor.csv").open("a") as f:  # a game logged at a time no iteration ended
        f.write("-20.0,350,45.5\n")
    out = tmp_path / "curve.png"
    assert "t=45.5 s has no progress.csv row" in one_error_line(capsys, ["plot", str(run), "-o", str(out)])
    (run / "progress.csv").unlink()
    assert "no progress.csv" in one_error_line(capsys, ["plot", str(run), "-o", str(out)])
    assert not out.exists()


def test_seeds_of_one_setting_draw_a_band(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path / f"exp-seed{seed}", seed)
    write_progress(tmp_path / "other", [(1024, float("nan")), (2048, -20.5), (4096, -19.0), (8192, -12.0)])
    out = tmp_path / "figs" / "curve.png"
    runs = [tmp_path / "exp-seed1", tmp_path / "exp-seed2", tmp_path / "other"]
    fig = plot_runs(runs, out)
    steps_ax, frames_ax = fig.axes[:2]
    for ax in (steps_ax, frames_ax):
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 1  # the two seeds; "other" is one run: a line only
        assert len(ax.get_lines()) == 2  # one line per setting
    labels = [line.get_label() for line in steps_ax.get_lines()]
    assert labels[0].startswith("exp (mean of 2 runs") and labels[1] == "other"
    mean_steps = steps_ax.get_lines()[0].get_xdata()
    np.testing.assert_allclose(frames_ax.get_lines()[0].get_xdata(), 4 * mean_steps)
    # The band has width: the seeds differ.
    verts = bands[0].get_paths()[0].vertices
    assert np.ptp(verts[:, 1]) > 1
    # progress.csv: the NaN row (no game finished yet) is left out.
    assert steps_ax.get_lines()[1].get_xdata().tolist() == [2048, 4096, 8192]

    assert out.stat().st_size > 10_000
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not a blank canvas

    single = plot_runs([tmp_path / "exp-seed1"])  # no seed to spread over: no band
    assert not [c for c in single.axes[0].collections if isinstance(c, PolyCollection)]


def test_a_symlinked_run_is_labelled_by_the_links_name(tmp_path, monkeypatch):
    # Two run folders both named ...-seed1 (from different settings) are told apart by linking
    # them under new names, rather than merged into one band.
    write_run(tmp_path / "a" / "Pong-seed1", 1)
    write_run(tmp_path / "b" / "Pong-seed1", 2)
    (tmp_path / "paper-seed1").symlink_to(tmp_path / "a" / "Pong-seed1")
    (tmp_path / "fast-seed1").symlink_to(tmp_path / "b" / "Pong-seed1")
    fig = plot_runs([tmp_path / "paper-seed1", tmp_path / "fast-seed1"])
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["paper-seed1", "fast-seed1"]
    merged = plot_runs([tmp_path / "a" / "Pong-seed1", tmp_path / "b" / "Pong-seed1"])
    assert merged.axes[0].get_lines()[0].get_label().startswith("Pong (mean of 2 runs")
    monkeypatch.chdir(tmp_path / "a" / "Pong-seed1")
    assert load_run(Path(".")).name == "Pong-seed1"  # "." is named after the folder it is


def test_plot_command_writes_the_png(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path / f"tiny_s{seed}", seed, ranks=2)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = tmp_path / "curve.png"
    r = subprocess.run(
        [sys.executable, "-m", "ppo1", "plot", "tiny_s1", "tiny_s2", "-o", str(out), "--spread", "std"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout
    image = matplotlib.image.imread(out)
    assert image[..., :3].std() > 0.05


def test_plot_errors_are_one_line_and_write_nothing(capsys, tmp_path):
    out = tmp_path / "curve.png"
    assert "does not exist" in one_error_line(capsys, ["plot", str(tmp_path / "missing"), "-o", str(out)])
    (tmp_path / "empty").mkdir()
    assert "no monitor.csv" in one_error_line(capsys, ["plot", str(tmp_path / "empty"), "-o", str(out)])
    # A run that has finished no game yet: its monitor.csv holds only the header.
    (tmp_path / "new").mkdir()
    MonitorWriter(tmp_path / "new" / "monitor.csv", "PongNoFrameskip-v4").close()
    assert "no finished game" in one_error_line(capsys, ["plot", str(tmp_path / "new"), "-o", str(out)])
    write_run(tmp_path / "ok", 0, games=20)
    ok = str(tmp_path / "ok")
    assert "image format" in one_error_line(capsys, ["plot", ok, "-o", str(tmp_path / "c.xyz")])
    assert "--smooth" in one_error_line(capsys, ["plot", ok, "-o", str(out), "--smooth", "0"])
    assert "--max_steps must be above 0" in one_error_line(
        capsys, ["plot", ok, "-o", str(out), "--max_steps", "0"]
    )
    assert not out.exists() and not (tmp_path / "c.xyz").exists()


def test_published_points_are_drawn_beside_the_runs(tmp_path):
    """--reference: each label of the CSV is one dashed line through its points, on both panels; the
    repository's own Pong file reads."""
    write_run(tmp_path / "exp-seed1", 1)
    ref = tmp_path / "ref.csv"
    ref.write_text("label,agent_steps,score\nA,600000,-18\nA,1300000,0\nB,10000000,20.7\n")
    fig = plot_runs([tmp_path / "exp-seed1"], reference=ref)
    steps_ax, frames_ax = fig.axes[:2]
    lines = {line.get_label(): line for line in steps_ax.get_lines()}
    assert list(lines) == ["exp-seed1", "A", "B"]
    assert lines["A"].get_xdata().tolist() == [600000, 1300000] and lines["A"].get_linestyle() == "--"
    assert lines["B"].get_ydata().tolist() == [20.7]
    frames = {line.get_label(): line for line in frames_ax.get_lines()}
    assert frames["A"].get_xdata().tolist() == [2400000, 5200000]
    shipped = Path(__file__).resolve().parents[1] / "benchmarks" / "references" / "pong.csv"
    labels = [
        line.get_label()
        for line in plot_runs([tmp_path / "exp-seed1"], reference=shipped).axes[0].get_lines()
    ]
    assert any(label.startswith("CleanRL") for label in labels) and any("PPO paper" in x for x in labels)


def test_a_bad_reference_file_is_one_line_and_writes_nothing(capsys, tmp_path):
    write_run(tmp_path / "ok", 0, games=20)
    out = tmp_path / "curve.png"
    args = ["plot", str(tmp_path / "ok"), "-o", str(out), "--reference"]
    assert "does not exist" in one_error_line(capsys, [*args, str(tmp_path / "nope.csv")])
    bad = tmp_path / "bad.csv"
    bad.write_text("label,agent_steps,score\nA,many,3\n")
    assert "line 2: want label,agent_steps,score" in one_error_line(capsys, [*args, str(bad)])
    bad.write_text("label,steps\n")
    assert "holds no points" in one_error_line(capsys, [*args, str(bad)])
    assert not out.exists()


def test_max_steps_cuts_both_panels_at_the_same_agent_step(tmp_path):
    write_run(tmp_path / "exp-seed1", 1)
    ref = tmp_path / "ref.csv"
    ref.write_text("label,agent_steps,score\nA,600000,-18\nA,10000000,20.7\n")
    whole = plot_runs([tmp_path / "exp-seed1"], reference=ref)
    assert whole.axes[0].get_xlim()[1] > 9e6  # the reference's 10M point widens the axis
    steps_ax, frames_ax = plot_runs([tmp_path / "exp-seed1"], reference=ref, max_steps=1.5e6).axes[:2]
    assert steps_ax.get_xlim() == (0, 1.5e6)
    assert frames_ax.get_xlim() == (0, 6e6)  # 4 frames per agent step
