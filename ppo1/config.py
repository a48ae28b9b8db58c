"""The run configuration: one typed dataclass, named presets, validation, JSON save/load."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ppo1.errors import ConfigError


@dataclass
class Config:
    env_name: str = "PongNoFrameskip-v4"
    """Atari game (PongNoFrameskip-v4, ALE/Pong-v5: sticky actions, Pong) or a gymnasium id (CartPole-v1)."""
    preset: str = ""
    """Named defaults: wallclock, ppo-paper, baselines-ppo1, mujoco, classic; empty: by env (Atari:
    wallclock, MuJoCo: mujoco, others: classic)."""
    env_steps: int = 10_000_000
    """Total agent steps over all envs and ranks (1 agent step = 4 frames); schedules anneal over it,
    or over anneal_steps if that is larger (CleanRL, SB3: total_timesteps)."""
    anneal_steps: int = 0
    """Agent steps over which the linear schedule anneals the learning rate and clip parameter to 0:
    the larger of this and env_steps (0: env_steps). A run shorter than it stops part way down."""
    num_envs: int = 8
    """Environments stepped by each process, with one batched forward pass per step (CleanRL num_envs,
    SB3 n_envs)."""
    timesteps_per_actorbatch: int = 128
    """Horizon: steps per env (actor) per iteration (CleanRL num_steps, SB3 n_steps)."""
    gamma: float = 0.99
    """Discount factor."""
    lam: float = 0.95
    """GAE lambda (CleanRL, SB3: gae_lambda)."""
    epsilon: float = 0.1
    """PPO clip parameter, annealed to 0 with the linear schedule (CleanRL clip_coef, SB3 clip_range)."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient (CleanRL, SB3: ent_coef)."""
    vf_coef: float = 1.0
    """Value loss coefficient on the mean squared error (baselines ppo1: 1). CleanRL's and baselines
    ppo2's vf_coef 0.5 multiplies half the squared error: 0.25 here."""
    norm_adv: bool = True
    """Standardize each iteration's advantages to mean 0, std 1 (baselines; off: chainerrl's default).
    CleanRL norm_adv, SB3 normalize_advantage (both per minibatch; baselines per iteration)."""
    norm_adv_per_minibatch: bool = False
    """With norm_adv: standardize each minibatch's advantages instead of the iteration's (CleanRL, SB3,
    baselines ppo2)."""
    clip_vloss: bool = False
    """Clip the value loss as baselines ppo2 and CleanRL (clip_vloss) do: the larger squared error of
    the new value and of the old value moved at most the clip parameter (baselines ppo1: off)."""
    max_grad_norm: float = 0.0
    """Scale each gradient down to this global norm before the Adam step; 0: off (baselines ppo1;
    CleanRL, SB3 and baselines ppo2: 0.5)."""
    optim_epochs: int = 3
    """Passes over each iteration's batch (CleanRL update_epochs, SB3 n_epochs)."""
    optim_stepsize: float = 2.5e-4
    """Adam learning rate, annealed to 0 with the linear schedule (CleanRL, SB3: learning_rate)."""
    optim_batchsize: int = 32
    """Minibatch size per actor: each gradient step uses num_envs x this many samples (SB3 batch_size
    = num_envs x this; CleanRL num_minibatches = timesteps_per_actorbatch / this)."""
    schedule: str = "linear"
    """linear: anneal learning rate and clip parameter to 0 (over env_steps, or anneal_steps if larger);
    constant: keep them (CleanRL anneal_lr, which anneals the learning rate only)."""
    model_type: str = "small"
    """Atari: small (the A3C network of the PPO paper) or large (Nature DQN); other envs: mlp."""
    pi_gain: float = 0.01
    """Atari: norm of each policy-head unit's initial weights (baselines cnn_policy normc: 0.01)."""
    init: str = "normc"
    """Atari: normc (baselines ppo1: Glorot-uniform convolutions, normc dense layers) or orthogonal
    (baselines ppo2, CleanRL: gain sqrt 2, policy head pi_gain, value head 1)."""
    hid_size: int = 64
    """mlp: units per hidden layer (baselines run_mujoco: 64)."""
    num_hid_layers: int = 2
    """mlp: hidden layers of the policy and of the value network (baselines run_mujoco: 2)."""
    frame_stacking: bool = True
    """Stack the last 4 frames (turn off with --no_frame_stacking, as baselines ppo1)."""
    episode_life: bool = True
    """Training only: end the episode (not the game) on a life loss."""
    clip_rewards: bool = True
    """Training only: sign-clip rewards; logged scores stay the real game score."""
    seed: int = 0
    """Seed of torch and of the environments (env g, counted over all ranks, gets seed + 10000 g)."""
    model_name: str = ""
    """Run folder name under checkpoint_dir; empty means <Game>-<preset>."""
    checkpoint_dir: str = "checkpoints"
    """Folder holding the run folders."""
    asset_dir: str = "assets"
    """Folder for videos and GIFs."""
    save_interval: int = 10
    """Write a checkpoint every this many iterations (and at the end and on interrupt)."""
    log_interval: int = 10
    """Print the iteration table every this many iterations; progress.csv, TensorBoard and --track get
    every iteration."""
    track: bool = False
    """Send every logged scalar, the config and the evaluation videos to Weights & Biases
    (pip install -e '.[wandb]'; WANDB_MODE=offline works without a network)."""
    wandb_project: str = "ppo1"
    """--track: the W&B project."""
    wandb_entity: str = ""
    """--track: the W&B entity (user or team); empty: your default."""
    eval_interval: int = 0
    """Every this many iterations play eval_episodes full games and log EvalRewMean; 0: never."""
    eval_episodes: int = 5
    """Full games per evaluation during training (seeded seed + 10^8, the same games each time)."""
    capture_video: bool = False
    """With eval_interval: record one game per evaluation, MP4 in <run>/videos, GIF in TensorBoard."""
    device: str = "auto"
    """auto (cuda if available), cpu or cuda."""
    torch_threads: int = 0
    """Torch intra-op threads; 0 picks the number of cores."""
    env_threads: int = 0
    """ale-py emulator threads; 0 picks the number of cores."""
    env_groups: int = 1
    """Split the envs into this many groups that step while the network acts for another (1: serial)."""
    sync_check_interval: int = 100
    """Distributed: every this many iterations the ranks compare a parameter checksum."""
    dist_timeout: float = 300.0
    """Distributed: seconds a collective waits for the other ranks before the run stops."""

    @property
    def run_name(self) -> str:
        from ppo1.envs import parse_env_name

        return self.model_name or f"{parse_env_name(self.env_name).title}-{self.preset}"

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoint_dir) / self.run_name

    @property
    def batch_size(self) -> int:
        """Samples per iteration in one process."""
        return self.num_envs * self.timesteps_per_actorbatch

    @property
    def minibatch_size(self) -> int:
        """Samples per gradient step in one process."""
        return self.num_envs * self.optim_batchsize

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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
        from ppo1.envs import protocol_settings

        at_least("episodes", self.episodes, 1)
        if self.protocol is not None:
            protocol_settings(self.protocol)
        for name in ("seed", "torch_threads"):
            at_least(name, getattr(self, name), 0)


