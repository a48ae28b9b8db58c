"""The PPO update: baselines ppo1 pposgd_simple.learn, top to bottom.

Read beside baselines/ppo1/pposgd_simple.py (commit 8a97e0d) and the PPO paper (Schulman et al.
2017, arXiv:1707.06347): L = -L^CLIP + c1 L^VF - c2 S, with c1 = 1 (plain MSE, no value clipping).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import Distribution

from ppo1.rollout import Segment


def lr_multiplier(timesteps_so_far: int, total_timesteps: int, schedule: str) -> float:
    """pposgd_simple: cur_lrmult = max(1 - t / T, 0) for "linear", 1 for "constant"."""
    if schedule == "constant":
        return 1.0
    return max(1.0 - timesteps_so_far / total_timesteps, 0.0)


def ppo_loss(
    pd: Distribution,
    values: torch.Tensor,
    actions: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    clip: float,
    ent_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate objective with entropy bonus and value loss, for one minibatch, where
    pd is the current policy's action distribution (policy.dist)."""
    log_ratio = pd.log_prob(actions) - old_log_probs
    ratio = torch.exp(log_ratio)  # pnew / pold
    surr1 = ratio * advantages
    surr2 = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    pol_surr = -torch.min(surr1, surr2).mean()  # PPO's pessimistic surrogate (L^CLIP)
    ent = pd.entropy().mean()
    pol_entpen = -ent_coef * ent
    vf_loss = (values - returns).pow(2).mean()
    total = pol_surr + pol_entpen + vf_loss
    with torch.no_grad():
        # baselines logs KL(old || new) from the old network's logits; with one network we use
        # the unbiased estimator E[(r - 1) - log r] (Schulman, "Approximating KL divergence").
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip).float().mean()
    stats = dict(
        pol_surr=pol_surr.detach(),
        pol_entpen=pol_entpen.detach(),
        vf_loss=vf_loss.detach(),
        ent=ent.detach(),
        approx_kl=approx_kl,
        clipfrac=clipfrac,
    )
    return total, stats


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - pred] / Var[target] (baselines common/math_util.py)."""
    var = target.var(unbiased=False)
    return float("nan") if var == 0 else float(1.0 - (target - pred).var(unbiased=False) / var)


def standardize(advantages: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    # baselines: atarg = (atarg - atarg.mean()) / atarg.std() (numpy: population std); the 1e-8
    # guards a constant batch.
    return (advantages - mean) / (std + 1e-8)


def update(
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    seg: Segment,
    *,
    lrmult: float,
    optim_stepsize: float,
    epsilon: float,
    ent_coef: float,
    optim_epochs: int,
    minibatch_size: int,
    generator: torch.Generator,
    norm_adv: bool = True,
    moments: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    reduce_grads: Callable[[], None] | None = None,
) -> dict[str, float]:
    """optim_epochs passes over shuffled minibatches of the segment (advantages and returns
    already computed). Returns the logged stats.

    moments(x) gives the mean and std used to standardize advantages (global under
    torch.distributed); reduce_grads() averages gradients across ranks before each step.
    """
    T, N = seg.rewards.shape
    B = T * N
    obs = seg.obs.reshape(B, *seg.obs.shape[2:])
    actions, old_log_probs = seg.actions.reshape(B, *seg.actions.shape[2:]), seg.log_probs.reshape(B)
    advantages, returns = seg.advantages.reshape(B), seg.returns.reshape(B)
    if norm_adv:
        mean, std = moments(advantages) if moments else (advantages.mean(), advantages.std(correction=0))
        advantages = standardize(advantages, mean, std)

    # The PPO paper's alpha anneals the clip too (Table 5); baselines' ppo1 did so from its first
    # commit (da99706) to c5b1a1b, and dropped it in b875fb7: 8a97e0d's clip is constant.
    clip = epsilon * lrmult
    for group in optimizer.param_groups:
        group["lr"] = optim_stepsize * lrmult
    totals: dict[str, torch.Tensor] = {}
    n = 0
    for epoch in range(optim_epochs):
        perm = torch.randperm(B, generator=generator).to(obs.device)
        # baselines Dataset.iterate_once drops the last partial minibatch; so do we.
        for start in range(0, B - minibatch_size + 1, minibatch_size):
            idx = perm[start : start + minibatch_size]
            pd, values = policy.dist(obs[idx])
            loss, stats = ppo_loss(
                pd,
                values,
                actions[idx],
                old_log_probs[idx],
                advantages[idx],
                returns[idx],
                clip,
                ent_coef,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if reduce_grads is not None:
                reduce_grads()
            optimizer.step()
            if epoch == optim_epochs - 1:  # log the last epoch's minibatch means
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v
                n += 1
    out = {k: float(v) / n for k, v in totals.items()}
    out["ev_tdlam_before"] = explained_variance(seg.values.reshape(B), returns)
    out["lrmult"] = lrmult
    out["clip"] = clip
    return out
