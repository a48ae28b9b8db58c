"""What a run writes: monitor.csv in baselines' format, and dropping rows logged after a checkpoint."""

import csv
import json

import pytest

from ppo1.logger import format_table
from ppo1.runfiles import PROGRESS, MonitorWriter, drop_rows_after, monitor_name


def read_monitor(path):
    lines = path.read_text().splitlines()
    return json.loads(lines[0][1:]), lines[1], list(csv.DictReader(lines[1:]))


def test_monitor_format_and_append(tmp_path):
    path = tmp_path / monitor_name(0)
    m = MonitorWriter(path, "BreakoutNoFrameskip-v4")
    m.write([2.0, 11.0], [180, 420], 1.5)
    m.write([], [], 2.0)
    m.close()
    first = path.read_text().splitlines()[0]
    assert first.startswith("#")
    header, columns, rows = read_monitor(path)
    assert header["env_id"] == "BreakoutNoFrameskip-v4" and isinstance(header["t_start"], float)
    assert columns == "r,l,t"
    assert [(float(r["r"]), int(r["l"]), float(r["t"])) for r in rows] == [(2.0, 180, 1.5), (11.0, 420, 1.5)]
    # Reopening (a resumed run) appends rows without a second header.
    m = MonitorWriter(path, "BreakoutNoFrameskip-v4")
    m.write([3.0], [200], 4.25)
    m.close()
    text = path.read_text()
    assert text.count("#") == 1 and text.count("r,l,t") == 1
    assert len(read_monitor(path)[2]) == 3
    assert monitor_name(3) == "monitor.3.csv"


def write_progress(run_dir, steps):
    with (run_dir / PROGRESS).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["loss", "TimestepsSoFar", "Iteration"])
        for i, s in enumerate(steps, 1):
            w.writerow([0.5, s, i])


def test_drop_rows_after_a_checkpoint(tmp_path):
    write_progress(tmp_path, [64, 128, 192, 256, 320])
    m = MonitorWriter(tmp_path / "monitor.csv", "Pong")
    for t in (1.25, 2.5, 3.75, 5.0):
        m.write([float(t)], [100], t)
    m.close()
    header_line = (tmp_path / "monitor.csv").read_text().splitlines()[0]
    drop_rows_after(tmp_path, 192, 2.5)
    with (tmp_path / PROGRESS).open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["TimestepsSoFar"]) for r in rows] == [64, 128, 192]
    assert rows[0] == {"loss": "0.5", "TimestepsSoFar": "64", "Iteration": "1"}
    lines = (tmp_path / "monitor.csv").read_text().splitlines()
    assert lines[0] == header_line and lines[1] == "r,l,t"
    assert [float(r["t"]) for r in read_monitor(tmp_path / "monitor.csv")[2]] == [1.25, 2.5]
    # No temporary files left behind; a second call changes nothing.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["monitor.csv", PROGRESS]
    before = (tmp_path / PROGRESS).read_bytes(), (tmp_path / "monitor.csv").read_bytes()
    drop_rows_after(tmp_path, 192, 2.5)
    assert ((tmp_path / PROGRESS).read_bytes(), (tmp_path / "monitor.csv").read_bytes()) == before


def test_drop_rows_after_with_nothing_to_keep(tmp_path):
    write_progress(tmp_path, [64, 128])
    drop_rows_after(tmp_path, 0, 0.0)
    assert (tmp_path / PROGRESS).read_text().splitlines() == ["loss,TimestepsSoFar,Iteration"]
    drop_rows_after(tmp_path / "missing", 0, 0.0)  # no files: nothing to do, no error


def test_resume_keeps_the_games_of_the_checkpoint_iteration(tmp_path):
    elapsed = 12.3456789  # the checkpoint's counters["elapsed"] for the iteration that logged them
    m = MonitorWriter(tmp_path / "monitor.csv", "Pong")
    m.write([-21.0, -20.0], [800, 820], elapsed)  # the games of that same iteration
    m.close()
    drop_rows_after(tmp_path, 640, elapsed)
    assert len(read_monitor(tmp_path / "monitor.csv")[2]) == 2


def test_format_table():
    table = format_table({"vf_loss": 0.123456, "TimestepsSoFar": 640, "note": "x"})
    lines = table.splitlines()
    assert lines[0] == lines[-1] and set(lines[0]) == {"-"}
    assert len({len(line) for line in lines}) == 1  # aligned
    assert "| vf_loss        | 0.123    |" in lines
    assert any("TimestepsSoFar | 640" in line for line in lines)


@pytest.mark.parametrize("torn", ["progress", "monitor"])
def test_resume_survives_a_torn_last_line(tmp_path, torn):
    write_progress(tmp_path, [64, 128])
    m = MonitorWriter(tmp_path / "monitor.csv", "Pong")
    m.write([1.0], [100], 1.5)
    m.close()
    name, tail = ("progress.csv", "0.5") if torn == "progress" else ("monitor.csv", "2.0,10")
    with (tmp_path / name).open("a") as f:
        f.write(tail)  # the first bytes of a row, no newline
    drop_rows_after(tmp_path, 128, 5.0)
    with (tmp_path / PROGRESS).open() as f:
        assert [int(r["TimestepsSoFar"]) for r in csv.DictReader(f)] == [64, 128]
    assert [float(r["t"]) for r in read_monitor(tmp_path / "monitor.csv")[2]] == [1.5]


@pytest.mark.slow
def test_after_a_resume_tensorboard_holds_every_step_of_progress_csv_once(tmp_path, cli):
    """A resume drops the TensorBoard events logged after its checkpoint, not the checkpoint's own
    step, which progress.csv keeps; kill -9 after a save leaves later events to drop too."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["train", *cli.TINY, "--checkpoint_dir", "ck", "--model_name", "run", "--save_interval", "2"]
    r = cli.run([*args, "--env_steps", str(3 * cli.BATCH)], cwd=tmp_path)  # saved at 2 and 3
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli.run([*args, "--env_steps", str(6 * cli.BATCH)], cwd=tmp_path)  # resumes at 3
    assert r.returncode == 0 and "resuming" in r.stdout, r.stderr[-2000:]
    run_dir = tmp_path / "ck" / "run"
    logged = cli.timesteps(cli.progress(run_dir))
    assert logged == [i * cli.BATCH for i in range(1, 7)]
    tb = EventAccumulator(str(run_dir / "tb")).Reload()
    for tag in ("TimestepsSoFar", "EpRewMean", "TimeIteration"):
        assert [e.step for e in tb.Scalars(tag)] == logged, tag
