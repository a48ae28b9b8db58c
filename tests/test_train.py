"""Training end to end: reproducibility, Ctrl-C and kill -9 with resume, monitor.csv, --fresh."""

import json
import signal
import time

import pytest
import torch
from conftest import TINY_CONFIG

from ppo1 import checkpoint
from ppo1.checkpoint import Counters
from ppo1.config import resolve
from ppo1.distributed import Dist
from ppo1.launch import start
from ppo1.trainer import Trainer

GAME = "BreakoutNoFrameskip-v4"  # random play ends Breakout games in ~100-400 steps: monitor rows


def overrides(checkpoint_dir, **kw):
    """conftest's tiny config on Pong, 2 iterations, a checkpoint after each, in run folder `run`."""
    base = dict(TINY_CONFIG, env_name="PongNoFrameskip-v4", env_steps=128, save_interval=1, seed=0)
    return base | dict(checkpoint_dir=str(checkpoint_dir), model_name="run") | kw


def load(run_dir):
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


def test_same_seed_same_result(tmp_path, cli):
    _, counters = start(overrides(tmp_path / "a"))
    assert (counters.timesteps, counters.iterations) == (128, 2)
    start(overrides(tmp_path / "b"))
    start(overrides(tmp_path / "c", seed=1))
    a, b, c = (load(tmp_path / x / "run") for x in "abc")
    assert a["model"].keys() == b["model"].keys() and len(a["model"]) > 0
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, state in a["optimizer"]["state"].items():
        for name, t in state.items():
            assert torch.equal(t, b["optimizer"]["state"][k][name]), (k, name)
    assert a["counters"]["timesteps"] == b["counters"]["timesteps"] == 128
    # The logged losses are identical too (timings are not).
    rows_a, rows_b = (cli.progress(tmp_path / x / "run") for x in "ab")
    for key in ["pol_surr", "vf_loss", "ent", "approx_kl", "TimestepsSoFar"]:
        assert [r[key] for r in rows_a] == [r[key] for r in rows_b]
    # Another seed: other parameters.
    differing = [k for k in a["model"] if not torch.equal(a["model"][k], c["model"][k])]
    assert len(differing) > len(a["model"]) // 2


def test_one_iteration_counts_logs_and_saves(tmp_path, cli):
    """The loop body alone: one iteration of 2 envs x 128 steps on Breakout (games end there)."""
    cfg = resolve(overrides(tmp_path, env_name=GAME, timesteps_per_actorbatch=128))
    cfg.run_dir.mkdir(parents=True)
    run = Trainer(cfg, None, Dist(), torch.device("cpu"))
    try:
        row = run.iteration()
    finally:
        run.close()
    games = [(float(line.split(",")[0]), int(line.split(",")[1])) for line in monitor_rows(cfg.run_dir)]
    assert run.counters == Counters(256, 1, len(games), run.counters.elapsed)
    assert round(run.counters.elapsed, 2) == row["TimeElapsed"] > 0
    assert (row["TimestepsSoFar"], row["Iteration"], row["EpisodesSoFar"]) == (256, 1, len(games))
    assert row["EpThisIter"] == len(games) >= 1
    assert row["EpRewMean"] == pytest.approx(sum(r for r, _ in games) / len(games))
    assert row["lrmult"] == 1.0 and row["clip"] == pytest.approx(cfg.epsilon)  # the schedule at step 0
    for key in ("pol_surr", "pol_entpen", "vf_loss", "ent", "approx_kl", "clipfrac", "ev_tdlam_before"):
        assert key in row
    (logged,) = cli.progress(cfg.run_dir)
    assert float(logged["TimestepsSoFar"]) == 256
    assert float(logged["vf_loss"]) == pytest.approx(row["vf_loss"])
    saved = load(cfg.run_dir)["counters"]  # save_interval 1: saved after this iteration
    assert saved == dict(
        timesteps=256, iterations=1, episodes=len(games), elapsed=run.counters.elapsed, resumes=0
    )


