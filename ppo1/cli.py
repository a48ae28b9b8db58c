"""The ppo1 command: subcommands, flags from the Config and AgentOptions dataclasses, one-line errors
(exit 2). Building the parser loads neither torch nor ale-py; the handlers live in ppo1.commands."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
import sys
import textwrap
from dataclasses import MISSING, fields

from ppo1.config import CHOICES, DEVICES, PRESETS, Config
from ppo1.envspec import PROTOCOLS
from ppo1.errors import ConfigError, RankFailure, SaveError
from ppo1.options import AgentOptions


class UsageError(Exception):
    pass


class HelpFormatter(argparse.HelpFormatter):
    """Each flag once, as lucaslingle/ppo1 spells it (--env_name); --env-name works too, unlisted.
    Help starts in column 31, so that most flags and their help share a line."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=30)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)  # ppo-paper whole

    def _format_action_invocation(self, action: argparse.Action) -> str:
        names = action.option_strings
        if len(names) != 2 or names[1] != names[0].replace("_", "-"):
            return super()._format_action_invocation(action)
        if action.nargs == 0:
            return names[0]
        return f"{names[0]} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str):  # argparse prints usage + message; we want one line
        raise UsageError(message)


# train's flags under these headings, in this order; a test checks that every Config field has one.
FLAG_GROUPS = {
    "environment": "env_name frame_stacking episode_life clip_rewards num_envs env_threads env_groups",
    "PPO": "preset env_steps anneal_steps timesteps_per_actorbatch gamma lam epsilon ent_coef vf_coef "
    "norm_adv norm_adv_per_minibatch clip_vloss max_grad_norm optim_epochs optim_stepsize optim_batchsize "
    "schedule model_type pi_gain init hid_size num_hid_layers",
    "run and checkpoints": "seed model_name checkpoint_dir asset_dir save_interval device torch_threads",
    "logging and evaluation": "log_interval track wandb_project wandb_entity eval_interval eval_episodes "
    "capture_video",
    "distributed (torchrun, mpirun)": "sync_check_interval dist_timeout",
}


def field_docs(record: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it) of a dataclass, for --help."""
    tree = ast.parse(inspect.getsource(record))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
            docs[node.target.id] = nxt.value.value
    return docs


METAVARS = {"int": "N", "float": "X", "str": "NAME"}
FLAG_CHOICES = {**CHOICES, "device": DEVICES}  # what --help lists; the values are checked where used


def _int(text: str) -> int:
    """Integers, also written as 1e6 or 10_000_000."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _spellings(name: str) -> list[str]:
    """--env_name as lucaslingle/ppo1 spells it, and --env-name."""
    dashed = name.replace("_", "-")
    return [f"--{name}"] + ([f"--{dashed}"] if dashed != name else [])


def _short(value) -> str:
    """2000000 -> 2M, 100000 -> 100k, True -> on: values as --help shows them."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and value >= 10**5:
        for size, suffix in ((10**6, "M"), (10**3, "k")):
            if value % size == 0:
                return f"{value // size}{suffix}"
    return repr(value) if isinstance(value, str) else f"{value:g}"


def _defaults(f) -> str:
    """' (default: 0.99)', or each preset's value where presets differ: ' (wallclock: 2M; ...)'."""
    if f.default in ("", MISSING):
        return ""
    values: dict[str, list[str]] = {}
    for preset, settings in PRESETS.items():
        values.setdefault(_short(settings.get(f.name, f.default)), []).append(preset)
    if len(values) == 1:
        return f" (default: {next(iter(values))})"
    return " (" + "; ".join(f"{', '.join(presets)}: {v}" for v, presets in values.items()) + ")"


def _summary(doc: str) -> str:
    """A docstring's first sentence: --help's line for a field (the rest is in the README)."""
    head, dot, _ = " ".join(doc.split()).partition(". ")
    return head + ("." if dot else "")


