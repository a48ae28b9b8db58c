"""Evaluation: full games under a named protocol, scores and their statistics.

`evaluate()` is the function the training loop can call; `load_agent()` rebuilds an agent (policy,
config, step count) from a run folder for the `evaluate`, `movie` and `play` commands. Evaluation
always uses the evaluation wrappers: full games (no end-of-life episodes), real unclipped rewards.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ppo1 import checkpoint
from ppo1.config import Config, ConfigError, resolve
from ppo1.envs import (
    FRAME_SKIP,
    MAX_FRAMES,
    NOOP_MAX,
    STICKY_V5,
    EnvSpec,
    VecEnv,
    env_dims,
    parse_env_name,
)
from ppo1.errors import first_line
from ppo1.policies import CnnPolicy, MlpPolicy, make_policy, pick_device, sample

Policy = CnnPolicy | MlpPolicy

# name -> (no-op starts at most, sticky-action probability). Both keep the 108,000-frame cap.
PROTOCOLS: dict[str, tuple[int, float]] = {
    # DQN (Mnih et al. 2015) / PPO paper: up to 30 no-op starts, deterministic emulator.
    "paper": (NOOP_MAX, 0.0),
    # Machado et al. 2018 ("Revisiting the ALE"): sticky actions 0.25, no no-op starts.
    "machado": (0, STICKY_V5),
    # Not Atari: the env's own episodes and time limit.
    "env": (0, 0.0),
}
MAX_EVAL_ENVS = 16  # games played at once by default
EVAL_SEED = 10**8  # evaluation during training plays games seeded seed + EVAL_SEED + i


def default_protocol(spec: EnvSpec) -> str:
    """The protocol an agent trained on `spec` was trained under: ALE/*-v5 (sticky) -> machado."""
    if not spec.atari:
        return "env"
    return "machado" if spec.sticky > 0 else "paper"


def protocol_settings(protocol: str, spec: EnvSpec | None = None) -> tuple[int, float]:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown --protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if spec is not None and spec.atari == (protocol == "env"):
        raise ConfigError(
            f"--protocol {protocol} is not for {spec.name}; use --protocol {default_protocol(spec)}"
            + (" (paper or machado)" if spec.atari else "")
        )
    return PROTOCOLS[protocol]


def describe_protocol(protocol: str) -> str:
    if protocol == "env":
        return "env (the env's own episodes and time limit)"
    noop_max, sticky = protocol_settings(protocol)
    noops = f"up to {noop_max} no-op starts" if noop_max else "no no-op starts"
    sticky_text = f"sticky actions {sticky:g}" if sticky else "no sticky actions"
    return f"{protocol} ({noops}, {sticky_text}, {MAX_FRAMES:,}-frame cap)"


def check_episodes(episodes: int) -> None:
    if episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {episodes}")


def policy_in_channels(policy: Policy) -> int:
    return getattr(policy, "in_channels", 1)


class ActionPicker:
    """Most likely action (deterministic) or a sample drawn from a seeded generator, so that an
    evaluation with the same seed plays the same games; the global torch RNG is left alone."""

    def __init__(self, policy: Policy, deterministic: bool, seed: int, device: torch.device):
        self.policy, self.deterministic, self.device = policy, deterministic, device
        self.generator = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        pd, _ = self.policy.dist(torch.from_numpy(np.ascontiguousarray(obs)).to(self.device))
        actions = pd.mode if self.deterministic else sample(pd, self.generator)
        return actions.cpu().numpy()


def _spec_and_stack(cfg_or_spec: Config | EnvSpec | str, policy: Policy) -> tuple[EnvSpec, bool]:
    if isinstance(cfg_or_spec, Config):
        return parse_env_name(cfg_or_spec.env_name), cfg_or_spec.frame_stacking
    spec = cfg_or_spec if isinstance(cfg_or_spec, EnvSpec) else parse_env_name(cfg_or_spec)
    return spec, policy_in_channels(policy) > 1


def evaluate(
    policy: Policy,
    cfg_or_spec: Config | EnvSpec | str,
    episodes: int = 10,
    protocol: str | None = None,
    deterministic: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    num_envs: int | None = None,
    threads: int = 0,
    progress: bool = False,
    checkpoint_step: int | None = None,
) -> dict:
    """Play `episodes` full games with `policy` and return their statistics.

    protocol None means the one the env name implies (ALE/*-v5: machado, else paper). Games run
    `num_envs` at a time (default: min(episodes, 16)) on ale-py's vector env; env i is seeded with
    seed + i. The policy is not modified (its train/eval mode is restored).
    """
    check_episodes(episodes)
    spec, frame_stack = _spec_and_stack(cfg_or_spec, policy)
    protocol = protocol or default_protocol(spec)
    noop_max, sticky = protocol_settings(protocol, spec)
    device = pick_device(device)
    n = min(episodes, num_envs or MAX_EVAL_ENVS)
    if n < 1:
        raise ConfigError(f"--num_envs must be at least 1, got {num_envs}")
    # Counting exactly N games without favouring short ones: taking "the first N games to end"
    # over n parallel envs over-represents short games (a long game is still running when the
    # N-th short one ends). Instead each env plays a fixed quota of games, fixed before any game
    # starts (N // n each, one more for the first N % n envs); games an env finishes past its
    # quota are ignored. Every game counted is then an unconditioned draw from the env's games.
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    env = VecEnv(
        spec,
        n,
        seed=seed,
        frame_stack=frame_stack,
        episode_life=False,
        clip_rewards=False,
        threads=threads,
        noop_max=noop_max,
        sticky=sticky,
    )
    if policy.num_actions != env.num_actions:
        env.close()
        raise ConfigError(f"the policy has {policy.num_actions} actions, {spec.name} has {env.num_actions}")
    from tqdm import tqdm

    was_training = policy.training
    policy.eval()
    pick = ActionPicker(policy, deterministic, seed, device)
    played = np.zeros(n, dtype=np.int64)
    scores: list[float] = []
    lengths: list[int] = []
    bar = tqdm(total=episodes, unit="game", desc=f"{spec.title} {protocol}", disable=not progress)
    try:
        obs = env.reset()
        while (played < quota).any():
            step = env.step(pick(obs))
            obs = step.obs
            # With episode_life=False every done is a game over, listed in env order.
            for i, score, length in zip(np.flatnonzero(step.dones), step.scores, step.lengths):
                if played[i] < quota[i]:
                    played[i] += 1
                    scores.append(float(score))
                    lengths.append(int(length))
                    bar.update(1)
                    bar.set_postfix(mean=f"{np.mean(scores):.1f}", refresh=False)
    finally:
        bar.close()
        env.close()
        policy.train(was_training)
    return summarize(
        scores,
        lengths,
        protocol=protocol,
        deterministic=deterministic,
        env_name=spec.name,
        checkpoint_step=checkpoint_step,
        seed=seed,
        num_envs=n,
    )


def evaluate_in_training(policy: Policy, cfg: Config, device: torch.device) -> dict:
    """`--eval_interval`: cfg.eval_episodes full games under the protocol of the training env, the
    same games (seed + EVAL_SEED) each time; `ppo1 evaluate --seed <that>` replays them. Uses its own
    envs and random generator, so training continues exactly as without evaluation."""
    start = time.perf_counter()
    result = evaluate(
        policy, cfg, cfg.eval_episodes, seed=cfg.seed + EVAL_SEED, device=device, threads=cfg.env_threads
    )
    return dict(
        EvalRewMean=result["mean"],
        EvalRewStd=result["std"],
        EvalLenMean=float(np.mean(result["lengths"])),
        TimeEval=round(time.perf_counter() - start, 4),
    )


def summarize(scores: list[float], lengths: list[int], **info) -> dict:
    """The statistics of the games played (std is the population std, ddof=0), with the protocol."""
    a = np.asarray(scores, dtype=np.float64)
    protocol = info["protocol"]
    noop_max, sticky = protocol_settings(protocol)
    return dict(
        mean=float(a.mean()),
        std=float(a.std()),
        min=float(a.min()),
        max=float(a.max()),
        episodes=len(scores),
        scores=[float(s) for s in scores],
        lengths=[int(n) for n in lengths],
        protocol=protocol,
        deterministic=bool(info["deterministic"]),
        env_name=info["env_name"],
        checkpoint_step=info["checkpoint_step"],
        seed=info["seed"],
        num_envs=info["num_envs"],
        noop_max=noop_max,
        sticky=sticky,
        max_frames=MAX_FRAMES if protocol != "env" else None,
        frame_skip=FRAME_SKIP if protocol != "env" else None,
    )


# --- loading an agent from a run folder, for the commands ---------------------------------------


@dataclass
class Agent:
    policy: Policy
    cfg: Config  # the run's saved config (the env it was trained on), env_name as used now
    trained_env: str  # the env name it was trained under: sets the default protocol
    step: int  # agent steps trained (0 for an untrained policy)
    path: Path | None  # the checkpoint, None for an untrained policy

    @property
    def spec(self) -> EnvSpec:
        return parse_env_name(self.cfg.env_name)

    def describe(self) -> str:
        if self.path is None:
            return f"an untrained (random) policy, {self.cfg.model_type} network"
        return f"checkpoint {self.path} at step {self.step:,}"


def load_agent(
    *,
    env_name: str | None = None,
    checkpoint_dir: str | None = None,
    model_name: str | None = None,
    preset: str | None = None,
    allow_random: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Agent:
    """The policy of run `<checkpoint_dir>/<model_name>` (empty model_name: <Game>-<preset>), with
    the config it was trained under. env_name given explicitly must be the checkpoint's game.

    No checkpoint: ConfigError, unless allow_random, which builds a freshly initialized policy
    (seeded with `seed`) for the run's saved config.json, or for the flags given.
    """
    given = dict(env_name=env_name, checkpoint_dir=checkpoint_dir, model_name=model_name, preset=preset)
    given = {k: v for k, v in given.items() if v is not None}
    cfg = resolve(given)
    device = pick_device(device)
    run_dir = cfg.run_dir
    path = run_dir / checkpoint.CHECKPOINT
    state = None
    if path.exists():
        state = checkpoint.load(path, hint=checkpoint.AGENT_HINT)
        saved = state.get("config")
        if not isinstance(saved, dict):
            raise ConfigError(f"{path} holds no config; cannot rebuild its environment")
    elif allow_random:
        saved = _read_config_json(run_dir)
    else:
        raise ConfigError(
            f"no checkpoint in {run_dir} (no {checkpoint.CHECKPOINT}): train one with `ppo1 train`, "
            "or pass --allow_random to run an untrained policy"
        )
    if saved is not None:
        trained = parse_env_name(saved["env_name"])
        if env_name is not None and parse_env_name(env_name).game != trained.game:
            where = path if state is not None else run_dir / "config.json"
            raise ConfigError(
                f"{where} is a {trained.title} agent ({saved['env_name']}), "
                f"but --env_name {env_name} is {parse_env_name(env_name).title}"
            )
        keep = {k: v for k, v in given.items() if k != "env_name"}
        cfg = resolve(keep, base=saved)
        trained_env = saved["env_name"]
        if env_name is not None:
            cfg.env_name = env_name  # the same game; the protocol decides sticky actions / no-ops
    else:
        trained_env = cfg.env_name
    spec = parse_env_name(cfg.env_name)
    shape, actions, discrete = env_dims(spec, cfg.frame_stacking)

    def build() -> Policy:
        return make_policy(cfg.model_type, shape, actions, discrete, cfg.hid_size, cfg.num_hid_layers)

    if state is not None:
        actions = int(state.get("num_actions") or actions)
        policy = build()
        try:
            policy.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as e:
            first = first_line(e)
            raise ConfigError(f"checkpoint {path} does not fit its own config ({first[:160]})") from None
        step = int(state.get("counters", {}).get("timesteps", 0))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            policy = build()
        step = 0
    policy.to(device).eval()
    return Agent(policy, cfg, trained_env, step, path if state is not None else None)


def _read_config_json(run_dir: Path) -> dict | None:
    path = run_dir / "config.json"
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    if not isinstance(saved, dict) or "env_name" not in saved:
        raise ConfigError(f"{path} is not a ppo1 config")
    return saved


# --- the `ppo1 evaluate` command -----------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() else f"{x:.2f}"


def format_report(result: dict) -> str:
    lines = [
        f"{result['episodes']} games: mean {result['mean']:.2f}  std {result['std']:.2f}  "
        f"min {_fmt(result['min'])}  max {_fmt(result['max'])}",
        "scores: " + " ".join(_fmt(s) for s in result["scores"]),
        "lengths (agent steps): " + " ".join(str(n) for n in result["lengths"]),
    ]
    return "\n".join(lines)


def load_agent_from_args(args) -> Agent:
    """The flags evaluate, movie and play share: check them, then load the agent."""
    check_episodes(args.episodes)
    if args.protocol is not None:
        protocol_settings(args.protocol)
    if args.seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {args.seed}")
    set_threads(args.torch_threads)
    return load_agent(
        env_name=args.env_name,
        checkpoint_dir=args.checkpoint_dir,
        model_name=args.model_name,
        preset=args.preset,
        allow_random=args.allow_random,
        seed=args.seed,
        device=args.device,
    )


def run_evaluate(args) -> int:
    """`ppo1 evaluate`: every check that can fail on bad input runs before anything is written."""
    if args.num_envs is not None and args.num_envs < 1:
        raise ConfigError(f"--num_envs must be at least 1, got {args.num_envs}")
    agent = load_agent_from_args(args)
    json_path = Path(args.json) if args.json else None
    if json_path is not None and json_path.is_dir():
        raise ConfigError(f"--json {json_path} is a folder")
    protocol = args.protocol or default_protocol(parse_env_name(agent.trained_env))
    mode = "most likely actions" if args.deterministic else "sampled actions"
    print(
        f"{agent.spec.title} ({agent.cfg.env_name}), {agent.describe()}; protocol "
        f"{describe_protocol(protocol)}; {mode}; seed {args.seed}",
        flush=True,
    )
    result = evaluate(
        agent.policy,
        agent.cfg,
        args.episodes,
        protocol,
        args.deterministic,
        args.seed,
        args.device,
        num_envs=args.num_envs,
        threads=args.env_threads,
        progress=sys.stdout.isatty(),
        checkpoint_step=agent.step if agent.path is not None else None,
    )
    result["trained_env_name"] = agent.trained_env
    result["checkpoint"] = str(agent.path) if agent.path is not None else None
    print(format_report(result), flush=True)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_path.with_name(f".{json_path.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(json_path)
        print(f"wrote {json_path}", flush=True)
    return 0


def set_threads(torch_threads: int) -> None:
    from ppo1.envs import default_threads

    if torch_threads < 0:
        raise ConfigError(f"--torch_threads must be 0 or more, got {torch_threads}")
    torch.set_num_threads(torch_threads or default_threads())
