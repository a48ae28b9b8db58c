"""The seconds of each phase of an iteration (env, inference, gae, update, allreduce), for the
Time* columns of the logs (PufferLib's profile blocks)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Timer:
    """Seconds spent in each named phase since reset()."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.started = time.perf_counter()

    def reset(self) -> None:
        self.seconds.clear()
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    def since_reset(self) -> float:
        return time.perf_counter() - self.started