def add_config_flags(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """One flag per Config field under its FLAG_GROUPS heading, help from the field's docstring;
    defaults stay None so we know which flags were given (they override the preset and a resumed
    run's config). Returns the groups by heading."""
    docs = field_docs(Config)
    by_name = {f.name: f for f in fields(Config)}
    groups = {}
    for title, names in FLAG_GROUPS.items():
        group = groups[title] = parser.add_argument_group(title)
        for name in names.split():
            f = by_name[name]
            help_text = f"{_summary(docs.get(name, ''))}{_defaults(f)}"
            if f.type in ("bool", bool):
                off = "" if f"--no_{name}" in help_text else f"; --no_{name} turns it off"
                group.add_argument(
                    *_spellings(name), dest=name, action="store_true", default=None, help=help_text + off
                )
                group.add_argument(
                    *_spellings(f"no_{name}"), dest=name, action="store_false", default=None,
                    help=argparse.SUPPRESS,
                )  # fmt: skip
                continue
            group.add_argument(
                *_spellings(name),
                dest=name,
                type={"int": _int, "float": _float}.get(str(f.type), str),
                default=None,
                choices=FLAG_CHOICES.get(name),
                metavar=None if name in FLAG_CHOICES else METAVARS[str(f.type)],
                help=help_text,
            )
    return groups


def build_parser() -> Parser:
    parser = Parser(prog="ppo1", description="PPO (baselines ppo1) for Atari, in PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train = sub.add_parser(
        "train",
        help="train (or resume) an agent",
        description="Train PPO; rerun the same command to resume. Flags given override the preset.",
        usage="ppo1 train [FLAG ...]",
    )
    groups = add_config_flags(train)
    groups["run and checkpoints"].add_argument(
        "--fresh",
        action="store_true",
        help="start over: move the old run folder aside (never deleted)",
    )
    add_agent_commands(sub)
    add_plot_command(sub)
    return parser


def _add_run_flags(parser: argparse.ArgumentParser, episodes: int) -> None:
    """The flags that find a run (as `ppo1 train` spells them) and play an agent's games: one per
    AgentOptions field, help from its docstring."""
    docs = field_docs(AgentOptions)
    choices = {**FLAG_CHOICES, "protocol": tuple(PROTOCOLS)}
    for f in fields(AgentOptions):
        default = episodes if f.name == "episodes" else f.default
        help_text = docs[f.name] + (
            "" if default in (None, False) or "(default" in docs[f.name] else f" (default: {default})"
        )
        if f.default is False:
            parser.add_argument(*_spellings(f.name), dest=f.name, action="store_true", help=help_text)
            continue
        kind = _int if f.type in ("int", "int | None") else None
        parser.add_argument(
            *_spellings(f.name),
            dest=f.name,
            type=kind,
            default=default,
            choices=choices.get(f.name),
            metavar=None if f.name in choices else ("FILE" if f.name == "checkpoint" else f.name.upper()),
            help=help_text,
        )


def _add_asset_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        *_spellings("asset_dir"),
        dest="asset_dir",
        metavar="ASSET_DIR",
        help="folder for the agent's files, each under <agent name>/: its run folder's name, or a "
        "checkpoint file's (default: assets)",
    )


