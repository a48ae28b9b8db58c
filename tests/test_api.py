"""The Python API (ppo1.train, ppo1.load, Agent.act, ppo1.evaluate_policy): the README's example as
written, and the same agent, actions and games as the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

import ppo1
from ppo1.agent import ActionPicker, load_agent
from ppo1.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    rows = (tmp_path / "checkpoints" / "CartPole-classic" / "progress.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # the header, then 4 iterations of 8 x 128 steps
    # What it printed is the mean of the 5 games `ppo1 evaluate` plays with the saved agent...
    saved = run_cli(
        ["evaluate", "--checkpoint", "checkpoints/cartpole-agent.pt", "--episodes", "5", "--json", "t.json"],
        tmp_path,
    )
    assert saved.returncode == 0, saved.stderr
    assert float(printed) == json.loads((tmp_path / "t.json").read_text())["mean"]
    # ... and the 4096 steps taught it something: an untrained policy scores less in the same games.
    untrained = ["--env_name", "CartPole-v1", "--model_name", "untrained", "--allow_random"]
    p = run_cli(["evaluate", *untrained, "--episodes", "5", "--json", "r.json"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert float(printed) > json.loads((tmp_path / "r.json").read_text())["mean"]


@pytest.mark.slow
def test_the_api_plays_the_games_the_cli_plays(tiny, tmp_path):
    """The same agent loaded through the API and through `ppo1 evaluate`, the same seed: the same
    action draws, so the same games, step for step (score and length of every game)."""
    out = tmp_path / "cli.json"
    args = ["evaluate", "--checkpoint_dir", str(tiny), "--model_name", "tiny", "--episodes", "2"]
    r = run_cli([*args, "--seed", "5", "--json", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    cli = json.loads(out.read_text())
    agent = ppo1.load(tiny / "tiny", seed=5)
    api = ppo1.evaluate_policy(agent, episodes=2, seed=5)
    assert (api["scores"], api["lengths"]) == (cli["scores"], cli["lengths"])
    assert api["checkpoint_step"] == cli["checkpoint_step"] == 256
    # A checkpoint file, as --checkpoint FILE takes it: the same agent again.
    file_agent = ppo1.load(tiny / "tiny" / "checkpoint.pt", seed=5)
    assert ppo1.evaluate_policy(file_agent, episodes=2, seed=5)["scores"] == cli["scores"]
    checkpoint_file = str(tiny / "tiny" / "checkpoint.pt")
    r = run_cli(["evaluate", "--checkpoint", checkpoint_file, "--episodes", "2", "--seed", "5"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "scores: " + " ".join(f"{s:g}" for s in cli["scores"]) in r.stdout


def test_act_draws_what_the_evaluation_picker_draws(tiny):
    """act(obs) samples from a generator seeded at load, as the CLI's action picker with that seed;
    deterministic=True is the most likely action; one observation gives one action."""
    env = ppo1.load(tiny / "tiny").make_env()
    frames = []
    obs, _ = env.reset(seed=0)
    for t in range(6):
        frames.append(obs)
        obs, *_ = env.step(t % 6)
    env.close()
    batch = np.stack(frames)
    assert batch.shape == (6, 4, 84, 84) and batch.dtype == np.uint8
    cli_policy = load_agent(checkpoint_dir=str(tiny), model_name="tiny").policy
    picker = ActionPicker(cli_policy, False, 11, "cpu")
    want = [picker(batch) for _ in range(3)]
    agent = ppo1.load(tiny / "tiny", seed=11)
    assert all(np.array_equal(agent.act(batch), w) for w in want)
    logits, _ = cli_policy(torch.from_numpy(batch))
    assert np.array_equal(agent.act(batch, deterministic=True), logits.argmax(-1).numpy())
    assert agent.act(batch[0], deterministic=True) == logits[0].argmax().item()


def test_train_takes_a_config_and_resumes(tmp_path):
    settings = dict(env_name="CartPole-v1", env_steps=1024, checkpoint_dir=str(tmp_path), model_name="cp")
    agent = ppo1.train(**settings)
    assert agent.step == 1024 and agent.cfg.preset == "classic"
    saved = ppo1.Config.from_dict(json.loads((tmp_path / "cp" / "config.json").read_text()))
    agent = ppo1.train(saved, env_steps=2048)  # the same run, extended: a resume
    assert agent.step == 2048
    assert len((tmp_path / "cp" / "progress.csv").read_text().splitlines()) == 1 + 2
    with pytest.raises(ConfigError, match="unknown setting learning_rate"):
        ppo1.train(learning_rate=1e-3)
    # A fresh Config: the fields left at their defaults yield to CartPole's preset, as flags not given.
    fresh = ppo1.Config(env_name="CartPole-v1", env_steps=1024, checkpoint_dir=str(tmp_path), model_name="c2")
    agent = ppo1.train(fresh)
    assert (agent.cfg.preset, agent.cfg.model_type, agent.cfg.optim_stepsize) == ("classic", "mlp", 1e-3)


@pytest.mark.slow
def test_a_saved_agent_holds_weights_and_config_only_and_plays_the_same_games(tiny, tmp_path, cli):
    """Agent.save, to ship an agent: the weights, the config it trained under and its step count,
    nothing of the optimizer; it plays the same games as the run folder's checkpoint, from Python and
    from `ppo1 evaluate --checkpoint`. A --checkpoint FILE that is not there is an error, with
    --allow_random too."""
    full = torch.load(tiny / "tiny" / "checkpoint.pt", weights_only=True)
    # Loaded for another env of the same game, it still records the env it trained on.
    agent = ppo1.load(tiny / "tiny", seed=2)
    agent.cfg.env_name = "ALE/Pong-v5"
    stripped = agent.save(tmp_path / "agent.pt")
    state = torch.load(stripped, weights_only=True)
    assert set(state) == {"format_version", "model", "config", "num_actions", "counters"}
    assert state["config"] == full["config"] and state["counters"] == {"timesteps": 256}
    assert all(torch.equal(state["model"][k], v) for k, v in full["model"].items())
    assert stripped.stat().st_size < (tiny / "tiny" / "checkpoint.pt").stat().st_size / 2
    want = ppo1.evaluate_policy(ppo1.load(tiny / "tiny", seed=2), episodes=1, seed=2)
    got = ppo1.evaluate_policy(ppo1.load(stripped, seed=2), episodes=1, seed=2)
    assert (got["scores"], got["lengths"], got["checkpoint_step"]) == (want["scores"], want["lengths"], 256)
    r = cli.run(["evaluate", "--checkpoint", str(stripped), "--episodes", "1", "--seed", "2"], tmp_path)
    assert r.returncode == 0 and "at step 256" in r.stdout, r.stderr
    r = cli.run(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--allow_random"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().endswith(f"no checkpoint file {tmp_path / 'nope.pt'}")


def test_only_the_api_is_public_and_import_stays_light():
    assert sorted(ppo1.__all__) == sorted(["Agent", "Config", "PRESETS", "evaluate_policy", "load", "train"])
    assert dir(ppo1) == sorted(ppo1.__all__) and not hasattr(ppo1, "os")
    with pytest.raises(AttributeError):
        ppo1.Trainer  # noqa: B018
    code = "import sys, ppo1; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
