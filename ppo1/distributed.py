"""torch.distributed for ppo1: ranks from torchrun or mpirun, gradient all-reduce, broadcast,
global advantage moments, gathering each rank's games and baselines' parameter sync check.

One process (no launcher) is the world of size 1 and every collective is a no-op.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ppo1.errors import RankFailure


def launcher_env() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, ranks on this machine) from torchrun's or Open MPI's
    environment, else (0, 1, 0, 1)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun
        world = int(env["WORLD_SIZE"])
        return int(env["RANK"]), world, int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", world))
    if "OMPI_COMM_WORLD_RANK" in env:  # mpirun (Open MPI); mpi4py is not needed
        world = int(env["OMPI_COMM_WORLD_SIZE"])
        return (
            int(env["OMPI_COMM_WORLD_RANK"]),
            world,
            int(env.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)),
            int(env.get("OMPI_COMM_WORLD_LOCAL_SIZE", world)),
        )
    return 0, 1, 0, 1


def backend_for(device: torch.device, local_world_size: int) -> str:
    """NCCL where each rank on this machine has a GPU of its own; gloo otherwise (on the CPU, or
    where ranks share a GPU, which NCCL refuses: "Duplicate GPU detected")."""
    if device.type == "cuda" and local_world_size <= torch.cuda.device_count():
        return "nccl"
    return "gloo"


HEARTBEAT_SECONDS = 1.0
# Started by init(), stopped by shutdown(): (stop event, thread, the longest a store call can block).
_heartbeats: list[tuple[threading.Event, threading.Thread, float]] = []


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    store: object = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        """Where every tensor handed to a collective lives: NCCL takes only GPU tensors, gloo CPU ones."""
        return (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )

    def start_heartbeat(self, store_timeout: float) -> None:
        """Each rank stamps the rendezvous store every second, so that when a collective fails
        the survivors can name the rank that stopped stamping.

        It must stop before the interpreter finalizes: a daemon thread that comes back from the
        store's C++ call then is ended by CPython inside C++ frames, which aborts the process
        ("terminate called without an active exception", SIGABRT). shutdown(), abandon() and an
        atexit hook stop and join it."""
        stop = threading.Event()

        def beat():
            while not stop.is_set():
                try:
                    self.store.set(f"ppo1/heartbeat/{self.rank}", repr(time.time()))
                except Exception:
                    return
                stop.wait(HEARTBEAT_SECONDS)

        thread = threading.Thread(target=beat, daemon=True, name="ppo1-heartbeat")
        thread.start()
        _heartbeats.append((stop, thread, store_timeout))

    def describe_failure(self, error: BaseException) -> str:
        """One line naming the rank(s) that went silent, for an error in a collective."""
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        silent = []
        try:
            self.store.set_timeout(datetime.timedelta(seconds=5))
            others = [r for r in range(self.world_size) if r != self.rank]
            before = {r: self.store.get(f"ppo1/heartbeat/{r}") for r in others}
            time.sleep(3 * HEARTBEAT_SECONDS)  # a live rank stamps again meanwhile
            silent = [r for r in others if self.store.get(f"ppo1/heartbeat/{r}") == before[r]]
        except Exception:
            silent = [0]  # the store lives with rank 0 (or its launcher): it is gone
        who = ", ".join(f"rank {r}" for r in silent) or "another rank"
        return f"rank {self.rank}: lost {who} during a collective ({first}); the run stops"

    def broadcast_object(self, obj):
        """Rank 0's Python object on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_state(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Rank 0's weights and Adam moments to every rank (at start and after a resume)."""
        if not self.active:
            return
        tensors = list(module.state_dict().values())
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if torch.is_tensor(v)]
        for t in tensors:
            if t.device == self.device:
                dist.broadcast(t.data, src=0)
                continue
            # NCCL takes only CUDA tensors, and torch Adam keeps its step counts on the CPU: such
            # tensors travel through a buffer on the group's device.
            if self.rank == 0:
                dist.broadcast(t.data.to(self.device), src=0)
            else:
                staged = torch.empty_like(t.data, device=self.device)
                dist.broadcast(staged, src=0)
                t.data.copy_(staged)

    def reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients over ranks with ONE all-reduce over a flat buffer."""
        if not self.active:
            return
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(self.device)
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (population) std over all ranks' samples (baselines common/mpi_moments.py)."""
        if not self.active:
            return x.mean(), x.std(correction=0)
        x = x.double()
        s = torch.stack(
            [x.sum(), (x * x).sum(), torch.tensor(float(x.numel()), device=x.device, dtype=x.dtype)]
        ).to(self.device)
        dist.all_reduce(s)
        mean = s[0] / s[2]
        var = (s[1] / s[2] - mean * mean).clamp_min(0.0)  # population variance, as numpy's std()
        return mean.float(), var.sqrt().float()

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over all ranks (x itself in one process)."""
        if self.active:
            total = x.to(self.device, copy=True)
            dist.all_reduce(total)
            x = total.to(x.device)
        return x

    def gather_object(self, obj) -> list:
        """Every rank's object, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank (a stop request, for instance)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def check_synced(self, module: torch.nn.Module, iteration: int) -> None:
        """baselines mpi_adam.check_synced: every rank must hold rank 0's parameters, bit for bit."""
        if not self.active:
            return
        digest = hashlib.blake2b(digest_size=8)
        for p in module.state_dict().values():  # parameters and buffers (observation statistics)
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        value = int.from_bytes(digest.digest(), "little", signed=True)
        mine = torch.tensor([value], dtype=torch.int64, device=self.device)
        sums = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(sums, mine)
        for r, s in enumerate(sums):
            if not torch.equal(s, sums[0]):
                raise RankFailure(f"rank {r}'s parameters diverged from rank 0's at iteration {iteration}")