@pytest.mark.slow
def test_wallclock_preset_takes_eight_times_the_gradient_steps_on_the_large_network(tmp_path):
    """One iteration of 8 envs x 128 steps, 3 epochs: ppo-paper's minibatches of 256 make 12 Adam
    steps of the small (A3C) network, the wallclock preset's minibatches of 32 make 96 of the large
    (Nature DQN) one; the rest of the settings are the same."""
    paper, fast = resolve({"preset": "ppo-paper"}).to_dict(), resolve({"preset": "wallclock"}).to_dict()
    assert {k for k in paper if paper[k] != fast[k]} == {
        "preset",
        "optim_batchsize",
        "model_type",
        "env_steps",
        "anneal_steps",
    }
    for preset, steps, conv in (("ppo-paper", 12, [16, 32]), ("wallclock", 96, [32, 64, 64])):
        run = overrides(tmp_path / preset, preset=preset, num_envs=8, timesteps_per_actorbatch=128)
        run["env_steps"] = 1024
        del run["optim_batchsize"], run["model_type"]  # the preset's
        start(run)
        saved = load(tmp_path / preset / "run")
        state = saved["optimizer"]["state"]
        assert len(state) > 0 and {int(s["step"]) for s in state.values()} == {steps}
        convs = [w.shape[0] for k, w in saved["model"].items() if w.dim() == 4]
        assert convs == conv, convs


def lrmults(run_dir, cli) -> list[float]:
    return [float(r["lrmult"]) for r in cli.progress(run_dir)]


def test_the_schedule_anneals_over_the_larger_of_env_steps_and_anneal_steps(tmp_path, cli):
    """4 iterations of 64 steps: lrmult 1 - t / T before each, T = max(env_steps, anneal_steps)."""
    for anneal, total in ((0, 256), (100, 256), (1024, 1024)):
        run = overrides(tmp_path / str(anneal), env_steps=256, anneal_steps=anneal)
        start(run)
        assert lrmults(tmp_path / str(anneal) / "run", cli) == pytest.approx(
            [1 - t / total for t in (0, 64, 128, 192)]
        )


def test_a_checkpoint_from_before_anneal_steps_resumes_on_its_own_schedule(tmp_path, cli):
    """The wallclock preset anneals over 10M steps now; a run saved before the field existed annealed
    over its env_steps, and a resume keeps that schedule instead of taking the preset's."""
    run = overrides(tmp_path, preset="wallclock", env_steps=128)
    start(run)
    path = tmp_path / "run" / "checkpoint.pt"
    state = load(tmp_path / "run")
    assert state["config"]["anneal_steps"] == 10_000_000
    del state["config"]["anneal_steps"]
    checkpoint.save(path, {k: v for k, v in state.items() if k != "format_version"})
    start({**run, "env_steps": 256})
    # The resumed iterations anneal over 256 steps (on the preset's 10M they would be about 0.99997).
    assert lrmults(tmp_path / "run", cli)[2:] == pytest.approx([0.5, 0.25])
    assert load(tmp_path / "run")["config"]["anneal_steps"] == 0


def test_a_run_counts_its_resumes(tmp_path, capsys):
    """Each resume says which it is, and the count is kept in the checkpoint and config.json."""
    run = overrides(tmp_path, env_steps=64)
    start(run)
    assert "resuming" not in capsys.readouterr().out
    for n, steps in ((1, 128), (2, 192)):
        start({**run, "env_steps": steps})
        assert f"at step {steps - 64} (iteration {steps // 64 - 1}, resume {n});" in capsys.readouterr().out
    assert load(tmp_path / "run")["counters"]["resumes"] == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resumes"] == 2


def test_finished_run_does_nothing_more(tmp_path, cli, capsys):
    start(overrides(tmp_path, env_steps=64))
    assert not (tmp_path / "run" / "lock").exists()  # a clean exit leaves no holder's name behind
    before = load(tmp_path / "run")
    rows = cli.progress(tmp_path / "run")
    capsys.readouterr()
    _, counters = start(overrides(tmp_path, env_steps=64))
    assert "resuming" in capsys.readouterr().out
    assert counters.timesteps == 64 and counters.iterations == 1
    assert cli.progress(tmp_path / "run") == rows
    after = load(tmp_path / "run")
    for k in before["model"]:
        assert torch.equal(before["model"][k], after["model"][k])


def wait_for(predicate, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"ppo1 exited ({proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-2000:]}")
        if predicate():
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def complete_rows(run_dir, cli):
    return [r for r in cli.progress(run_dir) if r.get("TimestepsSoFar") and r.get("TimeIteration")]


