"""The CPU an input costs, for the tests that bound it (linear redaction, the record path's 50 ms).

Such a test measures the code's own work: on a loaded two-core machine the wall clock also counts
the time this thread waited for a core, which moved a linear pass's 16x ratio past a quadratic
one's bound. The thread's own CPU time does not grow with the machine's load, and a quadratic or
cubic pass still shows in it. Use it only where the work never waits (no I/O, no sleeps): a wait
costs no CPU and would hide."""

from __future__ import annotations

import time
from collections.abc import Callable


def cpu_seconds(work: Callable[[], object]) -> float:
    """The CPU seconds this thread spent in `work`."""
    started = time.thread_time()
    work()
    return time.thread_time() - started


def best_cpu_of(runs: int, work: Callable[[], object]) -> float:
    """The least CPU `work` took in `runs` runs: a run slowed by caches a neighbour cooled counts
    only if every run was."""
    return min(cpu_seconds(work) for _ in range(runs))


def growth(small: Callable[[], object], large: Callable[[], object], *, runs: int = 7) -> float:
    """How many times the CPU of `small` the CPU of `large` takes, each the best of `runs`, the
    two measured in turn so that a slow spell of the machine falls on both."""
    small_best = large_best = float("inf")
    for _ in range(runs):
        small_best = min(small_best, cpu_seconds(small))
        large_best = min(large_best, cpu_seconds(large))
    return large_best / small_best
