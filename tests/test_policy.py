"""CnnPolicy: shapes, baselines initialization, sampling."""

import math

import pytest
import torch
from torch.distributions import Categorical

from ppo1.policies import CnnPolicy, MlpPolicy

# kind -> (conv out channels, hidden units, flattened conv output)
ARCH = {"small": ([16, 32], 256, 32 * 9 * 9), "large": ([32, 64, 64], 512, 64 * 7 * 7)}


def frames(batch, channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, 84, 84), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("kind", ["small", "large"])
@pytest.mark.parametrize("channels", [4, 1])
def test_output_shapes_and_architecture(kind, channels):
    torch.manual_seed(0)
    policy = CnnPolicy(channels, 6, kind)
    logits, values = policy(frames(5, channels))
    assert logits.shape == (5, 6) and values.shape == (5,)
    assert logits.dtype == values.dtype == torch.float32
    convs = [m for m in policy.modules() if isinstance(m, torch.nn.Conv2d)]
    out_channels, hidden, flat = ARCH[kind]
    assert [c.out_channels for c in convs] == out_channels
    assert convs[0].in_channels == channels
    linears = [m for m in policy.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(flat, hidden), (hidden, 6), (hidden, 1)]


@pytest.mark.parametrize("kind", ["small", "large"])
def test_baselines_initialization(kind):
    torch.manual_seed(1)
    policy = CnnPolicy(4, 6, kind)
    # normc: each output unit's incoming weights (a row of PyTorch's (out, in) matrix) has norm gain.
    torch.testing.assert_close(policy.logits.weight.norm(dim=1), torch.full((6,), 0.01))
    torch.testing.assert_close(policy.value.weight.norm(dim=1), torch.ones(1))
    hidden = policy.logits.weight.shape[1]
    # Not the TF axis: the column norms of the logits head are not all 0.01.
    assert not torch.allclose(policy.logits.weight.norm(dim=0), torch.full((hidden,), 0.01))
    dense = [m for m in policy.torso if isinstance(m, torch.nn.Linear)]
    assert len(dense) == 1
    torch.testing.assert_close(dense[0].weight.norm(dim=1), torch.ones(dense[0].out_features))
    for layer in [policy.logits, policy.value, dense[0]]:
        assert torch.count_nonzero(layer.bias) == 0
    for conv in [m for m in policy.modules() if isinstance(m, torch.nn.Conv2d)]:
        k = conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(6.0 / (conv.in_channels * k + conv.out_channels * k))
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() > 0.9 * bound  # uniform over the whole range
        assert torch.count_nonzero(conv.bias) == 0
    # A fresh policy is nearly uniform: tiny logits.
    logits, _ = policy(frames(8, 4))
    assert logits.abs().max() < 0.1


