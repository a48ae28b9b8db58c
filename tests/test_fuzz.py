"""Fuzzing `ppo1 train`'s flags with hypothesis: any combination either starts training or fails
with one line `ppo1 train: error: ...` and exit status 2, never a traceback.

The property test runs the real `ppo1.cli.main` in-process, in a fresh folder, capturing what it
writes to the file descriptors (C libraries included). Where the flags are valid, training starts
for real (config, checkpoint, envs, network, logs) and stops before its first step (stop_when),
so 150 examples take under a minute. Python warnings are pytest's in-process; the real-process
test sees them as a user does, on a few examples. Every registered gymnasium env name is tried too.
"""

import os
import signal
import tempfile
import time
from pathlib import Path
from unittest import mock

import gymnasium as gym
import pytest
from conftest import TINY_CONFIG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppo1.launch
from ppo1.cli import main

REAL_START = ppo1.launch.start

# Text that is no number in any script (no decimal digits), no NUL (argv cannot hold one).
WORDS = st.text(st.characters(blacklist_categories=("Nd", "Cs"), blacklist_characters="\x00"), max_size=8)
NOT_NUMBERS = st.sampled_from(["", "abc", "nan", "inf", "-inf", "1e999", "0x10", "1,5", "1/2", "--", "é"])


def ints(lo: int, hi: int):
    """Integers for a flag whose valid values are lo..hi (bounded where they cost memory or time),
    in every form the CLI reads; a quarter of the draws are not valid."""
    valid = st.integers(lo, hi)
    valid = st.one_of(
        valid.map(str),
        valid.map(lambda n: f"{n:.0e}" if n else "0e0"),  # 1e6, as the CLI allows (rounded: still valid)
        valid.map(lambda n: f"{n}.0"),
        valid.map(lambda n: f"{n:_}"),
    )
    invalid = st.one_of(
        st.integers(-(10**6), lo - 1).map(str),
        st.sampled_from(["1.5", "-0.5", "1e-3"]),
        NOT_NUMBERS,
        WORDS,
    )
    return st.one_of(valid, valid, valid, invalid)


def floats(lo: float, hi: float):
    """Numbers for a flag whose valid values lie in [lo, hi] (give or take an open bound)."""
    valid = st.floats(lo, hi, allow_nan=False).map(repr)
    invalid = st.one_of(
        st.floats(-1e3, 1e3, allow_nan=False).map(repr),
        st.sampled_from(["0", "1", "-1", "1e-300", "1e308", "-0.0"]),
        NOT_NUMBERS,
        WORDS,
    )
    return st.one_of(valid, valid, valid, invalid)


ENV_NAMES = [
    "Pong",
    "PongNoFrameskip-v4",
    "ALE/Breakout-v5",
    "Breakout",
    "CartPole-v1",
    "Pendulum-v1",
    "Pongg",
    "ALE/Pong-v4",
    "FrozenLake-v1",
    "HalfCheetah-v5",
    "LunarLander-v3",
    "\udcff",
]

# Unwritable even for root; a name too long for the file system; bytes that are not UTF-8 (what
# sys.argv holds for them).
ODD_PATHS = ["/proc/ppo1-runs", "x" * 300, "\udcff"]