def attempt_store(world_size: int, timeout: datetime.timedelta) -> dist.Store | None:
    """torchrun keeps one TCPStore (its agent's) for the whole job, so a group restarted by
    --max-restarts finds the previous attempt's gloo/NCCL addresses there and connects to dead
    ports (pytorch/pytorch#135712, #167288). Give each attempt its own key prefix. Only where one
    agent starts every rank (one machine): each agent counts its own restarts."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or os.environ.get("GROUP_WORLD_SIZE") != "1":
        return None  # no launcher, mpirun, or several machines: init_process_group's own env:// store
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = dist.TCPStore(addr, port, world_size, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"ppo1/attempt/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def init(timeout_seconds: float, device: torch.device) -> Dist:
    """Join the process group the launcher set up; a single process needs no group."""
    rank, world_size, local_rank, local_world_size = launcher_env()
    if world_size == 1:
        return Dist()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    backend = backend_for(device, local_world_size)
    timeout = datetime.timedelta(seconds=timeout_seconds)
    if not dist.is_initialized():
        store = attempt_store(world_size, timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    group = Dist(rank, world_size, local_rank, store=dist.distributed_c10d._get_default_store())
    group.start_heartbeat(timeout_seconds)
    atexit.register(shutdown)  # also where a process exits without calling it
    return group


_abandoned = False  # a peer is gone: the group is left as it is


def stop_heartbeat(wait_for_store: bool = True) -> None:
    """wait_for_store False: after a lost rank, where the process exits without finalizing (the CLI's
    os._exit), so a stamp stuck on a store that no longer answers is not waited for."""
    while _heartbeats:
        stop, thread, store_timeout = _heartbeats.pop()
        stop.set()
        if not wait_for_store:
            thread.join(timeout=10 * HEARTBEAT_SECONDS)
            continue
        # A stamp in flight returns, or fails, within the store's timeout (--dist_timeout). Waiting
        # less (10 s until this) could leave the thread in the store's C++ call on a loaded machine,
        # and the interpreter then aborts the process as it finalizes.
        thread.join(timeout=store_timeout + 2 * HEARTBEAT_SECONDS)


def abandon() -> None:
    """After a lost rank: stop the heartbeat but never destroy the group, which can abort the
    process when a peer is dead."""
    global _abandoned
    _abandoned = True
    stop_heartbeat(wait_for_store=False)


def shutdown() -> None:
    """Stop the heartbeat, then leave the process group (a no-op in one process). Also run at exit:
    a gloo group still alive when the interpreter finalizes can abort the process too."""
    stop_heartbeat()
    if dist.is_initialized() and not _abandoned:
        dist.destroy_process_group()
