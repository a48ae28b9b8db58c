"""The ppo1 command line: bad input gives one line and exit 2, writes nothing; flags; presets."""

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from conftest import TINY, TINY_CONFIG, Exploit, one_error_line, snapshot

from ppo1.cli import build_parser, main
from ppo1.config import PRESETS, Config, resolve
from ppo1.errors import ConfigError

RUN = ["--model_name", "mine"]  # the run folder the setups below fill: checkpoints/mine


class Case(NamedTuple):
    flags: list[str]  # after `ppo1 <command>`; train gets tiny valid flags first, these last win
    says: str | tuple[str, ...]  # what the one line must contain
    setup: Callable[[Path, Path], None] | None = None  # (case folder, a real checkpoint), before the snapshot
    command: str = "train"
    without: tuple[str, ...] = ()  # modules that cannot be imported, as if an extra were not installed
    carries_code: bool = False  # the checkpoint's pickle would touch MARKER if unpickled unsafely


def mine(cwd: Path) -> Path:
    run_dir = cwd / "checkpoints" / "mine"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / "checkpoint.pt"


def copy(cwd, real):
    """The real checkpoint: 64 steps of Pong, small network, 4 stacked frames."""
    mine(cwd).write_bytes(real.read_bytes())


def truncated(cwd, real):
    data = real.read_bytes()
    mine(cwd).write_bytes(data[: len(data) // 2])


def damaged(cwd, real):
    """16 bytes flipped in the middle of the weights; the zip's structure is intact."""
    data = bytearray(real.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    mine(cwd).write_bytes(bytes(data))


def fewer_actions(cwd, real):
    """A Pong checkpoint whose policy has 4 actions (Pong has 6): as from an ALE with another
    minimal action set. Every other field is real."""
    state = torch.load(real, map_location="cpu", weights_only=True)
    state["num_actions"] = 4
    for name in ("logits.weight", "logits.bias"):
        state["model"][name] = state["model"][name][:4].clone()
    torch.save(state, mine(cwd))


def not_ppo1(cwd, real):
    torch.save({"weights": torch.zeros(3)}, mine(cwd))


def code_in_torch_save(cwd, real):
    torch.save({"format_version": 1, "model": Exploit(cwd / "MARKER")}, mine(cwd))


# Every numeric flag of `ppo1 train`: a value of the wrong type (given as --flag=value), a value out
# of range.
NUMERIC = {
    "--env_steps": ("1.5", "-5"),
    "--num_envs": ("four", "0"),
    "--timesteps_per_actorbatch": ("1e999", "0"),
    "--gamma": ("abc", "1.5"),
    "--lam": ("0.9x", "-0.1"),
    "--epsilon": ("", "0"),
    "--ent_coef": ("inf", "-0.01"),
    "--optim_epochs": ("3.0.0", "0"),
    "--optim_stepsize": ("1e-3e", "1"),
    "--optim_batchsize": ("8.5", "64"),  # above --timesteps_per_actorbatch 32: larger than the batch
    "--seed": ("0x10", "-1"),
    "--save_interval": ("ten", "0"),
    "--torch_threads": ("1.5", "-1"),
    "--env_threads": ("two", "-2"),
    "--env_groups": ("1/2", "3"),  # above --num_envs 2
    "--sync_check_interval": ("[1]", "0"),
    "--dist_timeout": ("-inf", "0"),
    "--hid_size": ("64.5", "0"),
    "--num_hid_layers": ("two", "0"),
    "--eval_interval": ("1e", "-1"),
    "--eval_episodes": ("5x", "0"),
    "--pi_gain": ("wide", "0"),
    "--log_interval": ("ten", "0"),
    "--anneal_steps": ("1e7x", "-1"),
    "--vf_coef": ("half", "0"),
    "--max_grad_norm": ("0.5.5", "-0.5"),
}

BAD_INPUT = {
    **{
        f"{flag} wrong type": Case([f"{flag}={bad}"], (flag, f"got {bad!r}"))
        for flag, (bad, _) in NUMERIC.items()
    },
    **{f"{flag} out of range": Case([flag, bad], flag) for flag, (_, bad) in NUMERIC.items()},
    "gamma nan": Case(["--gamma", "nan"], ("--gamma", "finite")),
    "dashed spelling, wrong type": Case(["--num-envs", "2.5"], ("--num_envs", "integer")),
    "flag without its value": Case(["--gamma"], ("--gamma", "expected one argument")),
    "switch given a value": Case(["--fresh=yes"], ("--fresh", "yes")),
    "unknown flag": Case(["--learning_rate", "0.1"], "--learning_rate"),
    "unknown env": Case(["--env_name", "Pongg"], "did you mean Pong"),
    "unknown v4 env": Case(["--env_name", "BrekoutNoFrameskip-v4"], "BreakoutNoFrameskip-v4"),
    "unknown v5 env": Case(["--env_name", "ALE/Pongg-v5"], "ALE/Pong-v5"),
    "bad model_type": Case(["--model_type", "huge"], "huge"),
    "bad init": Case(["--init", "xavier"], "xavier"),
    "orthogonal init for an mlp": Case(
        ["--env_name", "CartPole-v1", "--model_type", "mlp", "--init", "orthogonal"], "--init orthogonal"
    ),
    "bad preset": Case(["--preset", "atari-zoo"], "atari-zoo"),
    "model_name dotdot": Case(["--model_name", "../x"], "--model_name"),
    "model_name is dotdot": Case(["--model_name", ".."], "--model_name"),
    "model_name slash": Case(["--model_name", "a/b"], "--model_name"),
    "model_name absolute": Case(["--model_name", "/tmp/x"], "--model_name"),
    "model_name too long for a folder": Case(["--model_name", "a" * 300], "--model_name"),
    "checkpoint_dir under a file": Case(["--checkpoint_dir", "blocker/runs"], "not a folder"),
    # Root may write anywhere permissions guard; /proc refuses even root.
    "checkpoint_dir unwritable": Case(
        ["--checkpoint_dir", "/proc/ppo1-runs"],
        ("--checkpoint_dir", "cannot create folders in /proc (it takes"),
    ),
    "no cuda": Case(["--device", "cuda"], "cuda"),
    "mlp for Atari frames": Case(["--model_type", "mlp"], "--model_type mlp"),
    "CNN for CartPole": Case(["--env_name", "CartPole-v1", "--model_type", "small"], "--model_type mlp"),
    "capture_video without evaluations": Case(["--capture_video"], "--eval_interval"),
    "capture_video, video extra not installed": Case(
        ["--capture_video", "--eval_interval", "1"], "[video]", without=("imageio", "imageio_ffmpeg")
    ),
    "MuJoCo env, mujoco extra not installed": Case(
        ["--env_name", "HalfCheetah-v5"], "[mujoco]", without=("mujoco",)
    ),
    "checkpoint of another game and action space": Case(
        [*RUN, "--env_name", "Breakout"], "game Pong, not Breakout", copy
    ),
    "checkpoint of another network": Case(
        [*RUN, "--model_type", "large"], "--model_type small, not large", copy
    ),
    "checkpoint of another observation shape": Case(
        [*RUN, "--no_frame_stacking"], "frame stacking True, not False", copy
    ),
    "checkpoint with another action count": Case(RUN, "actions 4, not 6", fewer_actions),
    "checkpoint truncated": Case(RUN, ("cannot load checkpoint", "--fresh"), truncated),
    "checkpoint damaged": Case(RUN, ("cannot load checkpoint", "CRC", "--fresh"), damaged),
    "checkpoint not of ppo1": Case(RUN, "not a ppo1 checkpoint", not_ppo1),
    "checkpoint carrying code (torch.save)": Case(
        RUN, "cannot load checkpoint", code_in_torch_save, carries_code=True
    ),
    "evaluate: checkpoint damaged": Case(
        RUN, ("cannot load checkpoint", "pick another run"), damaged, "evaluate"
    ),
    "evaluate: checkpoint of another game": Case(
        [*RUN, "--env_name", "Breakout"], "is a Pong agent", copy, "evaluate"
    ),
    "evaluate: no checkpoint": Case(RUN, "--allow_random", command="evaluate"),
    "movie: video extra not installed": Case(
        RUN, "[video]", copy, "movie", without=("imageio", "imageio_ffmpeg")
    ),
}


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    """64 steps of Pong on the small network, trained in this process: the cases' checkpoints start
    from it."""
    from ppo1.launch import start

    root = tmp_path_factory.mktemp("real")
    start({**TINY_CONFIG, "env_steps": 64, "checkpoint_dir": str(root), "model_name": "pong"})
    return root / "pong" / "checkpoint.pt"


def run_case(case: str, cwd: Path, real: Path, monkeypatch, capsys) -> tuple[int, str, str, dict, dict]:
    """BAD_INPUT[case] as `ppo1 ...` in this process, in its own folder: (exit status, stdout, stderr,
    the folder before, after). An extra "not installed" is a module that fails to import."""
    c = BAD_INPUT[case]
    (cwd / "blocker").write_text("a regular file, not a folder\n")
    if c.setup is not None:
        c.setup(cwd, real)
    before = snapshot(cwd)
    for module in c.without:
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    monkeypatch.chdir(cwd)
    argv = [c.command, *TINY, "--env_steps", "64"] if c.command == "train" else [c.command]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, *c.flags])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err, before, snapshot(cwd)


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_one_line_exit_2_nothing_written(case, tmp_path, real_checkpoint, monkeypatch, capsys):
    """In this process (no process boundary is under test here; see the real-process cases below)."""
    if case == "no cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    c = BAD_INPUT[case]
    code, out, err, before, after = run_case(case, tmp_path, real_checkpoint, monkeypatch, capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in err + out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), err
    assert lines[0].startswith(f"ppo1 {c.command}: error: ")
    for text in (c.says,) if isinstance(c.says, str) else c.says:
        assert text in lines[0]
    assert out == ""
    assert after == before
    assert not (tmp_path / "MARKER").exists()
    if c.carries_code:  # the code was really there: loaded without weights_only, it runs
        torch.load(tmp_path / "checkpoints" / "mine" / "checkpoint.pt", weights_only=False)
        assert (tmp_path / "MARKER").exists()


# The same through a real `python -m ppo1` process, for a few cases: what a user's shell sees, with
# the interpreter's own start-up and teardown.
IN_A_PROCESS = ["unknown flag", "checkpoint damaged", "capture_video, video extra not installed"]


@pytest.mark.slow
@pytest.mark.parametrize("case", IN_A_PROCESS)
def test_bad_input_in_a_real_process(case, tmp_path, real_checkpoint, cli):
    c = BAD_INPUT[case]
    (tmp_path / "blocker").write_text("a regular file, not a folder\n")
    if c.setup is not None:
        c.setup(tmp_path, real_checkpoint)
    without = tmp_path.parent / f"{tmp_path.name}-without"  # on PYTHONPATH: modules that fail to import
    without.mkdir()
    for module in c.without:
        message = f"No module named {module!r}"  # what Python says of a package not installed
        (without / f"{module}.py").write_text(f"raise ModuleNotFoundError({message!r}, name={module!r})\n")
    before = cli.snapshot(tmp_path)
    argv = [c.command, *TINY, "--env_steps", "64"] if c.command == "train" else [c.command]
    p = cli.run([*argv, *c.flags], tmp_path, env={"PYTHONPATH": str(without)} if c.without else None)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ppo1 {c.command}: error: ")
    assert all(text in lines[0] for text in ((c.says,) if isinstance(c.says, str) else c.says))
    assert cli.snapshot(tmp_path) == before


def test_every_numeric_flag_has_a_wrong_type_and_a_wrong_range_case():
    """The table above covers every int and float field of Config (a new one needs its two cases)."""
    numeric = {f"--{f.name}" for f in fields(Config) if f.type in ("int", "float", int, float)}
    assert numeric == set(NUMERIC)
    for flag in NUMERIC:
        assert f"{flag} wrong type" in BAD_INPUT and f"{flag} out of range" in BAD_INPUT


def test_no_subcommand(tmp_path, cli):
    p = cli.run([], tmp_path)
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr
    assert cli.snapshot(tmp_path) == {}


def test_corrupt_checkpoint_in_run_folder(tmp_path, cli):
    run_dir = tmp_path / "checkpoints" / "mine"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    (run_dir / "progress.csv").write_text("TimestepsSoFar\n64\n128\n")
    before = cli.snapshot(tmp_path)
    p = cli.run(["train", "--model_name", "mine", *cli.TINY], tmp_path)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr
    assert "--fresh" in p.stderr
    assert cli.snapshot(tmp_path) == before


def test_corrupt_checkpoint_unusual_bytes(tmp_path, cli):
    run_dir = tmp_path / "checkpoints" / "mine"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"h\x05.")
    p = cli.run(["train", "--model_name", "mine", *cli.TINY], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr


SEED_FLAGS = (
    "--env_name --env_steps --timesteps_per_actorbatch --gamma --lam --epsilon --ent_coef "
    "--optim_epochs --optim_stepsize --optim_batchsize --seed --model_type --model_name "
    "--checkpoint_dir --asset_dir --no_frame_stacking --preset --num_envs --device "
    "--torch_threads --schedule --save_interval --fresh"
).split()


def test_help_lists_every_flag(tmp_path, cli):
    p = cli.run(["train", "--help"], tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    words = set(p.stdout.replace(",", " ").split())
    missing = [f for f in SEED_FLAGS if f not in words]
    assert missing == []
    # Help text comes from the Config field docs, with the preset overrides.
    assert "Discount factor." in p.stdout
    assert "baselines-ppo1: 256" in " ".join(p.stdout.split())
    assert cli.snapshot(tmp_path) == {}


def test_dashed_spellings_and_integer_forms():
    args = build_parser().parse_args(
        [
            "train",
            "--env-steps",
            "1e6",
            "--num-envs",
            "3",
            "--optim_batchsize",
            "10_000",
            "--no-frame-stacking",
        ]
    )
    assert args.command == "train"
    assert args.env_steps == 1_000_000 and isinstance(args.env_steps, int)
    assert args.num_envs == 3 and args.optim_batchsize == 10_000
    assert args.frame_stacking is False
    # Flags not given stay None, so presets and a resumed config are not overridden.
    assert args.gamma is None and args.model_type is None and args.fresh is False
    assert build_parser().parse_args(["train", "--frame_stacking"]).frame_stacking is True


def test_every_config_field_has_a_flag():
    parser = build_parser()
    values = {"env_name": "Pong", "preset": "ppo-paper", "schedule": "constant"}
    values |= {"model_type": "large", "device": "cpu", "model_name": "x", "init": "orthogonal"}
    for f in fields(Config):
        if f.type in ("bool", bool):
            assert getattr(parser.parse_args(["train", f"--no_{f.name}"]), f.name) is False
            assert getattr(parser.parse_args(["train", f"--{f.name}"]), f.name) is True
        else:
            args = parser.parse_args(["train", f"--{f.name}", values.get(f.name, "1")])
            assert getattr(args, f.name) is not None, f.name


def test_baselines_preset():
    cfg = resolve({"preset": "baselines-ppo1"})
    assert cfg.timesteps_per_actorbatch == 256
    assert cfg.epsilon == 0.2
    assert cfg.optim_epochs == 4
    assert cfg.optim_stepsize == 1e-3
    assert cfg.optim_batchsize == 64
    assert cfg.model_type == "large"
    assert cfg.frame_stacking is False
    # Unchanged from the defaults.
    assert (cfg.gamma, cfg.lam, cfg.ent_coef) == (0.99, 0.95, 0.01)
    assert cfg.run_name == "Pong-baselines-ppo1"


def test_explicit_flags_win_over_the_preset():
    cfg = resolve({"preset": "baselines-ppo1", "epsilon": 0.1, "model_type": "small", "frame_stacking": True})
    assert (cfg.epsilon, cfg.model_type, cfg.frame_stacking) == (0.1, "small", True)
    assert cfg.timesteps_per_actorbatch == 256  # the rest of the preset still applies


def test_default_preset_is_wallclock_and_ppo_paper_is_the_dataclass():
    """No flags: wallclock (the paper's settings with minibatches of 4 x 8 on the Nature network, 2M
    steps); --preset ppo-paper: the PPO paper's Table 5, the Config defaults unchanged."""
    cfg = resolve({})
    assert cfg.preset == "wallclock" and cfg.run_name == "Pong-wallclock"
    assert (cfg.env_steps, cfg.optim_batchsize, cfg.model_type) == (2_000_000, 4, "large")
    paper = resolve({"preset": "ppo-paper"})
    assert PRESETS["ppo-paper"] == {} and paper.run_name == "Pong-ppo-paper"
    assert (paper.timesteps_per_actorbatch, paper.epsilon, paper.optim_epochs) == (128, 0.1, 3)
    assert (paper.optim_stepsize, paper.optim_batchsize, paper.num_envs) == (2.5e-4, 32, 8)
    assert (paper.env_steps, paper.model_type) == (10_000_000, "small")


def test_saved_config_sits_between_preset_and_flags():
    saved = resolve({"preset": "baselines-ppo1", "gamma": 0.9, "num_envs": 4}).to_dict()
    cfg = resolve({"num_envs": 2}, base=saved)
    assert cfg.preset == "baselines-ppo1"
    assert cfg.gamma == 0.9 and cfg.num_envs == 2 and cfg.timesteps_per_actorbatch == 256


def test_resolve_rejects_bad_values():
    with pytest.raises(ConfigError, match="--optim_batchsize"):
        resolve({"preset": "baselines-ppo1", "timesteps_per_actorbatch": 32})
    with pytest.raises(ConfigError, match="unknown --preset"):
        resolve({"preset": "nope"})


def test_bare_ppo1_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    commands = "train, evaluate, movie, play, plot"
    assert lines == [f"ppo1: error: choose a command: {commands} (ppo1 COMMAND --help for its flags)"]


def test_a_flag_of_another_command_is_named_once_and_abbreviations_are_refused(capsys):
    line = one_error_line(capsys, ["train", "--checkpoint", "x.pt"])
    assert "ambiguous" not in line and line.count("--checkpoint_dir") == 0
    assert line.endswith(
        "unrecognized arguments: --checkpoint x.pt; --checkpoint is a flag of evaluate, movie, play"
    )
    line = one_error_line(capsys, ["train", "--env_step", "10"])  # not taken for --env_steps
    assert line.endswith("unrecognized arguments: --env_step 10")


def test_train_help_shows_each_flag_once_grouped_with_the_choices(tmp_path, cli):
    from ppo1.cli import FLAG_GROUPS

    grouped = [name for names in FLAG_GROUPS.values() for name in names.split()]
    assert sorted(grouped) == sorted(f.name for f in fields(Config))  # every field, once
    p = cli.run(["train", "--help"], tmp_path)
    assert p.returncode == 0
    shown = re.findall(r"^  (--\w+)", p.stdout, re.M)
    assert sorted(shown) == sorted([f"--{n}" for n in grouped] + ["--fresh"])
    assert "--env-steps" not in p.stdout and "--no_norm_adv turns it off" in p.stdout
    headings = re.findall(r"^(\S[^:\n]*):$", p.stdout, re.M)
    assert headings == ["options", *FLAG_GROUPS]
    assert "--preset {wallclock,ppo-paper,baselines-ppo1,mujoco,classic}" in p.stdout
    assert "(wallclock: 2M; ppo-paper, baselines-ppo1: 10M;" in " ".join(p.stdout.split())


def test_train_help_fits_130_lines_at_80_columns(tmp_path, cli):
    """Every flag, each on a line or two: a help that fits two screens."""
    p = cli.run(["train", "--help"], tmp_path, env={"COLUMNS": "80"})
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and max(map(len, lines)) <= 80
    assert len(lines) <= 130, len(lines)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        [],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["train", "--gamma", "abc"],
        ["play", "--x"],
    ],
)
def test_help_and_usage_errors_load_neither_torch_nor_ale_py(argv):
    """`ppo1 --help`, bare `ppo1`, a command's help and a usage error answer before torch, ale-py or
    gymnasium are imported: at Python's start-up speed (the handlers load them after parsing)."""
    code = (
        "import sys\nfrom ppo1.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('loaded:', sorted(m for m in ('torch', 'ale_py', 'gymnasium', 'numpy') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert p.stdout.splitlines()[-1] == "loaded: []", p.stdout[-500:] + p.stderr[-500:]
