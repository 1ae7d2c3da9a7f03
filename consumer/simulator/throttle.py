"""Pisano's throttle, exact: a sliding-window log of accepted requests per token.

A request at time t is accepted only if, for every window (N, T), fewer than N accepted requests
of the same token lie in the half-open interval (t - T, t]. So a request exactly T after the
oldest counted one is allowed. Rejected requests leave no trace in the log: they do not consume
budget. The log keeps only what the longest window can still see, so it holds at most the largest
N entries per token.

Times are integer nanoseconds from a monotonic clock; callers must ask in non-decreasing time
order (the simulator stamps each request on arrival and decides them on one worker thread in
that order, consumer/simulator/state.py, so they do).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from consumer.config.windows import RateWindow

_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class ThrottleDecision:
    accepted: bool
    wait_ns: int = 0  # how long until the same request would be accepted; 0 when accepted
    exceeded: tuple[RateWindow, ...] = ()

    @property
    def retry_after_s(self) -> int:
        """`Retry-After` in whole seconds: rounded up, at least 1."""
        return max(1, -(-self.wait_ns // _NS_PER_S))


_ACCEPTED = ThrottleDecision(accepted=True)


class SlidingWindowThrottle:
    def __init__(self, windows: tuple[RateWindow, ...]) -> None:
        self.windows = windows
        self._periods_ns = [(w, w.period_ms * _NS_PER_MS) for w in windows]
        self._longest_ns = max((p for _, p in self._periods_ns), default=0)
        self._accepted: dict[str, list[int]] = {}

    def try_acquire(self, key: str, now_ns: int) -> ThrottleDecision:
        """Accept and record a request of `key` at `now_ns`, or say why and for how long not."""
        if not self._periods_ns:
            return _ACCEPTED
        times = self._accepted.setdefault(key, [])
        visible_from = bisect_right(times, now_ns - self._longest_ns)
        if visible_from:
            del times[:visible_from]
        exceeded = []
        wait_ns = 0
        for window, period_ns in self._periods_ns:
            first_counted = bisect_right(times, now_ns - period_ns)
            counted = len(times) - first_counted
            if counted >= window.limit:
                exceeded.append(window)
                # The request fits once counted - limit + 1 of the oldest counted requests have
                # left the window; a request at time a leaves it at a + T.
                must_leave = times[first_counted + counted - window.limit]
                wait_ns = max(wait_ns, must_leave + period_ns - now_ns)
        if exceeded:
            return ThrottleDecision(accepted=False, wait_ns=wait_ns, exceeded=tuple(exceeded))
        times.append(now_ns)
        return _ACCEPTED

    def reset(self) -> None:
        self._accepted.clear()
