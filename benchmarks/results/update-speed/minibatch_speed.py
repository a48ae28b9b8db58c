"""Steps/s of the loop by minibatch size and epochs, interleaved in one process: per repetition,
collect one segment (timed), then time update() on it for each setting from the same weights and
Adam state. Loop steps/s = samples / (rollout + update).

    python benchmarks/results/update-speed/minibatch_speed.py [repetitions]
"""

import copy
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import torch  # noqa: E402

from ppo1.config import resolve  # noqa: E402
from ppo1.distributed import Dist  # noqa: E402
from ppo1.learner import update  # noqa: E402
from ppo1.trainer import Trainer  # noqa: E402

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 4
ppo2 = dict(init="orthogonal", vf_coef=0.25, clip_vloss=True, max_grad_norm=0.5, norm_adv_per_minibatch=True)
cfg = resolve(
    {"env_name": "PongNoFrameskip-v4", "checkpoint_dir": tempfile.mkdtemp(), "model_name": "d", **ppo2}
)
cfg.run_dir.mkdir(parents=True)
trainer = Trainer(cfg, None, Dist(), torch.device("cpu"))
print(
    f"{cfg.num_envs} envs x {cfg.timesteps_per_actorbatch} steps, {torch.get_num_threads()} threads",
    flush=True,
)
for _ in range(2):
    trainer.iteration()
weights = copy.deepcopy(trainer.policy.state_dict())
adam = copy.deepcopy(trainer.optimizer.state_dict())
settings = {
    "minibatch 32, 3 epochs (wallclock)": dict(optim_batchsize=4, optim_epochs=3),
    "minibatch 32, 4 epochs": dict(optim_batchsize=4, optim_epochs=4),
    "minibatch 64, 4 epochs": dict(optim_batchsize=8, optim_epochs=4),
    "minibatch 128, 3 epochs": dict(optim_batchsize=16, optim_epochs=3),
    "minibatch 128, 4 epochs": dict(optim_batchsize=16, optim_epochs=4),
    "minibatch 256, 4 epochs": dict(optim_batchsize=32, optim_epochs=4),
}
rollout: list[float] = []
upd: dict[str, list[float]] = {k: [] for k in settings}
for rep in range(reps):
    t0 = time.perf_counter()
    seg = trainer.rollout.collect()
    rollout.append(time.perf_counter() - t0)
    for name, s in settings.items():
        c = dataclasses.replace(cfg, **s)
        trainer.policy.load_state_dict(weights)
        trainer.optimizer.load_state_dict(adam)
        t0 = time.perf_counter()
        update(trainer.policy, trainer.optimizer, seg, c, 100_000, torch.Generator().manual_seed(0))
        upd[name].append(time.perf_counter() - t0)
    print(
        f"rep {rep}: rollout {rollout[-1]:.2f} s, " + ", ".join(f"{v[-1]:.2f}" for v in upd.values()),
        flush=True,
    )
n = seg.num_samples
r = statistics.median(rollout)
print(f"rollout median {r:.2f} s for {n} steps ({n / r:.0f} steps/s)")
base = None
for name, v in upd.items():
    u = statistics.median(v)
    sps = n / (r + u)
    base = base or sps
    print(f"  {name:36s} update {u:5.2f} s  loop {sps:5.0f} steps/s  ({sps / base:.2f}x wallclock)")
