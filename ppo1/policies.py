"""The policies of baselines ppo1, in PyTorch: CnnPolicy (baselines/ppo1/cnn_policy.py) for Atari
frames and MlpPolicy (baselines/ppo1/mlp_policy.py) with observation normalization for flat
observations. What they share is written once, in Policy: `dist(obs)` (the action distribution and
the values), `act(obs)` (sampled actions, their log-probs and the values), `get_value(obs)`, and the
running observation statistics (MlpPolicy's; frames need none)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from ppo1.config import Config


def normc_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """baselines tf_util.normc_initializer: each unit's incoming weights have norm `gain`.

    TF stores dense weights as (in, out) and normalizes axis 0; PyTorch stores (out, in), so
    we normalize dim 1 (lucaslingle/ppo1's documented transposition).
    """
    with torch.no_grad():
        weight.normal_()
        weight.mul_(gain / weight.norm(dim=1, keepdim=True))
    return weight


def glorot_conv_(conv: nn.Conv2d) -> None:
    """baselines tf_util.conv2d: uniform(+-sqrt(6 / (fan_in + fan_out))), zero bias."""
    k = conv.kernel_size[0] * conv.kernel_size[1]
    bound = math.sqrt(6.0 / (conv.in_channels * k + conv.out_channels * k))
    with torch.no_grad():
        conv.weight.uniform_(-bound, bound)
        conv.bias.zero_()


def _dense(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    normc_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def orthogonal_(layer: nn.Linear | nn.Conv2d, gain: float) -> None:
    """baselines ppo2 / CleanRL layer_init: orthogonal weights of this gain, zero bias."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)


class Policy(nn.Module):
    """What both networks share. A subclass sets num_actions, continuous and ob_rms (None: no
    observation statistics) and defines forward(obs) -> (logits or action means (B, A), values (B,))."""

    num_actions: int
    continuous: bool
    ob_rms: RunningMeanStd | None
    logstd: nn.Parameter | None  # continuous actions: the state-independent log-std

    def dist(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """The action distribution at obs, and the values (B,)."""
        out, values = self(obs)
        # No argument validation: a NaN must reach the loss, where the training loop reports it.
        if self.continuous:
            std = self.logstd.exp().expand_as(out)
            return Independent(Normal(out, std, validate_args=False), 1, validate_args=False), values
        return Categorical(logits=out, validate_args=False), values

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions; return actions, their log-probabilities and the values, each (B,).

        The same draws as dist(obs)'s sample() / log_prob() (a multinomial over the softmax; the
        mean plus std times a normal draw), written out: the distribution objects cost more than a
        small network on this per-step path.
        """
        with torch.inference_mode():
            out, values = self(obs)
            if self.continuous:
                noise = torch.randn_like(out)
                actions = out + self.logstd.exp() * noise
                log_p = -0.5 * noise.square() - self.logstd - 0.5 * math.log(2 * math.pi)
                return actions, log_p.sum(-1), values
            log_p = torch.log_softmax(out, dim=-1)
            actions = torch.multinomial(log_p.exp(), 1).squeeze(1)
            return actions, log_p.gather(1, actions.unsqueeze(1)).squeeze(1), values

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs), (B,), drawing no action (CleanRL's agent.get_value)."""
        with torch.inference_mode():
            return self(obs)[1]

    def update_obs_stats(self, obs: torch.Tensor, all_sum: Callable | None = None) -> bool:
        """baselines: pi.ob_rms.update(ob) with each iteration's batch before the epochs (all_sum pools
        it over ranks). Returns whether the statistics changed: then the log-probs stored at
        collection time are stale (see log_probs_now). Frames have none (they are divided by 255)."""
        if self.ob_rms is None:
            return False
        self.ob_rms.update(obs, all_sum)
        return True


class CnnPolicy(Policy):
    """Shared conv torso, categorical policy head (normc pi_gain, baselines 0.01) and value head
    (normc 1.0); init "orthogonal": baselines ppo2's instead.

    small: the A3C network (Mnih et al. 2016) that the PPO paper uses for Atari;
    large: the Nature DQN network (Mnih et al. 2015). Input: uint8 frames (B, stack, 84, 84).
    """

    def __init__(
        self,
        in_channels: int,
        num_actions: int,
        kind: str = "small",
        pi_gain: float = 0.01,
        init: str = "normc",
    ):
        super().__init__()
        if kind == "small":
            convs = [nn.Conv2d(in_channels, 16, 8, 4), nn.Conv2d(16, 32, 4, 2)]
            flat, hidden = 32 * 9 * 9, 256
        elif kind == "large":
            convs = [nn.Conv2d(in_channels, 32, 8, 4), nn.Conv2d(32, 64, 4, 2)]
            convs.append(nn.Conv2d(64, 64, 3, 1))
            flat, hidden = 64 * 7 * 7, 512
        else:
            raise ValueError(f"unknown model type {kind!r}")
        layers: list[nn.Module] = []
        for conv in convs:
            glorot_conv_(conv)
            layers += [conv, nn.ReLU()]
        self.torso = nn.Sequential(*layers, nn.Flatten(), _dense(flat, hidden, 1.0), nn.ReLU())
        self.logits = _dense(hidden, num_actions, pi_gain)
        self.value = _dense(hidden, 1, 1.0)
        if init == "orthogonal":
            for layer in [*convs, self.torso[-2]]:
                orthogonal_(layer, math.sqrt(2))
            orthogonal_(self.logits, pi_gain)
            orthogonal_(self.value, 1.0)
        self.num_actions, self.in_channels = num_actions, in_channels
        self.continuous, self.ob_rms, self.logstd = False, None, None
        # NHWC convolutions run faster on CPU (measured in benchmarks/throughput.py); same math.
        self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, C, 84, 84) uint8 -> logits (B, A), values (B,)."""
        x = obs.float().div_(255.0)  # frames stay uint8 until here (baselines: ob / 255.0)
        x = self.torso(x.contiguous(memory_format=torch.channels_last))
        return self.logits(x), self.value(x).squeeze(-1)


class RunningMeanStd(nn.Module):
    """baselines common/mpi_running_mean_std.py: float64 running sums of x and x^2 and a count,
    starting from a pseudo-count of 1e-2 (sum 0, sum of squares 1e-2); std is floored at 0.1.
    update() adds a batch; all_sum (distributed runs) sums the batch's statistics over ranks
    first, so every rank holds the statistics of the pooled stream."""

    def __init__(self, shape: tuple[int, ...], epsilon: float = 1e-2):
        super().__init__()
        self.register_buffer("sum", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("sumsq", torch.full(shape, epsilon, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    @property
    def std(self) -> torch.Tensor:
        return (self.sumsq / self.count - self.mean.square()).clamp_min(1e-2).sqrt()

    @torch.no_grad()
    def update(self, x: torch.Tensor, all_sum=None) -> None:
        x = x.reshape(-1, *self.sum.shape).double()
        n = self.sum.numel()
        stats = torch.cat([x.sum(0).reshape(-1), x.square().sum(0).reshape(-1), x.new_tensor([len(x)])])
        if all_sum is not None:
            stats = all_sum(stats)
        self.sum += stats[:n].view_as(self.sum)
        self.sumsq += stats[n : 2 * n].view_as(self.sumsq)
        self.count += stats[-1]


class MlpPolicy(Policy):
    """baselines mlp_policy: observations normalized by running statistics and clipped to +-5,
    separate policy and value MLPs (tanh, normc 1.0; policy output normc 0.01, value output 1.0);
    Box actions: a diagonal Gaussian with a learned state-independent log-std starting at 0
    (gaussian_fixed_var); Discrete actions: categorical."""

    def __init__(
        self, obs_dim: int, num_actions: int, continuous: bool, hid_size: int = 64, num_hid_layers: int = 2
    ):
        super().__init__()
        self.ob_rms = RunningMeanStd((obs_dim,))

        def mlp(out: int, gain: float) -> nn.Sequential:
            layers: list[nn.Module] = []
            n_in = obs_dim
            for _ in range(num_hid_layers):
                layers += [_dense(n_in, hid_size, 1.0), nn.Tanh()]
                n_in = hid_size
            return nn.Sequential(*layers, _dense(n_in, out, gain))

        self.pi = mlp(num_actions, 0.01)
        self.vf = mlp(1, 1.0)
        self.logstd = nn.Parameter(torch.zeros(num_actions)) if continuous else None
        self.num_actions, self.continuous = num_actions, continuous

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, D) -> action mean or logits (B, A), values (B,)."""
        x = ((obs.double() - self.ob_rms.mean) / self.ob_rms.std).clamp(-5.0, 5.0).float()
        return self.pi(x), self.vf(x).squeeze(-1)


def make_policy(cfg: Config, observation_shape: tuple[int, ...], num_actions: int, discrete: bool) -> Policy:
    """The network of cfg.model_type for these observations and actions: CnnPolicy (small, large) for
    Atari frames, MlpPolicy (mlp) for flat observations."""
    if cfg.model_type == "mlp":
        return MlpPolicy(observation_shape[0], num_actions, not discrete, cfg.hid_size, cfg.num_hid_layers)
    return CnnPolicy(observation_shape[0], num_actions, cfg.model_type, cfg.pi_gain, cfg.init)


def sample(pd: Distribution, generator: torch.Generator) -> torch.Tensor:
    """A draw from pd on the CPU using `generator` (the global torch RNG is left alone)."""
    if isinstance(pd, Categorical):
        return torch.multinomial(pd.probs.float().cpu(), 1, generator=generator).squeeze(-1)
    loc, scale = pd.base_dist.loc.float().cpu(), pd.base_dist.scale.float().cpu()
    return loc + scale * torch.randn(loc.shape, generator=generator)
