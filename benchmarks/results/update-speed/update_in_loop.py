"""Does the update run slower inside the loop than alone? The default preset on Pong, 3 warm-up
iterations of the real loop, then per repetition: collect a segment, and time `update()` on it (from
the same saved weights and Adam state each time) right after the rollout, after a 1 s pause, back to
back, on random frames of the same shape, and with denormals flushed. Samples/s = samples x epochs.

    python benchmarks/results/update-speed/update_in_loop.py [repetitions]
"""

import copy
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

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
cfg = resolve({"env_name": "PongNoFrameskip-v4", "checkpoint_dir": tempfile.mkdtemp(), "model_name": "d"})
cfg.run_dir.mkdir(parents=True)
trainer = Trainer(cfg, None, Dist(), torch.device("cpu"))
print(
    f"preset {cfg.preset}, {cfg.num_envs} envs x {cfg.timesteps_per_actorbatch} steps, "
    f"{cfg.optim_epochs} epochs, minibatch {cfg.minibatch_size}, {torch.get_num_threads()} threads"
)
for _ in range(3):
    trainer.iteration()
weights = copy.deepcopy(trainer.policy.state_dict())
adam = copy.deepcopy(trainer.optimizer.state_dict())
results: dict[str, list[float]] = {}


def timed_update(name, seg):
    trainer.policy.load_state_dict(weights)
    trainer.optimizer.load_state_dict(adam)
    t0 = time.perf_counter()
    update(trainer.policy, trainer.optimizer, seg, cfg, 100_000, torch.Generator().manual_seed(0))
    results.setdefault(name, []).append(seg.num_samples * cfg.optim_epochs / (time.perf_counter() - t0))


for _ in range(reps):
    t0 = time.perf_counter()
    seg = trainer.rollout.collect()
    results.setdefault("rollout (steps/s)", []).append(seg.num_samples / (time.perf_counter() - t0))
    timed_update("update right after the rollout", seg)
    time.sleep(1.0)
    timed_update("update after a 1 s pause", seg)
    timed_update("update back to back", seg)
    random_frames = copy.copy(seg)
    random_frames.obs = torch.randint(0, 256, seg.obs.shape, dtype=torch.uint8)
    timed_update("update on random frames", random_frames)
    torch.set_flush_denormal(True)
    timed_update("update with denormals flushed", seg)
    torch.set_flush_denormal(False)
for name, values in results.items():
    print(f"{name:32s} median {statistics.median(values):6.0f}   {[round(v) for v in values]}")
