"""The PPO update: baselines ppo1 pposgd_simple.learn, top to bottom.

Read beside baselines/ppo1/pposgd_simple.py (commit 8a97e0d) and the PPO paper (Schulman et al.
2017, arXiv:1707.06347): L = -L^CLIP + c1 L^VF - c2 S, with c1 = 1 (plain MSE, no value clipping).
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution

from ppo1.config import Config
from ppo1.distributed import Dist
from ppo1.policies import Policy
from ppo1.rollout import Batch, Segment
from ppo1.timer import Timer


def make_optimizer(params, cfg: Config) -> torch.optim.Adam:
    """Adam, eps 1e-5 as baselines' pposgd_simple passes to MpiAdam. fused: one kernel per step
    instead of one pass per operation and parameter, the same algorithm rounded differently; the
    unfused step was a quarter of the update's time (benchmarks/README.md)."""
    return torch.optim.Adam(params, lr=cfg.optim_stepsize, eps=1e-5, fused=True)


def lr_multiplier(timesteps_so_far: int, total_timesteps: int, schedule: str) -> float:
    """pposgd_simple: cur_lrmult = max(1 - t / T, 0) for "linear", 1 for "constant"."""
    if schedule == "constant":
        return 1.0
    return max(1.0 - timesteps_so_far / total_timesteps, 0.0)


def ppo_loss(
    pd: Distribution, values: torch.Tensor, batch: Batch, clip: float, cfg: Config
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate objective with entropy bonus and value loss, for one minibatch, where pd
    and values are the current policy's at batch.obs (policy.dist). cfg: ent_coef, vf_coef, and
    clip_vloss (clip the value loss as baselines ppo2 does; baselines ppo1 does not)."""
    log_ratio = pd.log_prob(batch.actions) - batch.log_probs
    ratio = torch.exp(log_ratio)  # pnew / pold
    surr1 = ratio * batch.advantages
    surr2 = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * batch.advantages
    pol_surr = -torch.min(surr1, surr2).mean()  # PPO's pessimistic surrogate (L^CLIP)
    ent = pd.entropy().mean()
    pol_entpen = -cfg.ent_coef * ent
    vf_losses = (values - batch.returns).pow(2)
    if cfg.clip_vloss:  # ppo2: the value may move at most `clip` from the collected one
        clipped = batch.values + torch.clamp(values - batch.values, -clip, clip)
        vf_losses = torch.max(vf_losses, (clipped - batch.returns).pow(2))
    vf_loss = vf_losses.mean()
    total = pol_surr + pol_entpen + cfg.vf_coef * vf_loss
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


@torch.no_grad()
def log_probs_now(policy: Policy, seg: Segment) -> torch.Tensor:
    """log pi(a|s) of the segment's actions under the policy as it is now, (T, N). After the
    observation statistics change: baselines' oldpi copies pi with its new statistics
    (assign_old_eq_new), so the ratio starts at 1."""
    flat = seg.flat()
    pd, _ = policy.dist(flat.obs)
    return pd.log_prob(flat.actions).reshape(seg.log_probs.shape)


def update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    seg: Segment,
    cfg: Config,
    timesteps: int,
    generator: torch.Generator,
    dist: Dist | None = None,
    timer: Timer | None = None,
) -> dict[str, float]:
    """cfg.optim_epochs passes over shuffled minibatches of the segment, at the learning rate and clip
    of the schedule after `timesteps` agent steps; returns the logged stats. The generator orders the
    minibatches (the same on every rank); dist standardizes advantages over all ranks' samples and
    averages the gradients before each step (the all-reduce's seconds go to timer)."""
    dist, timer = dist or Dist(), timer or Timer()
    lrmult = lr_multiplier(timesteps, max(cfg.env_steps, cfg.anneal_steps), cfg.schedule)
    # The PPO paper's alpha anneals the clip too (Table 5); baselines' ppo1 did so from its first
    # commit (da99706) to c5b1a1b, and dropped it in b875fb7: 8a97e0d's clip is constant.
    clip = cfg.epsilon * lrmult
    for group in optimizer.param_groups:
        group["lr"] = cfg.optim_stepsize * lrmult
    if policy.update_obs_stats(seg.obs, dist.sum):  # MLP: baselines' ob_rms.update, then oldpi = pi
        seg.log_probs = log_probs_now(policy, seg)
    advantages = seg.advantages.reshape(-1)
    per_minibatch = cfg.norm_adv and cfg.norm_adv_per_minibatch  # ppo2, CleanRL, SB3
    if cfg.norm_adv and not per_minibatch:
        advantages = standardize(advantages, *dist.moments(advantages))

    params = [p for group in optimizer.param_groups for p in group["params"]]
    totals: dict[str, torch.Tensor] = {}
    n = 0
    for epoch in range(cfg.optim_epochs):
        for batch in seg.minibatches(cfg.minibatch_size, generator, advantages):
            pd, values = policy.dist(batch.obs)
            if per_minibatch:  # ppo2: population std, as numpy's
                adv = batch.advantages
                batch = batch._replace(advantages=standardize(adv, adv.mean(), adv.std(unbiased=False)))
            loss, stats = ppo_loss(pd, values, batch, clip, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if dist.active:
                with timer("allreduce"):
                    dist.reduce_grads(params)
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            if epoch == cfg.optim_epochs - 1:  # log the last epoch's minibatch means
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v
                n += 1
    out = {k: float(v) / n for k, v in totals.items()}
    out["ev_tdlam_before"] = explained_variance(seg.values.reshape(-1), seg.returns.reshape(-1))
    out["lrmult"] = lrmult
    out["clip"] = clip
    return out
