"""compute_gae against advantages worked out by hand (not by re-running the same recursion).

Notation: delta_t = r_t + gamma V_{t+1} (1 - d_t) - V_t,  A_t = delta_t + gamma lam (1 - d_t) A_{t+1},
with V_T = last_values. Tensors are (T, N): column n is env n.
"""

import pytest
import torch

from ppo1.rollout import compute_gae


def cols(*columns):
    """Build a (T, N) tensor from N per-env columns (easier to read than rows)."""
    return torch.tensor(list(zip(*columns)), dtype=torch.float64)


def check(adv, ret, values, want_adv):
    want = cols(*want_adv)
    assert adv.shape == want.shape
    torch.testing.assert_close(adv, want, rtol=0, atol=1e-9)
    # TD(lambda) returns are the value targets: advantages + values.
    torch.testing.assert_close(ret, want + values, rtol=0, atol=1e-9)


def test_episode_ending_mid_segment_cuts_bootstrap():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    # env 0: no episode end; env 1: the episode ends after step 1 (d_1 = 1).
    rewards = cols([1, 0, 0, 1], [0, 1, 0, 0])
    values = cols([0.5, 0.5, 0.5, 0.5], [1, 2, 0.5, 1])
    dones = cols([0, 0, 0, 0], [0, 1, 0, 0])
    last_values = torch.tensor([1.0, 2.0], dtype=torch.float64)
    # env 0:
    #   delta_3 = 1 + 0.9*1.0 - 0.5 = 1.4          A_3 = 1.4
    #   delta_2 = 0 + 0.9*0.5 - 0.5 = -0.05        A_2 = -0.05 + 0.72*1.4     = 0.958
    #   delta_1 = -0.05                            A_1 = -0.05 + 0.72*0.958   = 0.63976
    #   delta_0 = 1 + 0.45 - 0.5 = 0.95            A_0 = 0.95 + 0.72*0.63976  = 1.4106272
    # env 1:
    #   delta_3 = 0 + 0.9*2 - 1 = 0.8              A_3 = 0.8
    #   delta_2 = 0 + 0.9*1 - 0.5 = 0.4            A_2 = 0.4 + 0.72*0.8 = 0.976
    #   delta_1 = 1 + 0 (done) - 2 = -1            A_1 = -1   (nothing flows back across the end)
    #   delta_0 = 0 + 0.9*2 - 1 = 0.8              A_0 = 0.8 + 0.72*(-1) = 0.08
    adv, ret = compute_gae(rewards, values, dones, last_values, gamma, lam)
    check(adv, ret, values, [[1.4106272, 0.63976, 0.958, 1.4], [0.08, -1.0, 0.976, 0.8]])
    torch.testing.assert_close(ret[:, 1], torch.tensor([1.08, 1.0, 1.476, 1.8], dtype=torch.float64))


def test_truncated_episode_uses_the_bootstrapped_reward():
    gamma, lam = 0.99, 0.95  # gamma * lam = 0.9405
    # env 0: the time limit cut the episode after step 1. The collector already added
    # gamma * V(final_obs) to that step's reward: 1 + 0.99 * 10 = 10.9, and set done = 1.
    # env 1: the episode ends at the last step, so last_values (100) must be ignored.
    rewards = cols([0, 1 + 0.99 * 10, 0], [1, 1, 1])
    values = cols([3, 4, 5], [0, 0, 0])
    dones = cols([0, 1, 0], [0, 0, 1])
    last_values = torch.tensor([6.0, 100.0], dtype=torch.float64)
    # env 0:
    #   A_2 = 0 + 0.99*6 - 5 = 0.94
    #   A_1 = 10.9 - 4 = 6.9                       (reward with bootstrap - V(s_1))
    #   A_0 = (0 + 0.99*4 - 3) + 0.9405*6.9 = 0.96 + 6.48945 = 7.44945
    # env 1:
    #   A_2 = 1 (no bootstrap from 100)
    #   A_1 = 1 + 0.9405*1 = 1.9405
    #   A_0 = 1 + 0.9405*1.9405 = 2.82504025
    adv, ret = compute_gae(rewards, values, dones, last_values, gamma, lam)
    check(adv, ret, values, [[7.44945, 6.9, 0.94], [2.82504025, 1.9405, 1.0]])
    assert adv[1, 0].item() == pytest.approx(10.9 - 4.0, abs=1e-12)


def test_lambda_one_gamma_one_is_monte_carlo_return_minus_value():
    # env 0: no end, bootstrap V_T = 4. Returns: G_2 = 3 + 4 = 7, G_1 = 2 + 7 = 9, G_0 = 1 + 9 = 10.
    # env 1: ends after step 0: G_0 = 1; then G_2 = 3 + 4 = 7, G_1 = 2 + 7 = 9.
    rewards = cols([1, 2, 3], [1, 2, 3])
    values = cols([0.5, 1, 1.5], [0, 0, 0])
    dones = cols([0, 0, 0], [1, 0, 0])
    last_values = torch.tensor([4.0, 4.0], dtype=torch.float64)
    adv, ret = compute_gae(rewards, values, dones, last_values, 1.0, 1.0)
    check(adv, ret, values, [[10 - 0.5, 9 - 1, 7 - 1.5], [1, 9, 7]])
    torch.testing.assert_close(ret, cols([10, 9, 7], [1, 9, 7]))


def test_lambda_zero_is_one_step_td_error():
    gamma = 0.5
    rewards = cols([1, 2, 3], [1, 2, 3])
    values = cols([0.5, 1, 1.5], [2, 2, 2])
    dones = cols([0, 0, 0], [1, 0, 0])
    last_values = torch.tensor([4.0, 4.0], dtype=torch.float64)
    # env 0: 1 + 0.5*1 - 0.5 = 1;  2 + 0.5*1.5 - 1 = 1.75;  3 + 0.5*4 - 1.5 = 3.5
    # env 1: 1 - 2 = -1 (done);   2 + 0.5*2 - 2 = 1;       3 + 0.5*4 - 2 = 3
    adv, ret = compute_gae(rewards, values, dones, last_values, gamma, 0.0)
    check(adv, ret, values, [[1, 1.75, 3.5], [-1, 1, 3]])


def test_float32_inputs_keep_dtype_and_do_not_modify_inputs():
    rewards = cols([1, 0, 0, 1], [0, 1, 0, 0]).float()
    values = cols([0.5, 0.5, 0.5, 0.5], [1, 2, 0.5, 1]).float()
    dones = cols([0, 0, 0, 0], [0, 1, 0, 0]).float()
    last_values = torch.tensor([1.0, 2.0])
    before = [t.clone() for t in (rewards, values, dones, last_values)]
    adv, ret = compute_gae(rewards, values, dones, last_values, 0.9, 0.8)
    assert adv.dtype == ret.dtype == torch.float32
    torch.testing.assert_close(adv[:, 0], torch.tensor([1.4106272, 0.63976, 0.958, 1.4]))
    for a, b in zip(before, (rewards, values, dones, last_values)):
        assert torch.equal(a, b)
