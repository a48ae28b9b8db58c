"""ppo_loss against an independent numpy computation; lr_multiplier; explained_variance."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical

from ppo1.config import Config
from ppo1.learner import explained_variance, lr_multiplier
from ppo1.learner import ppo_loss as ppo_loss_of_batch
from ppo1.rollout import Batch


def ppo_loss(
    logits, values, actions, old_log_probs, adv, returns, clip, ent_coef, vf_coef=1.0, old_values=None
):  # noqa: E501
    """The loss of a categorical policy with these logits and values on this batch; old_values: with
    ppo2's value clipping."""
    cfg = Config(ent_coef=ent_coef, vf_coef=vf_coef, clip_vloss=old_values is not None)
    batch = Batch(torch.empty(0), actions, old_log_probs, old_values, adv, returns)
    return ppo_loss_of_batch(Categorical(logits=logits), values, batch, clip, cfg)


CLIP = 0.2
ENT_COEF = 0.01


def numpy_reference(logits, values, actions, old_log_probs, adv, returns, clip, ent_coef):
    """The PPO loss written out in numpy, from the paper's formulas."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # softmax by hand
    logp_all = np.log(p)
    logp = logp_all[np.arange(len(actions)), actions]
    r = np.exp(logp - old_log_probs)
    surr = np.minimum(r * adv, np.clip(r, 1 - clip, 1 + clip) * adv)
    pol_surr = -surr.mean()
    ent = -(p * logp_all).sum(axis=1).mean()
    pol_entpen = -ent_coef * ent
    vf_loss = ((values - returns) ** 2).mean()
    return dict(
        total=pol_surr + pol_entpen + vf_loss,
        pol_surr=pol_surr,
        pol_entpen=pol_entpen,
        vf_loss=vf_loss,
        ent=ent,
        approx_kl=((r - 1) - np.log(r)).mean(),
        clipfrac=(np.abs(r - 1) > clip).mean(),
        ratio=r,
    )


def random_batch(seed, B=256, A=6):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, A))
    actions = rng.integers(0, A, size=B)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = (z - np.log(np.exp(z).sum(axis=1, keepdims=True)))[np.arange(B), actions]
    # The old policy differs by up to exp(+-0.6) in ratio: many samples fall outside 1 +- 0.2.
    old_log_probs = logp + rng.uniform(-0.6, 0.6, size=B)
    adv = rng.normal(size=B)
    values = rng.normal(size=B)
    returns = rng.normal(size=B)
    return logits, values, actions, old_log_probs, adv, returns


def as_torch(logits, values, actions, old_log_probs, adv, returns):
    return (
        torch.tensor(logits, requires_grad=True),
        torch.tensor(values, requires_grad=True),
        torch.tensor(actions),
        torch.tensor(old_log_probs),
        torch.tensor(adv),
        torch.tensor(returns),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_and_stats_match_numpy(seed):
    batch = random_batch(seed)
    ref = numpy_reference(*batch, CLIP, ENT_COEF)
    # The case must really exercise clipping on both sides.
    assert (ref["ratio"] > 1 + CLIP).sum() > 20 and (ref["ratio"] < 1 - CLIP).sum() > 20
    total, stats = ppo_loss(*as_torch(*batch), CLIP, ENT_COEF)
    assert total.item() == pytest.approx(ref["total"], rel=1e-10, abs=1e-12)
    assert set(stats) >= {"pol_surr", "pol_entpen", "vf_loss", "ent", "approx_kl", "clipfrac"}
    for k in ["pol_surr", "pol_entpen", "vf_loss", "ent", "approx_kl", "clipfrac"]:
        assert float(stats[k]) == pytest.approx(ref[k], rel=1e-10, abs=1e-12), k
        assert not stats[k].requires_grad, k
    assert 0.2 < float(stats["clipfrac"]) < 0.9
    assert float(stats["approx_kl"]) > 0


def test_float32_matches_too():
    batch = random_batch(7)
    ref = numpy_reference(*batch, CLIP, ENT_COEF)
    t = [x.float() if x.is_floating_point() else x for x in as_torch(*batch)]
    total, stats = ppo_loss(*t, CLIP, ENT_COEF)
    assert total.item() == pytest.approx(ref["total"], rel=1e-5, abs=1e-6)
    assert float(stats["clipfrac"]) == pytest.approx(ref["clipfrac"])


def test_no_policy_gradient_where_the_ratio_is_clipped_pessimistically():
    batch = random_batch(3)
    logits, values, actions, old, adv, returns = as_torch(*batch)
    ref = numpy_reference(*batch, CLIP, 0.0)
    r, a = ref["ratio"], batch[4]
    clipped = ((a > 0) & (r > 1 + CLIP)) | ((a < 0) & (r < 1 - CLIP))
    assert clipped.sum() > 10 and (~clipped).sum() > 10
    total, _ = ppo_loss(logits, values, actions, old, adv, returns, CLIP, 0.0)  # no entropy term
    total.backward()
    g = logits.grad.abs().sum(dim=1).numpy()
    assert np.all(g[clipped] == 0.0)
    assert np.all(g[~clipped] > 0.0)
    # The value head gets the MSE gradient 2 (v - R) / B for every sample.
    torch.testing.assert_close(values.grad, torch.tensor(2 * (batch[1] - batch[5]) / len(batch[1])))


def test_identical_policies_have_ratio_one():
    batch = list(random_batch(4))
    z = batch[0] - batch[0].max(axis=1, keepdims=True)
    batch[3] = (z - np.log(np.exp(z).sum(axis=1, keepdims=True)))[np.arange(len(batch[2])), batch[2]]
    total, stats = ppo_loss(*as_torch(*batch), CLIP, ENT_COEF)
    assert float(stats["approx_kl"]) == pytest.approx(0.0, abs=1e-12)
    assert float(stats["clipfrac"]) == 0.0
    # With ratio 1 the surrogate is just -mean(advantage).
    assert float(stats["pol_surr"]) == pytest.approx(-batch[4].mean(), abs=1e-12)


def test_lr_multiplier():
    assert lr_multiplier(0, 100, "linear") == 1.0
    assert lr_multiplier(25, 100, "linear") == pytest.approx(0.75)
    assert lr_multiplier(99, 100, "linear") == pytest.approx(0.01)
    assert lr_multiplier(100, 100, "linear") == 0.0
    assert lr_multiplier(150, 100, "linear") == 0.0  # floored at 0, never negative
    for t in (0, 50, 100, 150):
        assert lr_multiplier(t, 100, "constant") == 1.0


def test_explained_variance():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(target.clone(), target) == pytest.approx(1.0)
    # Predicting the mean explains nothing.
    assert explained_variance(torch.full((4,), 2.5), target) == pytest.approx(0.0, abs=1e-7)
    # Residual [0, 0, 0, -1]: population variance 0.1875; Var[target] = 1.25 -> 1 - 0.15 = 0.85.
    assert explained_variance(torch.tensor([1.0, 2.0, 3.0, 5.0]), target) == pytest.approx(0.85)
    # Worse than the mean: negative. Residual 2 * target: variance 4 * 1.25 = 5 -> 1 - 5 / 1.25 = -3.
    assert explained_variance(-target, target) == pytest.approx(-3.0)
    assert math.isnan(explained_variance(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 3.0])))


def one_update(**settings) -> tuple[dict, dict[str, torch.Tensor], list[float]]:
    """update() on a batch of 4 steps x 2 envs collected by the policy itself (ratio 1), advantages of
    mean exactly 5: the logged stats, the weights after, and the gradient norm at each Adam step."""
    from ppo1.learner import update
    from ppo1.policies import CnnPolicy
    from ppo1.rollout import Segment

    torch.manual_seed(0)
    T, N = 4, 2
    policy = CnnPolicy(4, 6, "small")
    obs = torch.randint(0, 256, (T, N, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, 6, (T, N))
    with torch.no_grad():
        pd, values = policy.dist(obs.reshape(T * N, 4, 84, 84))
        log_probs = pd.log_prob(actions.reshape(-1)).reshape(T, N)
    advantages = 5.0 + 3.0 * torch.randn(T, N)
    advantages -= advantages.mean() - 5.0  # mean exactly 5
    zeros = torch.zeros(T, N)
    values = values.reshape(T, N)
    seg = Segment(obs, actions, log_probs, values, zeros, zeros, advantages, advantages + values)
    base = dict(optim_stepsize=1e-4, epsilon=0.1, ent_coef=0.0, optim_epochs=1, num_envs=N, optim_batchsize=T)
    cfg = Config(**(base | settings))
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.optim_stepsize)
    norms: list[float] = []
    grads = lambda: torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])  # noqa: E731
    optimizer.register_step_pre_hook(lambda *_: norms.append(float(grads().norm())))
    stats = update(policy, optimizer, seg, cfg, 0, torch.Generator().manual_seed(0))
    return stats, {k: v.clone() for k, v in policy.state_dict().items()}, norms


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("norm_adv", [True, False])
def test_norm_adv_off_keeps_the_raw_advantages(norm_adv):
    """One epoch, one minibatch of the whole batch, a policy equal to the one that collected it
    (ratio 1): the logged surrogate is -mean(A) of the advantages the update used, ~0 standardized,
    -5 raw."""
    stats, _, _ = one_update(norm_adv=norm_adv)
    assert stats["pol_surr"] == pytest.approx(0.0 if norm_adv else -5.0, abs=1e-5)


def test_advantages_standardized_per_minibatch_as_ppo2():
    """With one minibatch of the whole batch, per minibatch is per iteration: the same weights; with
    minibatches of half of it, other weights."""
    for batchsize, alike in ((4, True), (2, False)):
        _, iteration, _ = one_update(optim_batchsize=batchsize)
        _, minibatch, _ = one_update(optim_batchsize=batchsize, norm_adv_per_minibatch=True)
        assert same(iteration, minibatch) == alike


def test_max_grad_norm_caps_the_gradient_of_every_step():
    _, _, free = one_update(optim_batchsize=1, optim_epochs=2)
    _, _, capped = one_update(optim_batchsize=1, optim_epochs=2, max_grad_norm=0.01)
    assert len(free) == len(capped) == 8 and min(free) > 0.02  # the cap has something to cut
    assert max(capped) == pytest.approx(0.01, rel=1e-4)


def test_clip_vloss_holds_the_value_near_the_collected_one():
    """Returns 5 above the values and a large step: the value head moves past the clip (0.1) after
    the first step, so the clipped loss of the second epoch (larger) and the weights differ; the
    first step is the same (new values = old values)."""
    run = dict(optim_stepsize=1e-3, optim_epochs=2)
    plain, w_plain, n_plain = one_update(**run)
    clipped, w_clipped, n_clipped = one_update(**run, clip_vloss=True)
    assert n_plain[0] == pytest.approx(n_clipped[0], rel=1e-6)
    assert clipped["vf_loss"] > plain["vf_loss"] and not same(w_plain, w_clipped)


def test_vf_coef_and_ppo2_value_clipping_match_numpy():
    """vf_coef scales the plain MSE; with old values the loss is baselines ppo2's clipped one:
    mean(max((v - R)^2, (v_old + clip(v - v_old, -c, c) - R)^2))."""
    logits, values, actions, old, adv, returns = random_batch(5)
    old_values = values + np.random.default_rng(6).uniform(-0.5, 0.5, size=len(values))
    base = numpy_reference(logits, values, actions, old, adv, returns, CLIP, ENT_COEF)
    clipped = old_values + np.clip(values - old_values, -CLIP, CLIP)
    vf = np.maximum((values - returns) ** 2, (clipped - returns) ** 2).mean()
    assert vf > base["vf_loss"] + 0.01  # the clipped term wins often enough to matter
    t = as_torch(logits, values, actions, old, adv, returns)
    total, stats = ppo_loss(*t, CLIP, ENT_COEF, 0.25)
    assert total.item() == pytest.approx(
        base["pol_surr"] + base["pol_entpen"] + 0.25 * base["vf_loss"], rel=1e-10
    )
    total, stats = ppo_loss(*t, CLIP, ENT_COEF, 0.25, torch.tensor(old_values))
    assert float(stats["vf_loss"]) == pytest.approx(vf, rel=1e-10)
    assert total.item() == pytest.approx(base["pol_surr"] + base["pol_entpen"] + 0.25 * vf, rel=1e-10)