def add_agent_commands(sub) -> None:
    """evaluate, movie and play."""
    ev = sub.add_parser(
        "evaluate",
        help="score an agent over full games",
        description="Play full games with a trained agent and report the real game scores.",
    )
    _add_run_flags(ev, episodes=10)
    ev.add_argument(
        "--json",
        metavar="FILE",
        nargs="?",
        const="",
        help="also write the results, with the protocol, to FILE; --json alone: to "
        "<asset_dir>/<agent name>/eval-<protocol>-step-<step>.json",
    )
    _add_asset_dir(ev)
    ev.add_argument(
        *_spellings("num_envs"),
        dest="num_envs",
        type=_int,
        help="games played at once (default: min(episodes, 16)); each env plays a fixed quota",
    )
    ev.add_argument(
        *_spellings("env_threads"),
        dest="env_threads",
        type=_int,
        default=0,
        help="ale-py emulator threads; 0 picks the number of cores",
    )

    movie = sub.add_parser(
        "movie",
        help="write an MP4 (or GIF) of an agent's games",
        description="Record full games in colour, one frame per agent step (15 fps = real time), "
        "to <asset_dir>/<model_name>/<Game>-score-<score>-step-<step>.mp4.",
    )
    _add_run_flags(movie, episodes=1)
    _add_asset_dir(movie)
    movie.add_argument("--gif", action="store_true", help="write a GIF instead of an MP4")
    movie.add_argument("--fps", type=_float, help="frames per second (default: 15, the game's speed)")
    movie.add_argument("--scale", type=_int, default=2, help="pixel scale of the 160x210 screen (default: 2)")
    movie.add_argument(
        "--max_frames",
        type=_int,
        default=0,
        help="record only the first this many frames of each game, which is still played to its end "
        "for the score in the file name (<...>-first<N>.<ext>); 0: the whole game (default: 0)",
    )

    play = sub.add_parser(
        "play",
        help="watch an agent play in a window",
        description="Show the agent playing in real time in ALE's window (needs a display).",
    )
    _add_run_flags(play, episodes=1)
    play.add_argument(
        "--fps",
        type=_float,
        help="agent steps per second at most (default: 15, the game's speed; ALE's window never runs "
        "the game faster than its own 60 frames/s, so more than 15 has no effect)",
    )


def add_plot_command(sub) -> None:
    """plot: learning curves from run folders."""
    plot = sub.add_parser(
        "plot",
        help="draw learning curves of runs",
        description="Learning curves (game score vs agent steps and vs frames) from run folders; runs "
        "named alike but for a -seedN / _sN suffix are drawn as a mean with a shaded spread.",
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (with monitor.csv)")
    plot.add_argument("-o", "--output", default="curve.png", help="image file (default: curve.png)")
    plot.add_argument(
        "--smooth", type=_int, default=100, help="games in the moving average of monitor.csv scores"
    )
    plot.add_argument(
        "--spread", choices=("minmax", "std"), default="minmax", help="band over seeds (default: minmax)"
    )
    plot.add_argument(
        "--reference",
        metavar="CSV",
        help="published points to draw beside the runs: a CSV with columns label,agent_steps,score "
        "(benchmarks/references/pong.csv: baselines ppo2, CleanRL and the PPO paper on Pong)",
    )
    plot.add_argument(
        "--max_steps",
        type=_float,
        metavar="N",
        help="draw up to N agent steps, e.g. 1.5e6 (default: all the runs and references reach)",
    )


def _elsewhere(parser: Parser, command: str, message: str) -> str:
    """An unknown flag that another command takes: say which (train --checkpoint: evaluate's)."""
    commands = parser._subparsers._group_actions[0].choices
    for flag in (w for w in message.split() if w.startswith("--")):
        owners = [c for c, sub in commands.items() if c != command and flag in sub._option_string_actions]
        if owners:
            message += f"; {flag} is a flag of {', '.join(owners)}"
    return message


def run(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        if "unrecognized arguments" not in str(e) or not argv:
            raise
        raise UsageError(_elsewhere(parser, argv[0], str(e))) from None
    if args.command is None:
        commands = ", ".join(parser._subparsers._group_actions[0].choices)
        raise UsageError(f"choose a command: {commands} (ppo1 COMMAND --help for its flags)")
    # The handlers load torch and ale-py: only now, so that --help and usage errors answer at once.
    commands = importlib.import_module("ppo1.commands")
    return getattr(commands, args.command)(args)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = run(argv)
    except (UsageError, ConfigError) as e:
        sub = argv[0] if argv and not argv[0].startswith("-") else ""
        print(f"ppo1{' ' + sub if sub else ''}: error: {e}", file=sys.stderr)
        code = 2
    except (RankFailure, FloatingPointError, SaveError) as e:  # the run stopped; its checkpoint is intact
        print(f"ppo1: error: {e}", file=sys.stderr)
        if isinstance(e, RankFailure):
            # Skip interpreter teardown: torch's process-group destructors can abort (SIGABRT)
            # when a peer is gone, which would turn this clean exit into a crash.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        code = 1
    sys.exit(code)