# Not Atari: an MLP, no frames to stack, no lives, the env's own rewards; one torch thread (a
# network this small runs slower on more).
MLP = dict(model_type="mlp", frame_stacking=False, episode_life=False, clip_rewards=False, torch_threads=1)

PRESETS: dict[str, dict] = {
    # Ours, for the wall clock of a small CPU machine (benchmarks/learning.py): ppo-paper with
    # minibatches of 4 x 8 = 32 samples, as chainerrl's first PPO Atari example (chainer/chainerrl
    # PR 126, 2017), so 96 instead of 12 gradient steps per iteration, and the Nature DQN network
    # of baselines ppo1's own run_atari.py (kind="large"). Tuned on Pong, checked on SpaceInvaders
    # (benchmarks/results/pong-fewer-steps/). The default for Atari games: 2M agent steps, what Pong
    # needs, on the PPO paper's 10M-step schedule (annealing over only 2M learned slower:
    # benchmarks/results/default-pong/), so a 2M run ends with the schedules at 0.8.
    "wallclock": dict(env_steps=2_000_000, anneal_steps=10_000_000, optim_batchsize=4, model_type="large"),
    # PPO paper (Schulman et al. 2017) Table 5, lucaslingle/ppo1's defaults; 40M frames = 10M agent steps.
    "ppo-paper": {},
    # baselines/ppo1/run_atari.py: horizon 256, clip 0.2, 4 epochs, lr 1e-3, minibatch 64,
    # cnn_policy kind="large", wrap_deepmind without frame stack.
    "baselines-ppo1": dict(
        timesteps_per_actorbatch=256,
        epsilon=0.2,
        optim_epochs=4,
        optim_stepsize=1e-3,
        optim_batchsize=64,
        model_type="large",
        frame_stacking=False,
    ),
    # baselines/ppo1/run_mujoco.py = PPO paper Table 3: horizon 2048, clip 0.2, no entropy bonus,
    # 10 epochs, lr 3e-4, minibatch 64, gamma 0.99, lambda 0.95, linear schedule, 1M steps, 1 env.
    "mujoco": dict(
        env_steps=1_000_000,
        num_envs=1,
        timesteps_per_actorbatch=2048,
        epsilon=0.2,
        ent_coef=0.0,
        optim_epochs=10,
        optim_stepsize=3e-4,
        optim_batchsize=64,
        **MLP,
    ),
    # Classic control (CartPole-v1 and the like): not from baselines; ours, the mujoco preset's
    # update with 8 envs x 128 steps, minibatch 256 and lr 1e-3, tuned on CartPole-v1 (seeds 0-2
    # all end at 500 within 100k steps).
    "classic": dict(
        env_steps=100_000,
        num_envs=8,
        timesteps_per_actorbatch=128,
        epsilon=0.2,
        ent_coef=0.0,
        optim_epochs=10,
        optim_stepsize=1e-3,
        optim_batchsize=32,
        **MLP,
    ),
}

