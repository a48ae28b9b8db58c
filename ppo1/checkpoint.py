"""Checkpoints: complete (model, optimizer, schedule, counters, RNG, config), atomic, safe to load."""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ppo1.config import Config
from ppo1.envs import env_dims
from ppo1.envspec import parse_env_name
from ppo1.errors import ConfigError, SaveError, first_line
from ppo1.runfiles import atomic_write

CHECKPOINT = "checkpoint.pt"
FORMAT_VERSION = 1
# What to do about a checkpoint that cannot be used, for `ppo1 train` and for the agent commands.
TRAIN_HINT = "move it aside or use --fresh"
AGENT_HINT = "pick another run (--model_name, --checkpoint_dir) or retrain it with `ppo1 train --fresh`"
FILE_HINT = (
    "give a checkpoint.pt that `ppo1 train` wrote or an agent file that Agent.save wrote "
    "(e.g. agents/PongNoFrameskip-v4-wallclock.pt)"
)


@dataclass
class Counters:
    """Where a run is: agent steps (over all ranks), iterations, games ended, seconds trained, and
    how many times it was resumed from its checkpoint."""

    timesteps: int = 0
    iterations: int = 0
    episodes: int = 0
    elapsed: float = 0.0
    resumes: int = 0


@dataclass
class TrainState:
    """What a training checkpoint holds, read and written here alone. On disk it is a plain dict of
    tensors, numbers and lists (so torch.load(weights_only=True) reads it), with these keys."""

    model: dict  # policy.state_dict(), observation statistics included
    optimizer: dict  # Adam's state_dict: moments and step counts
    config: dict  # the resolved Config the run trained under
    counters: Counters
    recent: dict[str, list]  # the last 100 games' scores and lengths, the last 100 clipped returns
    generator: torch.Tensor  # the minibatch-order generator, the same on every rank
    rank_rngs: list[dict]  # each rank's {"torch": CPU state, "cuda": CUDA state or None}
    num_actions: int
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        state = {k: getattr(self, k) for k in ("model", "optimizer", "config", "recent", "num_actions")}
        state.update(
            counters=asdict(self.counters),
            rng=dict(generator=self.generator, ranks=self.rank_rngs),
            world_size=self.world_size,
        )
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any], path: Path, hint: str = "") -> TrainState:
        known = ("model", "optimizer", "config", "counters", "recent", "rng", "num_actions")
        missing = [k for k in known if k not in state]
        if missing or not isinstance(state["config"], dict):
            raise ConfigError(
                f"{path} is not a complete ppo1 checkpoint (no {', '.join(missing) or 'config'}); {hint}"
            )
        try:
            return cls._from(state)
        except (TypeError, KeyError, ValueError, AttributeError) as e:  # a field of the wrong shape
            why = first_line(e)[:120]
            raise ConfigError(f"{path} is not a valid ppo1 checkpoint ({why}); {hint}") from None

    @classmethod
    def _from(cls, state: dict[str, Any]) -> TrainState:
        rng = state["rng"]
        return cls(
            model=state["model"],
            optimizer=state["optimizer"],
            # Checkpoints before anneal_steps annealed over env_steps alone (anneal_steps 0).
            config={"anneal_steps": 0, **state["config"]},
            counters=Counters(**state["counters"]),
            recent=state["recent"],
            generator=rng["generator"],
            # Checkpoints before per-rank states held rank 0's CPU generator only.
            rank_rngs=rng.get("ranks") or [dict(torch=rng["torch"], cuda=None)],
            num_actions=int(state["num_actions"]),
            world_size=int(state.get("world_size", 1)),
        )


@dataclass
class AgentState:
    """What a trained agent needs of a checkpoint: a training checkpoint's, or those of a file
    stripped to the weights and config (a shipped agent)."""

    model: dict
    config: dict
    num_actions: int | None  # None: the env's
    step: int  # agent steps trained (0 where the file does not say)

    @classmethod
    def load(cls, path: Path, hint: str = AGENT_HINT) -> AgentState:
        state = load(path, hint)
        model, config, counters = state.get("model"), state.get("config"), state.get("counters")
        if not isinstance(model, dict) or not isinstance(config, dict) or "env_name" not in config:
            raise ConfigError(f"{path} holds no weights and config of a ppo1 agent; {hint}")
        step = counters.get("timesteps", 0) if isinstance(counters, dict) else 0
        actions = state.get("num_actions")
        return cls(model, config, int(actions) if isinstance(actions, int) else None, int(step))


