"""Checkpoint files: round trip, atomic write, corrupt and malicious files refused in one line."""

import os
import pickle
import stat
import zipfile

import numpy as np
import pytest
import torch
from conftest import Exploit, one_error_line

from ppo1 import checkpoint
from ppo1.errors import ConfigError
from ppo1.policies import CnnPolicy


def make_state():
    torch.manual_seed(0)
    policy = CnnPolicy(4, 6, "small")
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3, eps=1e-5)
    policy(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))[0].sum().backward()
    optimizer.step()  # so the optimizer has moment tensors to save
    return dict(
        model=policy.state_dict(),
        optimizer=optimizer.state_dict(),
        config={"env_name": "PongNoFrameskip-v4", "model_type": "small", "frame_stacking": True},
        counters={"timesteps": 640, "iterations": 10, "episodes": 3, "elapsed": 12.5},
        recent={"scores": [-21.0, -20.0], "lengths": [800, 900], "clipped": [-1.0]},
        rng={"torch": torch.get_rng_state(), "generator": torch.Generator().manual_seed(3).get_state()},
        num_actions=6,
        observation_shape=[4, 84, 84],
    )


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_round_trip(tmp_path):
    state = make_state()
    path = tmp_path / checkpoint.CHECKPOINT
    checkpoint.save(path, state)
    loaded = checkpoint.load(path)
    assert loaded["format_version"] == checkpoint.FORMAT_VERSION
    assert_same({k: v for k, v in loaded.items() if k != "format_version"}, state)
    # The loaded state restores a model and an optimizer.
    policy = CnnPolicy(4, 6, "small")
    policy.load_state_dict(loaded["model"])
    optimizer = torch.optim.Adam(policy.parameters())
    optimizer.load_state_dict(loaded["optimizer"])
    # Only the checkpoint is left in the folder (no temporary file), with the usual file mode.
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_save_replaces_the_old_checkpoint(tmp_path):
    path = tmp_path / checkpoint.CHECKPOINT
    checkpoint.save(path, {"counters": {"timesteps": 1}})
    checkpoint.save(path, {"counters": {"timesteps": 2}})
    assert checkpoint.load(path)["counters"] == {"timesteps": 2}
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT]


def test_failed_save_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / checkpoint.CHECKPOINT
    checkpoint.save(path, {"counters": {"timesteps": 1}})
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled
        checkpoint.save(path, {"bad": lambda: 0})
    assert checkpoint.load(path)["counters"] == {"timesteps": 1}
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT]


def assert_one_line_config_error(path):
    with pytest.raises(ConfigError) as e:
        checkpoint.load(path)
    msg = str(e.value)
    assert msg and "\n" not in msg
    assert str(path) in msg
    return msg


@pytest.mark.parametrize("keep", [0.5, 0.9, 10])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / checkpoint.CHECKPOINT
    checkpoint.save(path, make_state())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    assert "--fresh" in assert_one_line_config_error(path)


def test_empty_file(tmp_path):
    path = tmp_path / checkpoint.CHECKPOINT
    path.write_bytes(b"")
    assert_one_line_config_error(path)


def test_not_a_ppo1_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)  # a valid torch file, but no format_version
    assert "not a ppo1 checkpoint" in assert_one_line_config_error(path)
    torch.save([1, 2, 3], path)
    assert "not a ppo1 checkpoint" in assert_one_line_config_error(path)


def test_random_bytes_typical(tmp_path):
    path = tmp_path / checkpoint.CHECKPOINT
    for payload in [b"garbage", b"PK\x03\x04junk", b"\x80\x02}q\x00."]:
        path.write_bytes(payload)
        assert_one_line_config_error(path)


def test_random_bytes_any(tmp_path):
    path = tmp_path / checkpoint.CHECKPOINT
    payloads = [np.random.default_rng(seed).bytes(4096) for seed in range(40)]
    # Hand-made pickle streams: BINGET of a missing memo slot, BINUNICODE with invalid UTF-8.
    payloads += [b"h\x05.", b"X\x02\x00\x00\x00\xff\xfe."]
    escaped = []
    for i, payload in enumerate(payloads):
        path.write_bytes(payload)
        try:
            checkpoint.load(path)
            escaped.append((i, "loaded"))
        except ConfigError as e:
            assert "\n" not in str(e)
        except Exception as e:  # noqa: BLE001 - exactly what the test looks for
            escaped.append((i, type(e).__name__))
    assert escaped == []


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running_code(tmp_path, how):
    marker = tmp_path / "MARKER"
    path = tmp_path / checkpoint.CHECKPOINT
    payload = {"format_version": checkpoint.FORMAT_VERSION, "model": Exploit(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # The payload does work when unpickled unsafely (proves the test's exploit is real) ...
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Exploit(probe)))
    assert probe.exists()
    # ... but load refuses it, and nothing ran.
    assert_one_line_config_error(path)
    assert not marker.exists()


def test_check_compatible(tmp_path):
    """One check before a resume: the game, the network, the frame stack and the action count."""
    from dataclasses import replace

    from ppo1.checkpoint import Counters, TrainState
    from ppo1.config import Config

    cfg = Config(env_name="PongNoFrameskip-v4", model_type="small", frame_stacking=True)
    state = TrainState({}, {}, cfg.to_dict(), Counters(), {}, torch.zeros(1), [], num_actions=6)
    checkpoint.check_compatible(state, replace(cfg, env_name="ALE/Pong-v5"), tmp_path)  # same game
    with pytest.raises(ConfigError, match=r"game Pong, not Breakout"):
        checkpoint.check_compatible(state, replace(cfg, env_name="Breakout"), tmp_path)
    with pytest.raises(ConfigError, match=r"--model_type small, not large"):
        checkpoint.check_compatible(state, replace(cfg, model_type="large"), tmp_path)
    with pytest.raises(ConfigError, match=r"frame stacking True, not False"):
        checkpoint.check_compatible(state, replace(cfg, frame_stacking=False), tmp_path)
    with pytest.raises(ConfigError, match=r"actions 9, not 6"):
        checkpoint.check_compatible(replace(state, num_actions=9), cfg, tmp_path)


@pytest.mark.parametrize(
    "name, content, what",
    [
        ("notes.txt", b"my notes\n", "a text file"),
        ("empty.pt", b"", "an empty file"),
        ("random.pt", bytes(range(1, 256)) * 8, "a file of other bytes"),
        ("other.zip", None, "a zip archive that torch.save did not write"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(tmp_path, capsys, name, content, what):
    """`ppo1 evaluate --checkpoint FILE` of a file that is no checkpoint: one line naming the file and
    what it is, with advice for a file (not for a run folder), and nothing written."""

    path = tmp_path / name
    if content is None:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "not weights")
    else:
        path.write_bytes(content)
    before = sorted(tmp_path.iterdir())
    line = one_error_line(capsys, ["evaluate", "--checkpoint", str(path)])
    assert f"{path} is {what}, not a ppo1 checkpoint" in line
    assert "Agent.save" in line and "--model_name" not in line
    assert sorted(tmp_path.iterdir()) == before
