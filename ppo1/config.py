"""The run configuration: one typed dataclass, named presets, resolution (flags > saved config >
preset) and validation. Light: the CLI's parser reads it without loading torch or ale-py."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ppo1.envspec import parse_env_name
from ppo1.errors import ConfigError


@dataclass
class Config:
    env_name: str = "PongNoFrameskip-v4"
    """An Atari game or a gymnasium id. PongNoFrameskip-v4 and Pong: no sticky actions; ALE/Pong-v5:
    sticky actions 0.25; CartPole-v1, HalfCheetah-v5: an MLP policy."""
    preset: str = ""
    """Named defaults; empty: by env. Atari: wallclock, MuJoCo: mujoco, others: classic."""
    env_steps: int = 10_000_000
    """Agent steps to train, over all envs and ranks (1 agent step = 4 frames). The schedules anneal
    over it, or over anneal_steps if that is larger (CleanRL, SB3: total_timesteps)."""
    anneal_steps: int = 0
    """Steps of the linear schedule, if more than env_steps. The learning rate and clip parameter reach
    0 at the larger of this and env_steps (0: env_steps): a run shorter than it stops part way down."""
    num_envs: int = 8
    """Envs per process. One batched forward pass acts for all of them (CleanRL num_envs, SB3 n_envs)."""
    timesteps_per_actorbatch: int = 128
    """Horizon: steps per env per iteration. CleanRL num_steps, SB3 n_steps."""
    gamma: float = 0.99
    """Discount factor."""
    lam: float = 0.95
    """GAE lambda. CleanRL, SB3: gae_lambda."""
    epsilon: float = 0.1
    """PPO clip parameter, annealed with the learning rate. CleanRL clip_coef, SB3 clip_range."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient. CleanRL, SB3: ent_coef."""
    vf_coef: float = 1.0
    """Value loss coefficient (baselines ppo1: 1). It multiplies the mean squared error: CleanRL's and
    baselines ppo2's vf_coef 0.5 multiplies half of it, 0.25 here."""
    norm_adv: bool = True
    """Standardize advantages to mean 0, std 1. baselines: per iteration; off: chainerrl's default;
    CleanRL norm_adv, SB3 normalize_advantage (both per minibatch)."""
    norm_adv_per_minibatch: bool = False
    """Standardize per minibatch, not per iteration. As CleanRL, SB3 and baselines ppo2 do."""
    clip_vloss: bool = False
    """Clip the value loss as baselines ppo2 does. The larger squared error of the new value and of the
    old value moved at most the clip parameter (CleanRL clip_vloss; baselines ppo1: off)."""
    max_grad_norm: float = 0.0
    """Clip the gradient's global norm; 0: off. baselines ppo1: off; CleanRL, SB3, baselines ppo2: 0.5."""
    optim_epochs: int = 3
    """Epochs per iteration. CleanRL update_epochs, SB3 n_epochs."""
    optim_stepsize: float = 2.5e-4
    """Adam learning rate, annealed by the schedule. CleanRL, SB3: learning_rate."""
    optim_batchsize: int = 32
    """Minibatch size per env. A gradient step uses num_envs x this many samples (SB3 batch_size =
    num_envs x this; CleanRL num_minibatches = timesteps_per_actorbatch / this)."""
    schedule: str = "linear"
    """linear: anneal the learning rate and clip to 0; constant: keep them. Linear reaches 0 at env_steps,
    or anneal_steps if larger (CleanRL anneal_lr anneals the learning rate only)."""
    model_type: str = "small"
    """The network. Atari: small (the PPO paper's A3C network) or large (Nature DQN); other envs: mlp."""
    pi_gain: float = 0.01
    """Norm of the initial policy-head weights. Atari; baselines cnn_policy normc: 0.01."""
    init: str = "normc"
    """Atari weight init. normc: baselines ppo1 (Glorot-uniform convolutions, normc dense layers);
    orthogonal: baselines ppo2, CleanRL (gain sqrt 2, policy head pi_gain, value head 1)."""
    hid_size: int = 64
    """MLP units per hidden layer. baselines run_mujoco: 64."""
    num_hid_layers: int = 2
    """MLP hidden layers. Of the policy and of the value network (baselines run_mujoco: 2)."""
    frame_stacking: bool = True
    """Stack the last 4 frames. baselines ppo1 does not (--no_frame_stacking)."""
    episode_life: bool = True
    """End the episode on a life loss, in training. The logged game goes on to the game over."""
    clip_rewards: bool = True
    """Sign-clip rewards, in training. The logged scores stay the real game score."""
    seed: int = 0
    """Seed of torch and the envs. Env g, counted over all ranks, gets seed + 10000 g."""
    model_name: str = ""
    """Run folder name; empty: <Game>-<preset>. Under checkpoint_dir."""
    checkpoint_dir: str = "checkpoints"
    """Folder of the run folders."""
    asset_dir: str = "assets"
    """Folder for videos and GIFs."""
    save_interval: int = 10
    """Checkpoint every this many iterations. Also at the end and on an interrupt."""
    log_interval: int = 10
    """Print the table every this many iterations. progress.csv, TensorBoard and --track get every
    iteration."""
    track: bool = False
    """Log to Weights & Biases too. Every scalar, the config and the evaluation videos (pip install -e
    '.[wandb]'; WANDB_MODE=offline works without a network)."""
    wandb_project: str = "ppo1"
    """--track: the W&B project."""
    wandb_entity: str = ""
    """--track: the W&B entity; empty: your default. A user or a team."""
    eval_interval: int = 0
    """Evaluate every this many iterations; 0: never. eval_episodes full games, logged as EvalRewMean."""
    eval_episodes: int = 5
    """Games per evaluation in training. Seeded seed + 10^8: the same games each time."""
    capture_video: bool = False
    """Record one game per evaluation. MP4 in <run>/videos, GIF in TensorBoard (needs eval_interval)."""
    device: str = "auto"
    """auto: cuda where available."""
    torch_threads: int = 0
    """Torch threads; 0: one per core."""
    env_threads: int = 0
    """ale-py emulator threads; 0: one per env, at most one per core."""
    env_groups: int = 1
    """Env groups that step while the network acts for another. 1: the serial loop."""
    sync_check_interval: int = 100
    """Compare the ranks' parameters every this many iterations. Distributed runs only."""
    dist_timeout: float = 300.0
    """Seconds a collective waits for the other ranks. Then the run stops, naming the rank."""

    @property
    def run_name(self) -> str:
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

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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

CHOICES = {  # of Config's fields
    "preset": tuple(PRESETS),
    "schedule": ("linear", "constant"),
    "model_type": ("small", "large", "mlp"),
    "init": ("normc", "orthogonal"),
}
DEVICES = ("auto", "cpu", "cuda")  # --device: checked where the device is picked (device.pick_device)


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
    kind = parse_env_name(env_name).kind
    return {"atari": "wallclock", "mujoco": "mujoco"}.get(kind, "classic")


def validate(cfg: Config) -> None:
    """Raise ConfigError with a one-line message for any nonsensical setting."""
    _check_env(cfg)
    _check_counts(cfg)
    _check_ranges(cfg)


def _check_env(cfg: Config) -> None:
    """The env's name is known and its kind fits the network; the named choices are valid. Whether
    the env can be made here and its spaces fit is checked where it is first made
    (envs.check_env)."""
    spec = parse_env_name(cfg.env_name)
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