def monitor_rows(run_dir):
    path = run_dir / "monitor.csv"
    return path.read_text().splitlines()[2:] if path.exists() else []


def check_monitor(run_dir, env_name):
    lines = (run_dir / "monitor.csv").read_text().splitlines()
    assert lines[0].startswith("#")
    header = json.loads(lines[0][1:])
    assert header["env_id"] == env_name and header["t_start"] > 0
    assert lines[1] == "r,l,t"
    rows = [line.split(",") for line in lines[2:]]
    assert all(len(r) == 3 for r in rows)
    scores, lengths, times = ([float(x[i]) for x in rows] for i in range(3))
    assert all(s >= 0 and s == int(s) for s in scores)  # Breakout scores: real, unclipped points
    assert all(n > 0 and n == int(n) for n in lengths)
    assert times == sorted(times)
    return rows


@pytest.mark.slow
def test_ctrl_c_saves_and_the_same_command_resumes(tmp_path, cli):
    B = cli.BATCH
    args = ["train", *cli.TINY, "--env_name", GAME, "--model_name", "run", "--checkpoint_dir", "ck"]
    args += ["--save_interval", "1"]
    run_dir = tmp_path / "ck" / "run"
    p = cli.popen([*args, "--env_steps", str(1000 * B)], tmp_path)
    wait_for(
        lambda: (
            (run_dir / "checkpoint.pt").exists()
            and len(complete_rows(run_dir, cli)) >= 2
            and len(monitor_rows(run_dir)) >= 1
        ),
        p,
        150,
        "a checkpoint, 2 progress rows and a finished game",
    )
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=15)
    except Exception:
        p.kill()
        raise
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert "SIGINT" in out and "saved" in out
    ck = load(run_dir)
    rows = cli.progress(run_dir)
    saved = ck["counters"]["timesteps"]
    assert saved == int(rows[-1]["TimestepsSoFar"]) and saved % B == 0 and saved >= 2 * B
    assert ck["counters"]["iterations"] == int(rows[-1]["Iteration"]) == saved // B
    assert f"at step {saved}" in out
    assert cli.timesteps(rows) == list(range(B, saved + 1, B))
    # Every finished game is one monitor row, and the counters agree.
    games = check_monitor(run_dir, GAME)
    assert len(games) == int(rows[-1]["EpisodesSoFar"]) == ck["counters"]["episodes"] >= 1
    assert [float(g[0]) for g in games[-len(ck["recent"]["scores"]) :]] == ck["recent"]["scores"]

    # The same command, with a target three iterations further on.
    target = saved + 3 * B
    p2 = cli.run([*args, "--env_steps", str(target)], tmp_path, timeout=180)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert f"resuming {run_dir.relative_to(tmp_path)}/checkpoint.pt at step {saved}" in p2.stdout
    rows = cli.progress(run_dir)
    steps = cli.timesteps(rows)
    assert steps == list(range(B, target + 1, B))  # strictly increasing, no duplicates, no gaps
    assert [int(r["Iteration"]) for r in rows] == list(range(1, target // B + 1))
    ck = load(run_dir)
    assert ck["counters"]["timesteps"] == target and ck["counters"]["iterations"] == target // B
    assert ck["config"]["env_steps"] == target
    # Episodes keep counting from the first session.
    episodes = [int(r["EpisodesSoFar"]) for r in rows]
    assert episodes == sorted(episodes) and ck["counters"]["episodes"] == episodes[-1]
    check_monitor(run_dir, GAME)


@pytest.mark.slow
def test_kill_9_then_resume_drops_rows_after_the_checkpoint(tmp_path, cli):
    B = cli.BATCH
    args = ["train", *cli.TINY, "--env_name", GAME, "--model_name", "run", "--checkpoint_dir", "ck"]
    args += ["--save_interval", "3"]
    run_dir = tmp_path / "ck" / "run"
    p = cli.popen([*args, "--env_steps", str(1000 * B)], tmp_path)
    snapshot = {}

    def rows_beyond_checkpoint():
        """Freeze the process; kill it if progress.csv is ahead of the checkpoint, else thaw it."""
        if not (run_dir / "checkpoint.pt").exists():
            return False
        p.send_signal(signal.SIGSTOP)
        saved = load(run_dir)["counters"]["timesteps"]
        logged = cli.timesteps(complete_rows(run_dir, cli))
        if logged and logged[-1] > saved:
            p.kill()
            snapshot.update(saved=saved, logged=logged)
            return True
        p.send_signal(signal.SIGCONT)
        return False

    try:
        wait_for(rows_beyond_checkpoint, p, 180, "progress rows after a checkpoint")
    finally:
        p.kill()
        p.communicate()
    assert p.returncode == -signal.SIGKILL
    saved, logged = snapshot["saved"], snapshot["logged"]
    assert load(run_dir)["counters"]["timesteps"] == saved
    assert saved % (3 * B) == 0 and logged[-1] > saved

    target = logged[-1] + 2 * B  # past every step logged before the kill
    p2 = cli.run([*args, "--env_steps", str(target)], tmp_path, timeout=180)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert f"at step {saved}" in p2.stdout and "resuming" in p2.stdout
    steps = cli.timesteps(cli.progress(run_dir))
    assert steps == list(range(B, target + 1, B))  # the rows after `saved` were logged once only
    ck = load(run_dir)
    assert ck["counters"]["timesteps"] == target
    check_monitor(run_dir, GAME)


@pytest.mark.slow
def test_other_game_same_model_name_then_fresh(tmp_path, cli, capsys):
    start(overrides(tmp_path / "ck", env_steps=64))  # a Pong run in ck/run
    run_dir = tmp_path / "ck" / "run"
    old_ckpt = (run_dir / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    args = ["train", *cli.TINY, "--env_name", GAME, "--model_name", "run", "--checkpoint_dir", "ck"]
    args += ["--env_steps", "64"]
    before = cli.snapshot(tmp_path)
    p = cli.run(args, tmp_path)
    assert p.returncode == 2
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert "Pong" in lines[0] and "Breakout" in lines[0]
    assert cli.snapshot(tmp_path) == before

    p = cli.run([*args, "--fresh"], tmp_path, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming" not in p.stdout and "--fresh" in p.stdout
    aside = [d for d in (tmp_path / "ck").iterdir() if d.name.startswith("run.old-")]
    assert len(aside) == 1 and aside[0].is_dir()
    assert (aside[0] / "checkpoint.pt").read_bytes() == old_ckpt  # kept, not deleted
    assert load(aside[0])["config"]["env_name"] == "PongNoFrameskip-v4"
    ck = load(run_dir)
    assert ck["config"]["env_name"] == GAME
    assert ck["counters"]["timesteps"] == 64 and ck["counters"]["iterations"] == 1
    assert cli.timesteps(cli.progress(run_dir)) == [64]  # started at step 0
    assert json.loads((run_dir / "config.json").read_text())["env_name"] == GAME


def test_fresh_twice_in_one_second_keeps_both_old_folders(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "note").write_text("second run")
    # The folder a --fresh in this same second would have made, for each of the next 20 seconds.
    now = time.time()
    for dt in range(20):
        old = tmp_path / f"run.old-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now + dt))}"
        old.mkdir()
        (old / "note").write_text("first run")
    start(overrides(tmp_path, env_steps=64), fresh=True)
    olds = [d for d in tmp_path.iterdir() if d.name.startswith("run.old-")]
    assert sorted((d / "note").read_text() for d in olds) == ["first run"] * 20 + ["second run"]
    assert load(run_dir)["counters"]["timesteps"] == 64


def test_config_json_records_what_the_run_used(tmp_path):
    """config.json names the run folder, the device and the thread counts picked on this machine;
    the checkpoint keeps auto / 0, so a resume on another machine picks them again."""
    from ppo1.device import default_threads

    run = overrides(tmp_path, device="auto", torch_threads=0, env_threads=0, env_steps=64)
    del run["model_name"]
    start(run)
    run_dir = tmp_path / "Pong-wallclock"
    used = json.loads((run_dir / "config.json").read_text())
    assert used["model_name"] == "Pong-wallclock" and used["preset"] == "wallclock"
    assert used["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert used["torch_threads"] == default_threads() and used["env_threads"] == min(2, default_threads())
    saved = load(run_dir)["config"]
    assert (saved["model_name"], saved["device"], saved["torch_threads"], saved["env_threads"]) == (
        "",
        "auto",
        0,
        0,
    )
