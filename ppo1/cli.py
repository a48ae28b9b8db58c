"""The ppo1 command: subcommands, flags from the Config dataclass, one-line errors (exit 2)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields

from ppo1.config import CHOICES, PRESETS, Config, ConfigError, field_docs
from ppo1.distributed import RankFailure


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; we want one line
        raise UsageError(message)


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
    """--env_name as the seed spells it, and --env-name."""
    dashed = name.replace("_", "-")
    return [f"--{name}"] + ([f"--{dashed}"] if dashed != name else [])


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field, help from the field's docstring; defaults stay None so we
    know which flags were given (they override the preset and a resumed run's config)."""
    docs = field_docs()
    preset_note = {k: v for k, v in PRESETS.items() if v}
    for f in fields(Config):
        default = f.default if f.default is not MISSING else None
        help_text = f"{docs.get(f.name, '')} (default: {default!r}"
        overridden = [p for p, d in preset_note.items() if f.name in d]
        help_text += "".join(f"; {p}: {PRESETS[p][f.name]!r}" for p in overridden) + ")"
        if f.type in ("bool", bool):
            parser.add_argument(
                *_spellings(f.name), dest=f.name, action="store_true", default=None, help=help_text
            )
            parser.add_argument(
                *_spellings(f"no_{f.name}"),
                dest=f.name,
                action="store_false",
                default=None,
                help=f"Turn off --{f.name}.",
            )
            continue
        kind = {"int": _int, "float": _float}.get(str(f.type), str)
        parser.add_argument(
            *_spellings(f.name),
            dest=f.name,
            type=kind,
            default=None,
            choices=CHOICES.get(f.name),
            metavar=f.name.upper(),
            help=help_text,
        )


def build_parser() -> Parser:
    parser = Parser(prog="ppo1", description="PPO (baselines ppo1) for Atari, in PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train = sub.add_parser(
        "train",
        help="train (or resume) an agent",
        description="Train PPO; rerun the same command to resume.",
    )
    add_config_flags(train)
    train.add_argument(
        "--fresh",
        action="store_true",
        help="start over: move the old run folder aside (never deleted)",
    )
    return parser


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        from ppo1.train import start

        fresh = args.fresh
        overrides = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "fresh")}
        start(overrides, fresh=fresh)
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = run(argv)
    except (UsageError, ConfigError) as e:
        sub = argv[0] if argv and not argv[0].startswith("-") else ""
        print(f"ppo1{' ' + sub if sub else ''}: error: {e}", file=sys.stderr)
        code = 2
    except (RankFailure, FloatingPointError) as e:  # the run stopped; its checkpoint is intact
        print(f"ppo1: error: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)
