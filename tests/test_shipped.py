"""The trained agents shipped in agents/: plain files (torch.load weights_only) that beat an
untrained network of their own size at their own game, a check that an untrained network fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ppo1
from ppo1.agent import Agent, load_agent

AGENTS = Path(__file__).resolve().parents[1] / "agents"
# Each shipped agent and the points per game by which it must beat an untrained network.
SHIPPED = {
    "PongNoFrameskip-v4-ppo-paper.pt": 10,  # an untrained network loses about 21-0, as random play does
    "PongNoFrameskip-v4-wallclock.pt": 10,
    "BreakoutNoFrameskip-v4-wallclock.pt": 10,  # untrained networks score 2 in this game, the agent 123
    "MsPacmanNoFrameskip-v4-wallclock.pt": 500,  # untrained networks score 270 in this game, the agent 1270
}


def score(agent: Agent, seed: int) -> float:
    """One full game under the paper protocol (up to 30 no-op starts), actions sampled."""
    return ppo1.evaluate_policy(agent, episodes=1, protocol="paper", seed=seed)["mean"]


def beats(agent: Agent, baseline: Agent, margin: float, seed: int = 0) -> bool:
    """`agent` scores at least `margin` points more than `baseline` in the game of this seed."""
    return score(agent, seed) >= score(baseline, seed) + margin


def untrained(agent: Agent, seed: int, tmp_path: Path) -> Agent:
    """A network of the agent's own preset (and so its size), freshly initialized."""
    cfg = agent.cfg
    return load_agent(
        env_name=cfg.env_name, preset=cfg.preset, checkpoint_dir=str(tmp_path), allow_random=True, seed=seed
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_agent_is_plain_data_and_beats_an_untrained_network(name, tmp_path):
    margin = SHIPPED[name]
    path = AGENTS / name
    state = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code can run
    assert "optimizer" not in state and state["counters"]["timesteps"] > 1_000_000
    agent = ppo1.load(path)
    baseline = untrained(agent, 1, tmp_path)
    assert baseline.cfg.model_type == agent.cfg.model_type
    assert beats(agent, baseline, margin)
    # The same check of another untrained network fails: it is not a check that anything passes.
    assert not beats(untrained(agent, 2, tmp_path), baseline, margin)
