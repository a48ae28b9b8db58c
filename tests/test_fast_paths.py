"""The speed-ups change nothing beyond float rounding: overlapped env groups vs the serial loop;
and ppo1 leaves the OpenMP wait policy to OpenMP or the user."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_CONFIG

from ppo1.launch import start

# conftest's tiny config with 4 envs, so that 2 groups of 2 can step in turn.
TINY = dict(TINY_CONFIG, preset="ppo-paper", env_steps=512, num_envs=4, timesteps_per_actorbatch=64)


def final_params(tmp_path, **kw) -> dict[str, torch.Tensor]:
    start({**TINY, "checkpoint_dir": str(tmp_path), "model_name": "m", **kw})
    return torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_overlapped_env_groups_train_like_the_serial_loop(tmp_path):
    serial = final_params(tmp_path / "serial", env_groups=1)
    overlapped = final_params(tmp_path / "overlapped", env_groups=2)
    other_seed = final_params(tmp_path / "other", env_groups=1, seed=1)
    for k in serial:
        # Same games, same action draws in the same order: equal up to float rounding
        # (the network runs at batch 2 instead of 4, which rounds differently).
        torch.testing.assert_close(overlapped[k], serial[k], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(other_seed[k], serial[k], rtol=1e-4, atol=1e-6) for k in serial)


def test_channels_last_network_computes_the_plain_losses():
    """The network always runs channels_last (faster on CPU); NCHW gives the same losses and grads."""
    from torch.distributions import Categorical

    from ppo1.config import Config
    from ppo1.learner import ppo_loss
    from ppo1.policies import CnnPolicy
    from ppo1.rollout import Batch

    torch.manual_seed(0)
    fast = CnnPolicy(4, 6, "large")
    plain = CnnPolicy(4, 6, "large").to(memory_format=torch.contiguous_format)
    plain.load_state_dict(fast.state_dict())
    assert fast.torso[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.torso[0].weight.is_contiguous()
    g = torch.Generator().manual_seed(1)
    obs = torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8, generator=g)
    actions = torch.randint(0, 6, (64,), generator=g)
    old, adv, ret = (
        torch.randn(64, generator=g) - 1.8,
        torch.randn(64, generator=g),
        torch.randn(64, generator=g),
    )

    def loss_and_grads(policy, channels_last):
        x = obs.float() / 255.0
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        h = policy.torso(x)
        pd = Categorical(logits=policy.logits(h))
        batch = Batch(obs, actions, old, old, adv, ret)
        loss, _ = ppo_loss(pd, policy.value(h).squeeze(-1), batch, 0.1, Config())
        grads = torch.autograd.grad(loss, list(policy.parameters()))
        return loss, grads

    loss_fast, grads_fast = loss_and_grads(fast, True)
    loss_plain, grads_plain = loss_and_grads(plain, False)
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_fast, grads_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("user_value", [None, "PASSIVE"])
def test_openmp_wait_policy_is_left_to_openmp_or_the_user(user_value):
    """Importing ppo1 (the command or the API) leaves OMP_WAIT_POLICY as it found it: unset, OpenMP's
    spin-then-sleep default runs the loop fastest (benchmarks/README.md); a value the user set stays."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_value:
        env["OMP_WAIT_POLICY"] = user_value
    for module in ("ppo1.cli", "ppo1", "ppo1.trainer"):
        code = f"import os, {module}; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.split() == [user_value or "unset"], (module, out.stderr)
