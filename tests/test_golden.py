"""Behaviour pinned bit for bit: short fixed-seed CPU runs whose logged losses, final weights and
evaluation output were recorded before the code was last reshaped (tests/golden/*.json).

A change that is meant to alter what ppo1 computes (a new default, a fix) re-records them, on
purpose and in its own commit: `python tests/test_golden.py --record`. A refactor must leave them
as they are. The values are exact for this torch version on a CPU that rounds as the recording one
did (`rounding()`: the same digest of a few layers' bits): a torch upgrade or another CPU may round
differently, which the test reports as a skip, not a failure.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import read_progress, run_cli  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden"
ONE = ["--torch_threads", "1", "--env_threads", "1", "--device", "cpu", "--seed", "3", "--log_interval", "1"]
ATARI = ["--env_name", "PongNoFrameskip-v4", "--num_envs", "2", "--timesteps_per_actorbatch", "32"]
RUNS = {
    # the default preset (large network, minibatches of 4 per env), 2 iterations
    "pong-wallclock": [*ATARI, "--env_steps", "128", "--optim_batchsize", "4", *ONE],
    # every ppo2 branch of the loss and update, on the small network
    "pong-ppo2-branches": [
        *ATARI,
        "--preset",
        "ppo-paper",
        "--env_steps",
        "128",
        "--optim_batchsize",
        "8",
        "--optim_epochs",
        "2",
        "--init",
        "orthogonal",
        "--clip_vloss",
        "--max_grad_norm",
        "0.5",
        "--norm_adv_per_minibatch",
        "--vf_coef",
        "0.25",
        *ONE,
    ],  # fmt: skip
    # MLP, categorical, observation statistics (log-probs recomputed after their update)
    "cartpole-classic": ["--env_name", "CartPole-v1", "--env_steps", "2048", *ONE],
    # MLP, diagonal Gaussian, time limits bootstrapped
    "pendulum-classic": ["--env_name", "Pendulum-v1", "--env_steps", "2048", "--optim_epochs", "2", *ONE],
}
# Columns that are clocks, not results.
CLOCKS = ("Time", "StepsPerSecond")


def machine() -> dict:
    return dict(
        torch=torch.__version__,
        cpu=platform.machine(),
        python=platform.python_version()[:4],
        rounding=rounding(),
    )


@functools.cache
def rounding() -> str:
    """How this CPU and torch round what the runs compute: a digest of the bits of the large
    network's layers and a small MLP, forward and backward, and a fused Adam step, on one thread.
    Two x86_64 CPUs (AVX2 and another kind) rounded the same code's runs differently."""
    nn, threads = torch.nn, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            cnn = nn.Sequential(
                *(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU()),
                *(nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.Linear(512, 6)),
            ).to(memory_format=torch.channels_last)
            mlp = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
            frames = torch.rand(32, 4, 84, 84).contiguous(memory_format=torch.channels_last)
            loss = cnn(frames).log_softmax(-1).sum() + mlp(torch.randn(64, 4)).square().mean()
            loss.backward()
            params = [*cnn.parameters(), *mlp.parameters()]
            grads = [p.grad.clone() for p in params]
            torch.optim.Adam(params, lr=1e-3, eps=1e-5, fused=True).step()
        h = hashlib.sha256()
        for t in [*grads, *params]:
            h.update(t.detach().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]
    finally:
        torch.set_num_threads(threads)


def weights_digest(path: Path) -> str:
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def run_once(name: str, root: Path) -> dict:
    """Train run `name`, then evaluate its checkpoint over 2 games: what the golden file holds."""
    args = ["train", *RUNS[name], "--checkpoint_dir", str(root), "--model_name", name]
    r = run_cli(args, cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [{k: v for k, v in row.items() if not k.startswith(CLOCKS)} for row in read_progress(root / name)]
    ckpt = root / name / "checkpoint.pt"
    out = root / f"{name}-eval.json"
    ev = run_cli(["evaluate", "--checkpoint", str(ckpt), "--episodes", "2", "--json", str(out)], cwd=root)
    assert ev.returncode == 0, ev.stderr[-2000:]
    # The one line that names the checkpoint's temporary path is read as the path's name.
    stdout = ev.stdout.replace(str(root), "<root>")
    result = json.loads(out.read_text())
    result["checkpoint"] = Path(result["checkpoint"]).name
    return dict(progress=rows, weights=weights_digest(ckpt), evaluate_stdout=stdout, evaluate_json=result)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_bit_for_bit(name: str, tmp_path: Path) -> None:
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    if golden["machine"] != machine():
        pytest.skip(f"recorded on {golden['machine']}, this is {machine()}: rounding may differ")
    now = run_once(name, tmp_path)
    assert now["progress"] == golden["progress"]  # every loss, score and counter, as logged text
    assert now["weights"] == golden["weights"]
    assert now["evaluate_stdout"] == golden["evaluate_stdout"]
    assert now["evaluate_json"] == golden["evaluate_json"]


def record() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name in RUNS:
        with tempfile.TemporaryDirectory() as d:
            result = run_once(name, Path(d))
        result = dict(machine=machine(), command=["ppo1", "train", *RUNS[name]], **result)
        (GOLDEN / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"recorded {GOLDEN / name}.json", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_golden.py --record")
    record()