# Flag (as the Config field spells it) -> its values. Flags not listed take no value.
VALUES = {
    "env_name": st.sampled_from(ENV_NAMES) | WORDS,
    "preset": st.sampled_from(["ppo-paper", "baselines-ppo1", "classic", "mujoco", "atari-zoo"]) | WORDS,
    "env_steps": ints(1, 10**12),
    "anneal_steps": ints(0, 10**12),
    "vf_coef": floats(0.0, 20.0),
    "max_grad_norm": floats(0.0, 1e7),
    "init": st.sampled_from(["normc", "orthogonal", "xavier"]) | WORDS,
    "num_envs": ints(1, 3),
    "timesteps_per_actorbatch": ints(1, 64),
    "gamma": floats(0.0, 1.0),
    "lam": floats(0.0, 1.0),
    "epsilon": floats(0.0, 1.0),
    "ent_coef": floats(0.0, 1.0),
    "optim_epochs": ints(1, 4),
    "optim_stepsize": floats(0.0, 1.0),
    "optim_batchsize": ints(1, 64),
    "schedule": st.sampled_from(["linear", "constant", "cosine"]) | WORDS,
    "model_type": st.sampled_from(["small", "large", "mlp", "huge"]) | WORDS,
    "hid_size": ints(1, 64),
    "num_hid_layers": ints(1, 3),
    "seed": ints(0, 2**31 - 1) | st.sampled_from(["2147483648", "4294967296", "9223372036854775808", "2e19"]),
    "model_name": st.sampled_from(["run", "a.b-c_d", "..", "../x", "a/b", "/tmp/x", ".x", "a" * 300]) | WORDS,
    "checkpoint_dir": st.sampled_from(["runs", "a/b", "blocker", "blocker/x", ".", "", *ODD_PATHS]),
    "asset_dir": st.sampled_from(["assets", "blocker", "", *ODD_PATHS]) | WORDS,
    "save_interval": ints(1, 10**9),
    "eval_interval": ints(0, 10**9),
    "eval_episodes": ints(1, 10**9),
    "device": st.sampled_from(["auto", "cpu", "cuda", "tpu"]),
    "torch_threads": ints(0, 2),
    "env_threads": ints(0, 2),
    "env_groups": ints(1, 3),
    "sync_check_interval": ints(1, 10**9),
    "dist_timeout": floats(1e-3, 1e9),
    "pi_gain": floats(0.0, 20.0),
    "log_interval": ints(1, 10**9),
    "wandb_project": st.sampled_from(["ppo1", ""]) | WORDS,
    "wandb_entity": st.sampled_from(["", "team"]) | WORDS,
}
# --track is left out: it would start W&B runs (tests/test_tracking.py runs it offline).
SWITCHES = ["frame_stacking", "episode_life", "clip_rewards", "capture_video", "norm_adv"]
SWITCHES += ["norm_adv_per_minibatch", "clip_vloss"]


@st.composite
def one_flag(draw) -> list[str]:
    """One flag as a user might type it: either spelling, `--flag value` or `--flag=value`, a
    switch or its `--no_` form, a flag with its value missing, or a flag that does not exist."""
    kind = draw(st.sampled_from(["value"] * 8 + ["switch"] * 2 + ["missing value", "unknown"]))
    if kind == "unknown":
        return [draw(st.sampled_from(["--learning_rate", "--env", "-x", "--", "pong", "--fresh=yes"]))]
    if kind == "switch":
        name = draw(st.sampled_from([*SWITCHES, "fresh"]))
        name = draw(st.sampled_from([name, f"no_{name}"])) if name != "fresh" else name
    else:
        name = draw(st.sampled_from(sorted(VALUES)))
    flag = draw(st.sampled_from([f"--{name}", f"--{name.replace('_', '-')}"]))
    if kind == "switch":
        return [flag]
    if kind == "missing value":
        return [flag]
    value = draw(VALUES[name])
    return [f"{flag}={value}"] if draw(st.booleans()) else [flag, value]


# conftest's tiny settings first (the flags drawn come later and override them), without the
# network, which follows the env (the preset's CNN, or an MLP): start-up then takes ~0.7 s instead
# of ~2 s. The env name gets a slot of its own: the checks that follow it run deep.
ANY_ENV = [w for k, v in TINY_CONFIG.items() if k != "model_type" for w in (f"--{k}", str(v))]
ARGVS = st.builds(
    lambda env, flags: ["train", *ANY_ENV, *env, *(token for flag in flags for token in flag)],
    st.sampled_from([[], ["--env_name"], ["--env-name"]]).flatmap(
        lambda flag: st.just([]) if not flag else VALUES["env_name"].map(lambda name: [*flag, name])
    ),
    st.lists(one_flag(), max_size=4),
)


