"""CnnPolicy of baselines ppo1 (baselines/ppo1/cnn_policy.py), in PyTorch."""

from __future__ import annotations

import math

import torch
from torch import nn

from ppo1.errors import ConfigError


def pick_device(name: str | torch.device) -> torch.device:
    """--device: auto (CUDA where available), cpu or cuda."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be one of auto, cpu, cuda, got {name!r}")
    return torch.device(name)


def normc_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """baselines tf_util.normc_initializer: each unit's incoming weights have norm `gain`.

    TF stores dense weights as (in, out) and normalizes axis 0; PyTorch stores (out, in), so
    we normalize dim 1 (the seed's documented transposition).
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


class CnnPolicy(nn.Module):
    """Shared conv torso, categorical policy head (normc 0.01) and value head (normc 1.0).

    small: the A3C network (Mnih et al. 2016) that the PPO paper uses for Atari;
    large: the Nature DQN network (Mnih et al. 2015). Input: uint8 frames (B, stack, 84, 84).
    """

    def __init__(self, in_channels: int, num_actions: int, kind: str = "small"):
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
        self.logits = _dense(hidden, num_actions, 0.01)
        self.value = _dense(hidden, 1, 1.0)
        # NHWC convolutions are 1.5-3x faster on CPU (benchmarks/throughput.py); same math.
        self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, C, 84, 84) uint8 -> logits (B, A), values (B,)."""
        x = obs.float().div_(255.0)  # frames stay uint8 until here (baselines: ob / 255.0)
        x = self.torso(x.contiguous(memory_format=torch.channels_last))
        return self.logits(x), self.value(x).squeeze(-1)

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions; return actions, their log-probabilities and the values, each (B,).

        The same draws as Categorical(logits).sample() / .log_prob() (multinomial over the
        softmax), without the distribution object's per-call overhead on this hot path.
        """
        with torch.inference_mode():
            logits, values = self(obs)
            log_p = torch.log_softmax(logits, dim=-1)
            actions = torch.multinomial(log_p.exp(), 1).squeeze(1)
            return actions, log_p.gather(1, actions.unsqueeze(1)).squeeze(1), values