@pytest.mark.parametrize("kind", ["small", "large"])
def test_orthogonal_initialization_is_baselines_ppo2s(kind):
    """--init orthogonal: every layer's weight, flattened to (out, in), has orthogonal rows (or
    columns, where it has more rows) scaled by its gain: sqrt 2 in the torso, pi_gain in the policy
    head, 1 in the value head; zero biases."""
    torch.manual_seed(1)
    policy = CnnPolicy(4, 6, kind, pi_gain=0.01, init="orthogonal")
    layers = [m for m in policy.torso if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    gains = [(m, math.sqrt(2)) for m in layers] + [(policy.logits, 0.01), (policy.value, 1.0)]
    for layer, gain in gains:
        w = layer.weight.reshape(layer.weight.shape[0], -1)
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        torch.testing.assert_close(gram, gain**2 * torch.eye(gram.shape[0]), atol=1e-5, rtol=1e-4)
        assert torch.count_nonzero(layer.bias) == 0
    normc = CnnPolicy(4, 6, kind)
    w = normc.torso[0].weight.reshape(normc.torso[0].weight.shape[0], -1)
    assert not torch.allclose(w @ w.T, 2 * torch.eye(w.shape[0]), atol=1e-2)  # the default is not


def test_uint8_input_is_scaled_to_unit_range():
    torch.manual_seed(2)
    policy = CnnPolicy(4, 6, "small")
    x = frames(3, 4, seed=5)
    logits, values = policy(x)
    # The same frames given as floats in [0, 1] through the layers by hand.
    h = policy.torso(x.float() / 255.0)
    torch.testing.assert_close(logits, policy.logits(h))
    torch.testing.assert_close(values, policy.value(h).squeeze(-1))
    # Pixel values given as floats (0..255) mean the same frames.
    torch.testing.assert_close(policy(x.float())[0], logits)
    # The scaling matters: raw 0..255 pixels through the torso give another hidden state.
    assert not torch.allclose(policy.torso(x.float()), h)


def test_act_samples_valid_actions_with_matching_log_probs():
    torch.manual_seed(3)
    policy = CnnPolicy(4, 6, "small")
    with torch.no_grad():
        policy.logits.weight.mul_(300)  # make the distribution clearly non-uniform
    x = frames(64, 4, seed=6)
    actions, log_probs, values = policy.act(x)
    assert actions.shape == log_probs.shape == values.shape == (64,)
    assert actions.dtype == torch.int64
    assert actions.min() >= 0 and actions.max() < 6
    with torch.no_grad():
        logits, want_values = policy(x)
    torch.testing.assert_close(log_probs, Categorical(logits=logits).log_prob(actions.clone()))
    torch.testing.assert_close(values, want_values)
    assert not log_probs.requires_grad
    assert len(set(actions.tolist())) > 1
    # Same torch seed, same samples.
    torch.manual_seed(9)
    a1 = policy.act(x)[0]
    torch.manual_seed(9)
    assert torch.equal(a1, policy.act(x)[0])


def test_unknown_kind():
    with pytest.raises(ValueError, match="huge"):
        CnnPolicy(4, 6, "huge")


def test_act_draws_exactly_what_categorical_draws():
    """act() skips the distribution object for speed; the draws must not change."""
    from torch.distributions import Categorical

    policy = CnnPolicy(4, 6, "small")
    obs = torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8)
    torch.manual_seed(3)
    actions, log_probs, _ = policy.act(obs)
    torch.manual_seed(3)
    with torch.no_grad():
        dist = Categorical(logits=policy(obs)[0])
        expected = dist.sample()
    assert torch.equal(actions, expected)
    torch.testing.assert_close(log_probs, dist.log_prob(expected))


def test_pi_gain_scales_only_the_policy_head():
    torch.manual_seed(1)
    default = CnnPolicy(4, 6, "small")
    torch.manual_seed(1)
    wide = CnnPolicy(4, 6, "small", pi_gain=1.0)
    torch.testing.assert_close(wide.logits.weight.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(wide.logits.weight, 100.0 * default.logits.weight)  # same draw, rescaled
    for (name, a), b in zip(default.named_parameters(), wide.parameters()):
        if not name.startswith("logits"):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("make", [lambda: CnnPolicy(4, 6, "large"), lambda: MlpPolicy(5, 3, continuous=True)])
def test_get_value_is_the_value_head_and_draws_no_random_numbers(make):
    """The bootstrap value: V(obs) as forward() gives it, without sampling actions (the global RNG
    is where it was, so the next action draws are unchanged)."""
    torch.manual_seed(0)
    policy = make()
    obs = (
        torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
        if isinstance(policy, CnnPolicy)
        else torch.randn(3, 5)
    )
    state = torch.get_rng_state()
    values = policy.get_value(obs)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        torch.testing.assert_close(values, policy(obs)[1])


def test_new_observation_statistics_make_the_stored_log_probs_stale():
    """MlpPolicy: update_obs_stats changes the network's input, so log_probs_now differs from the
    log-probs stored at collection time and equals the policy's own with the new statistics; frames
    (CnnPolicy) have no statistics and nothing changes."""
    from ppo1.learner import log_probs_now
    from ppo1.rollout import Segment

    torch.manual_seed(0)
    T, N = 4, 2
    policy = MlpPolicy(5, 3, continuous=False)
    obs = 3.0 + 2.0 * torch.randn(T, N, 5)
    actions, log_probs, values = policy.act(obs.reshape(T * N, 5))
    zeros = torch.zeros(T, N)
    seg = Segment(
        obs, actions.reshape(T, N), log_probs.reshape(T, N), values.reshape(T, N), zeros, zeros, zeros, zeros
    )
    assert policy.update_obs_stats(seg.obs) is True
    now = log_probs_now(policy, seg)
    assert not torch.allclose(now, seg.log_probs)
    with torch.no_grad():
        pd, _ = policy.dist(obs.reshape(T * N, 5))
        torch.testing.assert_close(now, pd.log_prob(seg.actions.reshape(-1)).reshape(T, N))
    assert CnnPolicy(4, 6).update_obs_stats(torch.zeros(T, N, 4, 84, 84, dtype=torch.uint8)) is False
