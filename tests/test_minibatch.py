"""One minibatch's loss and gradients, held to the values the update computed before it was made
faster (tests/golden/minibatch.json): a speed-up may round differently, never compute otherwise.
Re-record on purpose only: `python tests/test_minibatch.py --record`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from ppo1.config import resolve
from ppo1.learner import ppo_loss
from ppo1.policies import make_policy
from ppo1.rollout import Segment

GOLDEN = Path(__file__).resolve().parent / "golden" / "minibatch.json"


def one_minibatch(**flags) -> dict:
    """The default preset's first minibatch of a fixed segment (8 envs x 16 steps, random frames),
    through the update's own path: Segment.minibatches, policy.dist, ppo_loss; its loss, stats and
    each parameter's gradient (sum and norm)."""
    torch.manual_seed(0)
    cfg = resolve({"timesteps_per_actorbatch": 16, **flags})
    T, N = cfg.timesteps_per_actorbatch, cfg.num_envs
    policy = make_policy(cfg, (4, 84, 84), 6, True)
    g = torch.Generator().manual_seed(1)
    obs = torch.randint(0, 256, (T, N, 4, 84, 84), dtype=torch.uint8, generator=g)
    actions = torch.randint(0, 6, (T, N), generator=g)
    with torch.no_grad():
        pd, values = policy.dist(obs.reshape(T * N, 4, 84, 84))
    log_probs = pd.log_prob(actions.reshape(-1)).reshape(T, N) + 0.2 * torch.randn(T, N, generator=g)
    values = values.reshape(T, N)
    advantages = torch.randn(T, N, generator=g)
    returns = values + torch.randn(T, N, generator=g)
    zeros = torch.zeros(T, N)
    seg = Segment(obs, actions, log_probs, values, zeros, zeros, advantages, returns)
    batch = next(
        seg.minibatches(cfg.minibatch_size, torch.Generator().manual_seed(2), advantages.reshape(-1))
    )
    pd, values = policy.dist(batch.obs)
    loss, stats = ppo_loss(pd, values, batch, cfg.epsilon, cfg)
    loss.backward()
    grads = {n: [float(p.grad.sum()), float(p.grad.norm())] for n, p in policy.named_parameters()}
    return dict(loss=float(loss.detach()), stats={k: float(v) for k, v in stats.items()}, grads=grads)


CASES = {"default": {}, "ppo2-settings": dict(clip_vloss=True, vf_coef=0.25, init="orthogonal")}


@pytest.mark.parametrize("case", list(CASES))
def test_one_minibatch_loss_and_gradients_are_unchanged(case):
    golden = json.loads(GOLDEN.read_text())[case]
    now = one_minibatch(**CASES[case])
    assert now["loss"] == pytest.approx(golden["loss"], rel=1e-5, abs=1e-7)
    for k, v in golden["stats"].items():
        assert now["stats"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert set(now["grads"]) == set(golden["grads"])
    for name, (total, norm) in golden["grads"].items():
        assert now["grads"][name][1] == pytest.approx(norm, rel=1e-4, abs=1e-8), name
        # A sum whose terms cancel (the logits' weights: exactly 0 in exact arithmetic) keeps only
        # rounding, of the order of the norm: another CPU's kernels moved it by up to 7e-6 x norm.
        assert now["grads"][name][0] == pytest.approx(total, rel=1e-3, abs=2e-5 * max(norm, 1e-3)), name


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_minibatch.py --record")
    GOLDEN.write_text(json.dumps({c: one_minibatch(**f) for c, f in CASES.items()}, indent=1) + "\n")
    print(f"recorded {GOLDEN}")