def start_and_stop(overrides: dict, fresh: bool = False):
    """Everything `ppo1 train` does until the first step; then it saves and returns."""
    return REAL_START(overrides, fresh=fresh, stop_when=lambda trainer: True)


def run_in(folder: Path, argv: list[str], capfd, start=start_and_stop) -> tuple[int, str, str]:
    """`ppo1 ARGV` in-process in folder: exit status, stdout, stderr. Anything but SystemExit
    propagates: that is the traceback a user would have seen."""
    capfd.readouterr()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with mock.patch("ppo1.commands.start", start):
            main(argv)
    except SystemExit as e:
        out, err = capfd.readouterr()
        return e.code, out, err
    finally:
        os.chdir(cwd)
    raise AssertionError("main() returned without sys.exit")


def check(code, out: str, err: str) -> None:
    """Started (and saved a checkpoint before its first step), or one line and status 2."""
    if code == 0:
        assert "run folder" in out and "saved" in out, out
        assert "Traceback" not in err, err
    else:
        lines = err.splitlines()
        assert code == 2, err
        assert len(lines) == 1 and lines[0].startswith("ppo1 train: error: "), err


def in_fresh_folder(argv: list[str], capfd, start=start_and_stop) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "blocker").write_text("a regular file, not a folder\n")
        return run_in(Path(folder), argv, capfd, start)


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run and machine
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(argv=ARGVS)
def test_any_flags_start_training_or_fail_in_one_line(argv, capfd):
    check(*in_fresh_folder(argv, capfd))


GYM_IDS = sorted(k for k, v in gym.registry.items() if not str(v.entry_point).startswith("ale_py"))


# Old ids (CartPole-v0) are tried on purpose; gymnasium's advice to upgrade them is not news here.
@pytest.mark.filterwarnings("ignore:.*is out of date:DeprecationWarning")
@pytest.mark.parametrize("env_name", GYM_IDS)
def test_every_gymnasium_env_name_starts_or_fails_in_one_line(env_name, capfd):
    check(*in_fresh_folder(["train", *ANY_ENV, "--env_name", env_name], capfd))


class Started(Exception):
    pass


def _started(overrides, fresh=False):
    raise Started


def passes_the_flag_checks(argv: list[str]) -> bool:
    """The CLI gets as far as starting training (which is not run)."""
    with tempfile.TemporaryDirectory() as folder:
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            with mock.patch("ppo1.commands.start", _started):
                main(argv)
        except Started:
            return True
        except (SystemExit, Exception):  # exit 2, or a crash: the in-process tests report those
            return False
        finally:
            os.chdir(cwd)
    return False


def training(folder: Path) -> bool:
    """The first iteration is logged: the loop runs, with its SIGTERM handler in place."""
    return any(p.stat().st_size > 0 for p in folder.rglob("progress.csv"))


@pytest.mark.slow
@settings(max_examples=6, deadline=None, derandomize=True, database=None)
@given(argv=st.one_of(ARGVS.filter(passes_the_flag_checks), ARGVS))
def test_any_flags_in_a_real_process(argv, tmp_path_factory, cli):
    """As a user runs it: one line and status 2, or training that, once it has logged its first
    iteration, takes SIGTERM, saves and exits 0 (or finished already)."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "blocker").write_text("a regular file, not a folder\n")
    p = cli.popen(argv, folder)
    try:
        deadline = time.monotonic() + 180
        while p.poll() is None and not training(folder) and time.monotonic() < deadline:
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert "Traceback" not in err, (argv, err[-3000:])
    if p.returncode == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ppo1 train: error: "), (argv, err)
    else:
        assert p.returncode == 0, (argv, p.returncode, out[-2000:], err[-2000:])
        assert "SIGTERM: saved" in out or "stopped at step" in out, out[-2000:]
