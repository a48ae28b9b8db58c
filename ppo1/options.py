"""What the agent commands (evaluate, movie, play) share: which run, which games, how the agent
acts. Light: the CLI's parser makes one flag per field."""

from __future__ import annotations

from dataclasses import dataclass

from ppo1.config import at_least
from ppo1.envspec import protocol_settings


@dataclass(frozen=True)
class AgentOptions:
    """The flags evaluate, movie and play share (the run's flags spelled as `ppo1 train` does); the
    CLI makes one flag per field, with its docstring as help."""

    env_name: str | None = None
    """The env to play (default: the one the agent was trained on; another name of the same game
    picks its protocol, e.g. ALE/Pong-v5)."""
    checkpoint_dir: str | None = None
    """Folder holding the run folders (default: checkpoints)."""
    model_name: str | None = None
    """Run folder name under checkpoint_dir (default: <Game>-<preset>)."""
    preset: str | None = None
    """With no --model_name, the run folder is <Game>-<preset> (default: wallclock for Atari games)."""
    checkpoint: str | None = None
    """A checkpoint file to load instead of the run folder's checkpoint.pt (a shipped agent)."""
    episodes: int = 1
    """Full games to play."""
    protocol: str | None = None
    """Atari: paper (up to 30 no-op starts, no sticky actions) or machado (sticky actions 0.25, no
    no-ops); other envs: env, their own episodes (default: the one the agent was trained under)."""
    deterministic: bool = False
    """Take the most likely action instead of a sample."""
    seed: int = 0
    """Game i is seeded seed + i; also seeds the action sampling and an untrained policy."""
    allow_random: bool = False
    """With no checkpoint, run an untrained (freshly initialized, seeded) policy."""
    device: str = "cpu"
    """auto, cpu or cuda."""
    torch_threads: int = 1
    """Torch intra-op threads (0: the number of cores). Acting on a few frames at a time gains
    nothing from more, and on a small machine they slow the emulator threads down."""

    def check(self) -> None:
        """ConfigError for a bad value (one at a time, in this order)."""
        at_least("episodes", self.episodes, 1)
        if self.protocol is not None:
            protocol_settings(self.protocol)
        for name in ("seed", "torch_threads"):
            at_least(name, getattr(self, name), 0)
