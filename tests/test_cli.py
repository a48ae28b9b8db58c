"""The ppo1 command line: bad input gives one line and exit 2, writes nothing; flags; presets."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

import pytest
import torch

from ppo1.cli import build_parser
from ppo1.config import PRESETS, Config, ConfigError, resolve

# (flags after `ppo1 train`, text the one-line error must contain)
BAD_INPUT = {
    "unknown env": (["--env_name", "Pongg"], "did you mean Pong"),
    "unknown v4 env": (["--env_name", "BrekoutNoFrameskip-v4"], "BreakoutNoFrameskip-v4"),
    "negative env_steps": (["--env_steps", "-5"], "--env_steps"),
    "fractional env_steps": (["--env_steps", "1.5"], "integer"),
    "zero envs": (["--num_envs", "0"], "--num_envs"),
    "batch above horizon": (
        ["--optim_batchsize", "64", "--timesteps_per_actorbatch", "32"],
        "--optim_batchsize",
    ),
    "gamma above 1": (["--gamma", "1.5"], "--gamma"),
    "gamma not a number": (["--gamma", "abc"], "abc"),
    "gamma nan": (["--gamma", "nan"], "--gamma"),
    "lam negative": (["--lam", "-0.1"], "--lam"),
    "epsilon zero": (["--epsilon", "0"], "--epsilon"),
    "unknown flag": (["--learning_rate", "0.1"], "--learning_rate"),
    "bad model_type": (["--model_type", "huge"], "huge"),
    "bad preset": (["--preset", "atari-zoo"], "atari-zoo"),
    "model_name dotdot": (["--model_name", "../x"], "--model_name"),
    "model_name slash": (["--model_name", "a/b"], "--model_name"),
    "checkpoint_dir under a file": (["--checkpoint_dir", "blocker/runs"], "not a folder"),
    "no cuda": (["--device", "cuda"], "cuda"),
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory, cli):
    """Run every BAD_INPUT case as its own `python -m ppo1 train` in its own folder, two at a
    time (each process spends ~2 s importing torch). Returns case -> (process, before, after)."""
    cases = [c for c in BAD_INPUT if not (c == "no cuda" and torch.cuda.is_available())]

    def one(case):
        flags, _ = BAD_INPUT[case]
        cwd = tmp_path_factory.mktemp("bad")
        (cwd / "blocker").write_text("a regular file, not a folder\n")
        before = cli.snapshot(cwd)
        # Tiny valid settings first; the flags under test come last and win.
        p = cli.run(["train", *cli.TINY, "--env_steps", "64", *flags], cwd)
        return case, (p, before, cli.snapshot(cwd))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, cases))


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_one_line_exit_2_nothing_written(case, bad_input_runs):
    if case not in bad_input_runs:
        pytest.skip("a CUDA device is available here")
    p, before, after = bad_input_runs[case]
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), p.stderr
    assert lines[0].startswith("ppo1 train: error: ")
    assert BAD_INPUT[case][1] in lines[0]
    assert p.stdout == ""
    assert after == before


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
    values |= {"model_type": "large", "device": "cpu", "model_name": "x"}
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


def test_default_preset_is_the_ppo_paper():
    cfg = resolve({})
    assert cfg.preset == "ppo-paper" and PRESETS["ppo-paper"] == {}
    assert (cfg.timesteps_per_actorbatch, cfg.epsilon, cfg.optim_epochs) == (128, 0.1, 3)
    assert (cfg.optim_stepsize, cfg.optim_batchsize, cfg.num_envs) == (2.5e-4, 32, 8)


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
