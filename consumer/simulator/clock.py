"""The simulator's sense of time, injectable so tests can hit throttle boundaries exactly.

Two readings are needed: a monotonic one in integer nanoseconds for the throttle (integers, so
"exactly T later" is exact, never a float rounding away from the boundary) and a wall-clock one
for the timestamps of the delivery and request logs.
"""

from __future__ import annotations

import time
from typing import Protocol

from consumer.state.clock import WallClock


class Clock(Protocol):
    def monotonic_ns(self) -> int: ...

    def wall_ns(self) -> int: ...


class SystemClock:
    """The process's clocks."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ns(self) -> int:
        return time.time_ns()


class ManualClock:
    """A clock that moves only when told to; wall time moves with it."""

    def __init__(self, *, start_wall_ns: int = 1_700_000_000_000_000_000) -> None:
        self._elapsed_ns = 0
        self._start_wall_ns = start_wall_ns

    def monotonic_ns(self) -> int:
        return self._elapsed_ns

    def wall_ns(self) -> int:
        return self._start_wall_ns + self._elapsed_ns

    def advance(self, *, ms: int = 0, ns: int = 0) -> None:
        if ms < 0 or ns < 0:
            raise ValueError("a monotonic clock does not go back")
        self._elapsed_ns += ms * 1_000_000 + ns


class SharedClock(SystemClock):
    """The process's monotonic clock (the throttle's), and the wall clock of SEND_WINDOW_CLOCK=redis
    (consumer/state/clock.py): the simulator stamps its deliveries with the consumers' time, so a
    test that moves that clock can check every acceptance against the send window."""

    def __init__(self, wall: WallClock) -> None:
        self.wall = wall

    def wall_ns(self) -> int:
        return self.wall.now_ms() * 1_000_000
