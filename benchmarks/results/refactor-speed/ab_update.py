"""Update-only A/B: the same synthetic segment through one tree's update(), timed.

    python ab_update.py TREE    # TREE: a checkout of ppo1 (before the refactor, or after)

Both trees' update() take a Segment of 128 steps x 8 envs of random frames and run the default
preset's 3 epochs of minibatches of 32 on the large network, 2 torch threads; prints 4 timed calls
in samples/s and their median. Run the trees alternately, with nothing else on the machine.
"""

import inspect
import sys
import time

sys.path.insert(0, sys.argv[1])

import torch  # noqa: E402

import ppo1  # noqa: E402, F401  (sets the OpenMP wait policy first, as ppo1 train does)
from ppo1.config import resolve  # noqa: E402
from ppo1.learner import update  # noqa: E402
from ppo1.policies import make_policy  # noqa: E402
from ppo1.rollout import Segment  # noqa: E402

torch.set_num_threads(2)
cfg = resolve({})
T, N = 128, 8
torch.manual_seed(0)
if "cfg" in inspect.signature(make_policy).parameters:  # after: make_policy takes the config
    policy = make_policy(cfg, (4, 84, 84), 6, True)
else:
    args = (cfg.model_type, (4, 84, 84), 6, True, cfg.hid_size, cfg.num_hid_layers, cfg.pi_gain, cfg.init)
    policy = make_policy(*args)
optimizer = torch.optim.Adam(policy.parameters(), lr=2.5e-4, eps=1e-5)
obs = torch.randint(0, 256, (T, N, 4, 84, 84), dtype=torch.uint8)
actions = torch.randint(0, 6, (T, N))
with torch.no_grad():
    pd, values = policy.dist(obs.reshape(-1, 4, 84, 84))
    log_probs = pd.log_prob(actions.reshape(-1)).reshape(T, N)
values, advantages, zeros = values.reshape(T, N), torch.randn(T, N), torch.zeros(T, N)
if "last_values" in Segment.__dataclass_fields__:  # before: GAE filled in by the trainer
    seg = Segment(obs, actions, log_probs, values, zeros, zeros, torch.zeros(N))
    seg.advantages, seg.returns = advantages, advantages + values
    schedule = 1.0  # lrmult
else:
    seg = Segment(obs, actions, log_probs, values, zeros, zeros, advantages, advantages + values)
    schedule = 0  # agent steps so far

generator = torch.Generator().manual_seed(0)
update(policy, optimizer, seg, cfg, schedule, generator)  # warm-up
rates = []
for _ in range(4):
    t0 = time.perf_counter()
    update(policy, optimizer, seg, cfg, schedule, generator)
    rates.append(3 * T * N / (time.perf_counter() - t0))
print(sys.argv[1], " ".join(f"{r:.0f}" for r in rates), f"median {sorted(rates)[2]:.0f}")
