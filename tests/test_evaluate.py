"""`ppo1 evaluate` and ppo1.evaluate.evaluate(): real ALE games, real checkpoints, real JSON."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import one_error_line, run_cli

from ppo1 import checkpoint
from ppo1.agent import load_agent
from ppo1.envspec import default_protocol, parse_env_name
from ppo1.evaluate import evaluate


def check_stats(result: dict, episodes: int) -> None:
    """The JSON's numbers are those of the games it lists."""
    scores = np.array(result["scores"])
    assert len(scores) == episodes == result["episodes"]
    assert len(result["lengths"]) == episodes
    assert result["mean"] == pytest.approx(scores.mean())
    assert result["std"] == pytest.approx(scores.std())
    assert result["min"] == scores.min() and result["max"] == scores.max()
    assert result["min"] <= result["mean"] <= result["max"]
    for score, length in zip(scores, result["lengths"]):
        # A full Pong game ends when one side has 21 points: at least 21 rallies of many steps.
        assert -21 <= score <= 21 and score == int(score)
        assert length > 21 * 20, result["lengths"]


EVAL_PAPER = ["--episodes", "3", "--num_envs", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def paper_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "paper.json"
    args = ["evaluate", "--checkpoint_dir", str(tiny), "--model_name", "tiny", *EVAL_PAPER]
    r = run_cli([*args, "--protocol", "paper", "--json", str(out)], cwd=tiny)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text()), r.stdout


def test_evaluate_paper_protocol_json_matches_the_games(paper_run, tiny):
    result, stdout = paper_run
    check_stats(result, 3)  # 3 games over 2 envs: quotas of 2 and 1, exactly 3 counted
    assert result["protocol"] == "paper"
    assert result["noop_max"] == 30 and result["sticky"] == 0.0 and result["max_frames"] == 108_000
    assert result["deterministic"] is False
    assert result["env_name"] == "PongNoFrameskip-v4"
    state = checkpoint.load(tiny / "tiny" / checkpoint.CHECKPOINT)
    assert result["checkpoint_step"] == state["counters"]["timesteps"] == 256
    assert f"mean {result['mean']:.2f}" in stdout
    assert "scores: " + " ".join(f"{s:g}" for s in result["scores"]) in stdout


def test_same_seed_same_games_and_default_protocol_is_the_trained_one(paper_run, tiny, tmp_path):
    """Same checkpoint, same seed: the same games. No --protocol on a NoFrameskip-v4 agent means
    paper, so this run must repeat the explicit `--protocol paper` run exactly."""
    first, _ = paper_run
    out = tmp_path / "again.json"
    args = ["evaluate", "--checkpoint_dir", str(tiny), "--model_name", "tiny", *EVAL_PAPER]
    r = run_cli([*args, "--json", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads(out.read_text())
    assert again["protocol"] == "paper"
    assert again["scores"] == first["scores"]
    assert again["lengths"] == first["lengths"]


def test_evaluate_function_in_process_repeats_the_cli(paper_run, tiny):
    """evaluate() (what the training loop will call) plays the same games as the command."""
    first, _ = paper_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        agent = load_agent(checkpoint_dir=str(tiny), model_name="tiny")
        agent.policy.train()
        result = evaluate(agent.policy, agent.cfg, 3, "paper", False, 3, "cpu", num_envs=2)
    finally:
        torch.set_num_threads(threads)
    assert agent.policy.training  # its mode is given back
    check_stats(result, 3)
    assert result["scores"] == first["scores"] and result["lengths"] == first["lengths"]


def test_evaluate_machado_protocol_deterministic(tiny, tmp_path):
    out = tmp_path / "machado.json"
    args = ["evaluate", "--checkpoint_dir", str(tiny), "--model_name", "tiny", "--episodes", "2"]
    r = run_cli([*args, "--protocol", "machado", "--deterministic", "--json", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    check_stats(result, 2)
    assert result["protocol"] == "machado"
    assert result["sticky"] == 0.25 and result["noop_max"] == 0
    assert result["deterministic"] is True
    assert "sticky actions 0.25" in r.stdout


@pytest.mark.slow
def test_random_agent_scores_about_minus_20_7_on_pong(tmp_path):
    """--allow_random: an untrained policy (near-uniform actions) loses Pong about 21-0.3."""
    out = tmp_path / "random.json"
    args = ["evaluate", "--checkpoint_dir", str(tmp_path), "--model_name", "untrained"]
    r = run_cli([*args, "--allow_random", "--episodes", "8", "--json", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    check_stats(result, 8)
    assert result["checkpoint_step"] is None and result["checkpoint"] is None
    assert -21 <= result["mean"] <= -19.5, result["scores"]
    assert "untrained" in r.stdout
    assert not (tmp_path / "untrained").exists()  # evaluating writes no run folder


@pytest.mark.parametrize(
    "env_name, protocol",
    [
        ("ALE/Pong-v5", "machado"),
        ("PongNoFrameskip-v4", "paper"),
        ("Pong", "paper"),
        ("ALE/Breakout-v5", "machado"),
    ],
)
def test_default_protocol_is_the_training_one(env_name, protocol):
    assert default_protocol(parse_env_name(env_name)) == protocol


def test_no_checkpoint_is_one_line_error(capsys, tmp_path):
    out = tmp_path / "x.json"
    line = one_error_line(
        capsys, ["evaluate", "--checkpoint_dir", str(tmp_path), "--model_name", "nothing", "--json", str(out)]
    )
    assert "no checkpoint" in line and "--allow_random" in line
    assert not out.exists()


def test_checkpoint_of_another_game_names_both(capsys, tiny):
    line = one_error_line(
        capsys,
        ["evaluate", "--checkpoint_dir", str(tiny), "--model_name", "tiny", "--env_name", "ALE/Breakout-v5"],
    )
    assert "Pong" in line and "Breakout" in line


@pytest.mark.parametrize(
    "bad, needle",
    [
        (["--episodes", "0"], "--episodes"),
        (["--episodes", "-3"], "--episodes"),
        (["--protocol", "atari100k"], "--protocol"),
        (["--num_envs", "0"], "--num_envs"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(capsys, tiny, tmp_path, bad, needle):
    out = tmp_path / "x.json"
    args = ["evaluate", "--checkpoint_dir", str(tiny), "--model_name", "tiny", "--json", str(out)]
    line = one_error_line(capsys, [*args, *bad])
    assert needle in line
    assert not out.exists()


@pytest.mark.slow
def test_json_alone_lands_under_the_agents_name_in_asset_dir(paper_run, tiny, tmp_path):
    """--json with no file: <asset_dir>/<agent name>/eval-<protocol>-step-<step>.json, the agent
    name being a checkpoint file's own (a shipped agent), not the run that trained it; nothing else
    is written in the working folder."""
    agent = tmp_path / "agents" / "my-agent.pt"
    agent.parent.mkdir()
    shutil.copy(tiny / "tiny" / "checkpoint.pt", agent)
    r = run_cli(["evaluate", "--checkpoint", str(agent), *EVAL_PAPER, "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    written = tmp_path / "assets" / "my-agent" / "eval-paper-step-256.json"
    assert f"wrote assets/my-agent/{written.name}" in r.stdout
    assert json.loads(written.read_text())["scores"] == paper_run[0]["scores"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agents", "assets"]