NOOP_MAX = 30  # DQN (Mnih et al. 2015) / baselines NoopResetEnv
STICKY_V5 = 0.25  # ALE/*-v5 sticky actions (Machado et al. 2018)
# Evaluation protocols: name -> (no-op starts at most, sticky-action probability). Both Atari ones
# keep the 108,000-frame cap (envs.MAX_FRAMES).
PROTOCOLS: dict[str, tuple[int, float]] = {
    # DQN (Mnih et al. 2015) / PPO paper: up to 30 no-op starts, deterministic emulator.
    "paper": (NOOP_MAX, 0.0),
    # Machado et al. 2018 ("Revisiting the ALE"): sticky actions 0.25, no no-op starts.
    "machado": (0, STICKY_V5),
    # Not Atari: the env's own episodes and time limit.
    "env": (0, 0.0),
}

CHOICES = {  # of Config's fields
    "preset": tuple(PRESETS),
    "schedule": ("linear", "constant"),
    "model_type": ("small", "large", "mlp"),
    "init": ("normc", "orthogonal"),
    "device": ("auto", "cpu", "cuda"),
}


def field_docs(record: type = Config) -> dict[str, str]:
    """Each field's docstring (the string literal under it) of a dataclass, for --help."""
    tree = ast.parse(inspect.getsource(record))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
            docs[node.target.id] = nxt.value.value
    return docs


def resolve(overrides: dict, base: dict | None = None) -> Config:
    """Defaults < preset < base (a saved config) < overrides (flags given), then validate."""
    preset = overrides.get("preset") or (base or {}).get("preset")
    if preset is None:
        preset = default_preset(overrides.get("env_name") or (base or {}).get("env_name") or Config.env_name)
    if preset not in PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **(base or {}), **overrides, "preset": preset}
    cfg = Config.from_dict(values)
    validate(cfg)
    return cfg


def default_preset(env_name: str) -> str:
    """wallclock for Atari games, mujoco for MuJoCo envs, classic for the rest."""
    from ppo1.envs import parse_env_name

    kind = parse_env_name(env_name).kind
    return {"atari": "wallclock", "mujoco": "mujoco"}.get(kind, "classic")


def validate(cfg: Config) -> None:
    """Raise ConfigError with a one-line message for any nonsensical setting."""
    _check_env(cfg)
    _check_counts(cfg)
    _check_ranges(cfg)


def _check_env(cfg: Config) -> None:
    """The env exists and fits the network; the named choices are valid."""
    from ppo1.envs import check_spaces, parse_env_name, probe_spaces

    spec = parse_env_name(cfg.env_name)
    if not spec.atari:
        check_spaces(spec, *probe_spaces(spec))
    for name, options in CHOICES.items():
        if getattr(cfg, name) not in options:
            raise ConfigError(f"--{name} must be one of {', '.join(options)}")
    if spec.atari and cfg.model_type == "mlp":
        raise ConfigError(f"--model_type mlp is for flat observations; {cfg.env_name} needs small or large")
    if not spec.atari and cfg.model_type != "mlp":
        raise ConfigError(
            f"--model_type {cfg.model_type} is a CNN for Atari frames; {cfg.env_name} needs --model_type "
            f"mlp (or --preset {default_preset(cfg.env_name)})"
        )


def at_least(name: str, value: float, low: int) -> None:
    """The one-line error for a count below its floor (1: at least 1; 0: 0 or more)."""
    if value < low:
        floor = "0 or more" if low == 0 else f"at least {low}"
        raise ConfigError(f"--{name} must be {floor}, got {value}")


