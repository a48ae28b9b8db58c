"""Beyond pixels: MlpPolicy (Gaussian and categorical), the observation normalizer (one process and
two real ranks), any gymnasium env with a flat Box observation, presets chosen by env."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ppo1 import distributed
from ppo1.config import resolve
from ppo1.envs import VecEnv
from ppo1.envspec import parse_env_name
from ppo1.policies import MlpPolicy, RunningMeanStd

MLP_TINY = ["--num_envs", "2", "--timesteps_per_actorbatch", "64", "--optim_batchsize", "16"]
MLP_TINY += ["--optim_epochs", "2", "--torch_threads", "1"]


def test_gaussian_log_prob_and_entropy_match_the_closed_forms():
    torch.manual_seed(0)
    policy = MlpPolicy(5, 3, continuous=True)
    with torch.no_grad():
        policy.logstd.copy_(torch.tensor([-0.5, 0.0, 0.7]))
    obs = torch.randn(16, 5)
    pd, _ = policy.dist(obs)
    mean, _ = policy(obs)
    std = torch.tensor([-0.5, 0.0, 0.7]).exp()
    a = mean.detach() + std * torch.randn(16, 3)
    # log N(a; mu, sigma) summed over dimensions, entropy of a diagonal Gaussian.
    want = (-((a - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(pd.log_prob(a), want)
    want_ent = (std.log() + 0.5 * math.log(2 * math.pi * math.e)).sum().expand(16)
    torch.testing.assert_close(pd.entropy(), want_ent)
    # act() writes the same formulas out: its log-probs are dist()'s for its own draws.
    actions, log_probs, values = policy.act(obs)
    with torch.no_grad():
        pd, v = policy.dist(obs)
        torch.testing.assert_close(pd.log_prob(actions.clone()), log_probs.clone())
        torch.testing.assert_close(v, values.clone())


def test_categorical_mlp_act_matches_dist():
    torch.manual_seed(1)
    policy = MlpPolicy(4, 2, continuous=False)
    obs = torch.randn(32, 4)
    actions, log_probs, _ = policy.act(obs)
    with torch.no_grad():
        pd, _ = policy.dist(obs)
        torch.testing.assert_close(pd.log_prob(actions.clone()), log_probs.clone())


def test_mlp_init_is_baselines():
    policy = MlpPolicy(11, 3, continuous=True)
    hidden = [m for m in policy.pi if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in hidden] == [(64, 11), (64, 64), (3, 64)]
    torch.testing.assert_close(hidden[0].weight.norm(dim=1), torch.ones(64))  # normc 1.0
    torch.testing.assert_close(hidden[-1].weight.norm(dim=1), torch.full((3,), 0.01))  # normc 0.01
    assert all((m.bias == 0).all() for m in hidden)
    assert torch.equal(policy.logstd, torch.zeros(3))
    assert any(isinstance(m, torch.nn.Tanh) for m in policy.vf)


def test_normalizer_matches_numpy_over_a_stream():
    rng = np.random.default_rng(0)
    stream = [rng.normal(3.0, [0.5, 2.0, 10.0], size=(n, 3)) for n in (7, 100, 1, 500)]
    rms = RunningMeanStd((3,))
    for chunk in stream:
        rms.update(torch.from_numpy(chunk))
    x = np.concatenate(stream)
    # baselines' pseudo-count: sum 0, sum of squares 1e-2, count 1e-2 before any data.
    n = len(x) + 1e-2
    np.testing.assert_allclose(rms.mean.numpy(), x.sum(0) / n, rtol=1e-12)
    var = (np.square(x).sum(0) + 1e-2) / n - (x.sum(0) / n) ** 2
    np.testing.assert_allclose(rms.std.numpy(), np.sqrt(var), rtol=1e-10)
    # ... which for a long stream is numpy's mean and (population) std.
    np.testing.assert_allclose(rms.mean.numpy(), x.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.std.numpy(), x.std(0), rtol=1e-3)
    # The std floor (0.1) for a constant feature.
    flat = RunningMeanStd((1,))
    flat.update(torch.full((50, 1), 4.0))
    assert float(flat.std) == pytest.approx(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _normalizer_worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    d = distributed.init(30.0, torch.device("cpu"))
    rms = RunningMeanStd((2,))
    rng = np.random.default_rng(rank)
    for n in (5, 40):
        rms.update(torch.from_numpy(rng.normal(rank * 5.0, 1.0 + rank, size=(n, 2))), d.sum)
    torch.save({"mean": rms.mean, "std": rms.std, "count": rms.count}, f"{out}.{rank}")
    distributed.shutdown()


def test_normalizer_across_two_ranks_is_the_pooled_stream(tmp_path):
    out = str(tmp_path / "rms")
    mp.spawn(_normalizer_worker, args=(_free_port(), out), nprocs=2, join=True)
    pooled = RunningMeanStd((2,))
    for rank in (0, 1):
        rng = np.random.default_rng(rank)
        for n in (5, 40):
            pooled.update(torch.from_numpy(rng.normal(rank * 5.0, 1.0 + rank, size=(n, 2))))
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        torch.testing.assert_close(got["mean"], pooled.mean)
        torch.testing.assert_close(got["std"], pooled.std)
        assert float(got["count"]) == pytest.approx(90.01)


def test_presets_are_chosen_by_env():
    assert resolve({"env_name": "CartPole-v1"}).preset == "classic"
    assert resolve({"env_name": "Pendulum-v1"}).model_type == "mlp"
    assert resolve({"env_name": "PongNoFrameskip-v4"}).preset == "wallclock"
    from ppo1.config import PRESETS

    m = PRESETS["mujoco"]  # baselines run_mujoco.py / PPO paper Table 3
    assert (m["timesteps_per_actorbatch"], m["epsilon"], m["ent_coef"], m["optim_epochs"]) == (
        2048,
        0.2,
        0.0,
        10,
    )
    assert (m["optim_stepsize"], m["optim_batchsize"], m["env_steps"], m["num_envs"]) == (
        3e-4,
        64,
        1_000_000,
        1,
    )


def test_mujoco_envs_pick_the_mujoco_preset():
    pytest.importorskip("mujoco")
    assert parse_env_name("HalfCheetah-v5").kind == "mujoco"
    assert resolve({"env_name": "Hopper-v5"}).preset == "mujoco"


def test_missing_mujoco_extra_is_named(capsys, tmp_path, monkeypatch):
    """Without the mujoco package (the `mujoco` extra), a MuJoCo env is a one-line error naming the
    extra, and nothing is written."""
    from conftest import one_error_line

    monkeypatch.setitem(sys.modules, "mujoco", None)  # import mujoco raises ImportError
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, ["train", "--env_name", "HalfCheetah-v5"])
    assert "[mujoco]" in line and "HalfCheetah-v5" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--env_name", "CartPole-v1", "--model_type", "small"], "--model_type mlp"),
        (["--env_name", "CartPole-v1", "--preset", "ppo-paper"], "--preset classic"),
        (["--env_name", "Pong", "--model_type", "mlp"], "small or large"),
        (["--env_name", "Taxi-v4"], "flat Box observation"),
        (["--env_name", "CartPole-v1", "--hid_size", "0"], "--hid_size"),
        (["--env_name", "CartPol-v1"], "CartPole-v1"),
    ],
)
def test_bad_mlp_flags(capsys, tmp_path, monkeypatch, flags, needle):
    from conftest import one_error_line

    monkeypatch.chdir(tmp_path)
    assert needle in one_error_line(capsys, ["train", *flags])
    assert list(tmp_path.iterdir()) == []


def test_continuous_actions_are_clipped_on_the_way_to_the_env():
    env = VecEnv(parse_env_name("Pendulum-v1"), 2, seed=0)
    obs = env.reset()
    assert obs.dtype == np.float32 and obs.shape == (2, 3)
    env.step(np.array([[100.0], [-100.0]], dtype=np.float32))
    # Pendulum's torque bound is 2: the env saw the clipped actions.
    torques = [e.unwrapped.last_u for e in env.vec.envs]
    assert torques == [2.0, -2.0]
    env.close()


@pytest.mark.slow
def test_mlp_checkpoint_resumes_with_its_normalizer(tmp_path, cli):
    """The observation statistics are saved in the checkpoint and grow from there on resume."""
    base = ["train", "--env_name", "Pendulum-v1", *MLP_TINY, "--checkpoint_dir", str(tmp_path)]
    p = cli.run([*base, "--env_steps", "256"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    ckpt = tmp_path / "Pendulum-classic" / "checkpoint.pt"
    first = torch.load(ckpt, weights_only=True)["model"]
    assert float(first["ob_rms.count"]) == pytest.approx(256.01)
    assert float(first["ob_rms.sum"].abs().sum()) > 0
    p = cli.run([*base, "--env_steps", "512"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "resuming" in p.stdout
    second = torch.load(ckpt, weights_only=True)["model"]
    assert float(second["ob_rms.count"]) == pytest.approx(512.01)
    # The resumed statistics started from the saved ones: the sums only grew by the new data.
    assert not torch.equal(first["ob_rms.sum"], second["ob_rms.sum"])


@pytest.mark.slow
def test_evaluate_and_movie_for_an_mlp_agent(tmp_path, cli):
    base = ["--env_name", "CartPole-v1", "--checkpoint_dir", str(tmp_path)]
    p = cli.run(["train", *base, *MLP_TINY, "--env_steps", "128"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    out = tmp_path / "eval.json"
    p = cli.run(["evaluate", *base, "--episodes", "3", "--json", str(out)], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["protocol"] == "env" and result["episodes"] == 3
    assert result["mean"] == pytest.approx(np.mean(result["scores"]))
    assert result["scores"] == [float(n) for n in result["lengths"]]  # CartPole: +1 per step
    p = cli.run(["evaluate", *base, "--protocol", "paper"], tmp_path)
    assert p.returncode == 2 and "--protocol env" in p.stderr
    pytest.importorskip("pygame")
    p = cli.run(["movie", *base, "--asset_dir", str(tmp_path / "assets")], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    import imageio.v3 as iio

    (movie,) = (tmp_path / "assets" / "CartPole-classic").glob("CartPole-score-*.mp4")
    frames = iio.imread(movie)
    score = float(movie.name.split("-score-")[1].split("-step-")[0])
    assert len(frames) == score + 1  # the reset frame and one per step
    assert np.ptp(frames.astype(np.int16), axis=0).max() > 50


@pytest.mark.slow
def test_cartpole_learns(tmp_path, cli):
    """The real CLI with the classic preset solves CartPole-v1: a mean real return of at least 475
    over the last 20 episodes, seed 0."""
    p = cli.run(
        ["train", "--env_name", "CartPole-v1", "--seed", "0", "--checkpoint_dir", str(tmp_path)], tmp_path
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "preset classic" in p.stdout
    lines = (tmp_path / "CartPole-classic" / "monitor.csv").read_text().splitlines()
    returns = [float(r["r"]) for r in csv.DictReader(lines[1:])]
    assert len(returns) >= 20
    assert np.mean(returns[-20:]) >= 475, returns[-20:]