def save_state(path: Path, state: TrainState) -> None:
    save(path, state.to_dict())


def load_state(path: Path, hint: str = "") -> TrainState:
    hint = hint or TRAIN_HINT
    return TrainState.from_dict(load(path, hint), path, hint)


def save(path: Path, state: dict[str, Any]) -> None:
    """Atomically (runfiles.atomic_write, synced to the disk): a kill mid-save leaves the previous
    checkpoint as it was."""
    state = {"format_version": FORMAT_VERSION, **state}
    try:
        with atomic_write(path, fsync=True) as f:
            torch.save(state, f.tmp)
    except Exception as e:
        while e.__context__ is not None and not isinstance(e, OSError):
            e = e.__context__  # torch wraps the OS error (disk full, EFBIG) in a RuntimeError
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:120]
        raise SaveError(f"cannot write checkpoint {path} ({why}); the previous one is intact") from None


def load(path: Path, hint: str = TRAIN_HINT) -> dict[str, Any]:
    """weights_only loading: a checkpoint someone sent you cannot run code. hint: what to do about a
    file that cannot be used, for the error message."""
    other = what_else(path)
    if other:
        raise ConfigError(f"{path} is {other}, not a ppo1 checkpoint; {hint}")
    try:
        check_crc(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt file can raise almost anything from inside torch.load
        first = first_line(e)
        raise ConfigError(f"cannot load checkpoint {path} ({first[:160]}); {hint}") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not a ppo1 checkpoint; {hint}")
    model = state.get("model") if isinstance(state.get("model"), dict) else {}
    floats = {k: v for k, v in model.items() if torch.is_tensor(v) and v.is_floating_point()}
    bad = [k for k, v in floats.items() if not v.isfinite().all()]
    if bad:
        raise ConfigError(f"checkpoint {path} holds non-finite weights ({', '.join(bad[:3])}); {hint}")
    return state


def what_else(path: Path) -> str | None:
    """What a file is if it is plainly no torch.save file (empty, text, another zip, other bytes);
    None where torch.load must tell (a torch zip, maybe cut short or damaged, or a legacy pickle)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
        if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):  # torch.save's, or another zip
            with zipfile.ZipFile(path) as z:
                torch_zip = any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist())
            return None if torch_zip else "a zip archive that torch.save did not write"
    except (OSError, zipfile.BadZipFile):
        return None  # unreadable or damaged: torch.load says how, in load()'s one line
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return None  # a zip cut short: torch.load names what is missing
    if head.startswith(b"\x80"):  # a pickle (torch.save's legacy format): torch.load decides
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "a file of other bytes"
    return "a text file"


def check_crc(path: Path) -> None:
    """torch.load does not check the CRC-32 that torch.save stores for each record of the zip, so
    a checkpoint with damaged weights would load: check them here."""
    if not zipfile.is_zipfile(path):
        return  # not a zip (truncated, or no checkpoint at all): torch.load says what is wrong
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    if bad is not None:
        raise ValueError(f"{bad} fails its CRC check: the file is damaged")


def check_compatible(state: TrainState, cfg: Config, path: Path) -> None:
    """Refuse to resume a checkpoint of another game, network, observation shape or action count
    under cfg, naming the mismatch."""
    saved, spec = state.config, parse_env_name(cfg.env_name)
    pairs = {
        "game": lambda: (parse_env_name(saved["env_name"]).title, spec.title),
        "--model_type": lambda: (saved["model_type"], cfg.model_type),
        "frame stacking": lambda: (saved["frame_stacking"], cfg.frame_stacking),
        "actions": lambda: (state.num_actions, env_dims(spec, cfg.frame_stacking)[1]),  # makes the env
    }
    for what, values in pairs.items():
        a, b = values()
        if a != b:
            raise ConfigError(
                f"checkpoint {path} has {what} {a}, not {b}; use another --model_name or --fresh"
            )


def rng_state(device: torch.device) -> dict:
    """This process's random generators: torch's CPU one, and the CUDA one that samples actions on a
    GPU. The emulators' state is not saved."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return dict(torch=torch.get_rng_state(), cuda=cuda)


def restore_rng(saved: dict, device: torch.device) -> None:
    torch.set_rng_state(saved["torch"])
    if saved.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda"], device)


def remove_temporaries(run_dir: Path) -> None:
    """The temporary file of a save interrupted by a kill."""
    for stale in run_dir.glob(".checkpoint-*"):
        stale.unlink(missing_ok=True)