def _check_counts(cfg: Config) -> None:
    """Counts, sizes, timeouts and names within what a run can hold."""
    positive = ["env_steps", "num_envs", "timesteps_per_actorbatch", "optim_epochs"]
    positive += ["optim_batchsize", "save_interval", "sync_check_interval", "env_groups", "eval_episodes"]
    positive += ["hid_size", "num_hid_layers", "log_interval"]
    for name in positive:
        at_least(name, getattr(cfg, name), 1)
    for name in ["torch_threads", "env_threads", "seed", "eval_interval", "anneal_steps"]:
        at_least(name, getattr(cfg, name), 0)
    limits = dict(seed=2**30, num_envs=4096, timesteps_per_actorbatch=2**20, hid_size=4096, num_hid_layers=64)
    for name, limit in limits.items():
        if getattr(cfg, name) > limit:
            raise ConfigError(f"--{name} must be at most {limit:,}, got {getattr(cfg, name):,}")
    if cfg.batch_size > 2**22:
        raise ConfigError(
            f"--num_envs x --timesteps_per_actorbatch = {cfg.batch_size:,} samples per iteration; "
            f"at most {2**22:,}"
        )
    if cfg.dist_timeout > 7 * 86400:
        raise ConfigError(f"--dist_timeout must be at most a week (604800 s), got {cfg.dist_timeout:g}")
    for name in ("checkpoint_dir", "asset_dir", "model_name"):
        try:
            getattr(cfg, name).encode()
        except UnicodeEncodeError:
            raise ConfigError(f"--{name} {getattr(cfg, name)!r} is not valid UTF-8 text") from None
    if len(cfg.model_name) > 200:
        raise ConfigError(f"--model_name is {len(cfg.model_name)} characters long; at most 200")
    if cfg.dist_timeout <= 0:
        raise ConfigError(f"--dist_timeout must be positive, got {cfg.dist_timeout}")


def _check_ranges(cfg: Config) -> None:
    """The algorithm's coefficients in their ranges, and the flags that depend on each other."""
    if not 0.0 < cfg.gamma <= 1.0:
        raise ConfigError(f"--gamma must be in (0, 1], got {cfg.gamma}")
    if not 0.0 <= cfg.lam <= 1.0:
        raise ConfigError(f"--lam must be in [0, 1], got {cfg.lam}")
    if not 0.0 < cfg.epsilon < 1.0:
        raise ConfigError(f"--epsilon must be in (0, 1), got {cfg.epsilon}")
    if not 0.0 < cfg.pi_gain <= 10.0:
        raise ConfigError(f"--pi_gain must be in (0, 10], got {cfg.pi_gain}")
    if not 0.0 <= cfg.ent_coef < 1.0:
        raise ConfigError(f"--ent_coef must be in [0, 1), got {cfg.ent_coef}")
    if not 0.0 < cfg.vf_coef <= 10.0:
        raise ConfigError(f"--vf_coef must be in (0, 10], got {cfg.vf_coef}")
    if not 0.0 <= cfg.max_grad_norm <= 1e6:
        raise ConfigError(f"--max_grad_norm must be 0 (off) or positive, got {cfg.max_grad_norm}")
    if cfg.init != "normc" and cfg.model_type == "mlp":
        raise ConfigError(
            f"--init {cfg.init} is for the Atari networks; the mlp starts as baselines' (normc)"
        )
    if not 0.0 < cfg.optim_stepsize < 1.0:
        raise ConfigError(f"--optim_stepsize must be in (0, 1), got {cfg.optim_stepsize}")
    if cfg.env_groups > cfg.num_envs:
        raise ConfigError(f"--env_groups {cfg.env_groups} is more than --num_envs {cfg.num_envs}")
    if cfg.optim_batchsize > cfg.timesteps_per_actorbatch:
        raise ConfigError(
            f"--optim_batchsize {cfg.optim_batchsize} is larger than the per-actor batch "
            f"--timesteps_per_actorbatch {cfg.timesteps_per_actorbatch}"
        )
    if cfg.track and not cfg.wandb_project:
        raise ConfigError("--track needs a --wandb_project")
    if cfg.capture_video and not cfg.eval_interval:
        raise ConfigError("--capture_video records evaluation games: give --eval_interval K too")
    if cfg.model_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.model_name):
        raise ConfigError(
            f"--model_name {cfg.model_name!r} may hold only letters, digits, '.', '_' and '-' "
            "(no path separators or '..')"
        )
