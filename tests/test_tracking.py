"""--track on Weights & Biases in offline mode (no network): the run's files hold every logged
scalar and the config, a resume continues the same W&B run; without wandb, one line and exit 2.
And the calm terminal: the table every --log_interval iterations, every row in progress.csv."""

from __future__ import annotations

import json
import struct

import pytest
from conftest import BATCH, TINY, run_cli

from ppo1.logger import WANDB_ID


def wandb_records(path):
    """The records of a .wandb file: LevelDB's log format (32 KiB blocks, a 7-byte header per
    chunk: CRC, length, type FULL 1 / FIRST 2 / MIDDLE 3 / LAST 4) after W&B's 7-byte file header,
    each a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, block = path.read_bytes(), 7, b"", 32768
    assert data.startswith(b":W&B")
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length, kind) == (0, 0):
            pos += left  # the block's zero-filled tail
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def offline_run(run_dir):
    """(history rows, config) of every offline W&B run in the run folder, in order."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    out = []
    for folder in runs:
        history, config = [], {}
        for r in wandb_records(next(folder.glob("run-*.wandb"))):
            kind = r.WhichOneof("record_type")
            if kind == "history":
                items = r.history.item
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
            elif kind in ("run", "config"):
                updates = r.run.config.update if kind == "run" else r.config.update
                config.update({i.key: json.loads(i.value_json) for i in updates})
        out.append((folder.name, history, config))
    return out


def wandb_env():
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.mark.slow
def test_track_offline_logs_scalars_and_config_and_resumes_the_same_run(tmp_path, cli):
    args = ["train", *TINY, "--checkpoint_dir", str(tmp_path), "--model_name", "t", "--track"]
    for steps in (2 * BATCH, 3 * BATCH):
        r = run_cli([*args, "--env_steps", str(steps)], tmp_path, env=wandb_env())
        assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "t"
    run_id = (run_dir / WANDB_ID).read_text().strip()
    (first, history1, config), (second, history2, _) = offline_run(run_dir)
    assert first.endswith(run_id) and second.endswith(run_id)  # the resume continued the same run
    assert config["env_name"] == "PongNoFrameskip-v4" and config["track"] is True
    assert config["num_envs"] == 2 and config["wandb_project"] == "ppo1"
    rows = cli.progress(run_dir)
    logged = history1 + history2
    assert [h["TimestepsSoFar"] for h in logged] == [64, 128, 192] == cli.timesteps(rows)
    assert [h["_step"] for h in logged] == [64, 128, 192]
    for h, row in zip(logged, rows):
        for key in ("pol_surr", "vf_loss", "ent", "EpRewMeanClipped", "StepsPerSecond"):
            assert h[key] == pytest.approx(float(row[key]), rel=1e-12, nan_ok=True), key
    # Starting over (the checkpoint moved aside, as the README advises for a damaged one): step 0
    # again, so a new W&B run, which W&B would otherwise refuse rows below step 192.
    (run_dir / "checkpoint.pt").rename(run_dir / "checkpoint.bad")
    r = run_cli([*args, "--env_steps", str(BATCH)], tmp_path, env=wandb_env())
    assert r.returncode == 0, r.stderr[-3000:]
    new_id = (run_dir / WANDB_ID).read_text().strip()
    assert new_id != run_id and offline_run(run_dir)[-1][0].endswith(new_id)


def test_track_without_wandb_is_one_line(tmp_path, cli):
    """wandb made unimportable (a package that raises ImportError first on the path)."""
    fake = tmp_path / "no-wandb" / "wandb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named wandb')\n")
    run_root = tmp_path / "runs"
    run_root.mkdir()
    before = cli.snapshot(run_root)
    r = run_cli(
        ["train", *TINY, "--checkpoint_dir", str(run_root), "--track"],
        tmp_path,
        env={"PYTHONPATH": str(fake.parent)},
    )
    assert r.returncode == 2
    extra = "pip install -e '.[wandb]'"
    assert r.stderr.strip() == f"ppo1 train: error: --track needs wandb, an optional extra: {extra}"
    assert cli.snapshot(run_root) == before


def test_the_table_is_printed_every_log_interval(tmp_path, cli):
    args = ["train", *TINY, "--checkpoint_dir", str(tmp_path), "--env_steps", str(4 * BATCH)]
    r = run_cli([*args, "--log_interval", "2"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    tables = [line for line in r.stdout.splitlines() if line.startswith("| TimestepsSoFar")]
    assert [int(t.split("|")[2]) for t in tables] == [2 * BATCH, 4 * BATCH]  # iterations 2 and 4
    rows = cli.progress(tmp_path / "Pong-wallclock")
    assert cli.timesteps(rows) == [BATCH, 2 * BATCH, 3 * BATCH, 4 * BATCH]
    assert "\r" not in r.stdout + r.stderr and "\x1b" not in r.stdout + r.stderr  # no bar: not a terminal
