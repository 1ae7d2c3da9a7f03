"""The wall clock quiet hours are judged by (SEND_WINDOW_CLOCK).

`system` (the default, and the only one for production): this process's clock, which NTP keeps
right. `redis`, a testing and demo facility: Redis's `TIME` plus an offset in milliseconds kept in
the key `{<prefix>}:clock:offset_ms` (`Keys.clock_offset`), which a test moves with
`set_clock_offset` to put the fleet at 08:59 or 21:00 in an instant. Every replica and the
simulator (`consumer/simulator/clock.py`, `SharedClock`) read the same key, so they agree on the
time a request leaves and is accepted.

A daemon thread asks Redis every REFRESH_S; in between the reading is carried forward on the
monotonic clock, so the batcher's checks cost no round trip. A moved offset is seen within
REFRESH_S. If Redis cannot be read, the last reading is carried forward (the senders fail closed
on Redis anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from consumer.operations.threads import long_lived
from consumer.state.redis import REDIS_ERRORS, Keys, stored_text

log = logging.getLogger(__name__)

REFRESH_S = 0.2


class WallClock(Protocol):
    def now_ms(self) -> int: ...


class SystemWallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class RedisWallClock:
    """Redis's TIME plus the offset key, read by a daemon thread every `refresh_s` and carried
    forward on the monotonic clock in between: `now_ms` never waits on Redis, so the batcher may
    ask it under its lock and the poll loop never blocks on it."""

    def __init__(self, client: Any, keys: Keys, refresh_s: float = REFRESH_S) -> None:
        self.client = client
        self.key = keys.clock_offset()
        self.refresh_s = refresh_s
        self._reading = (time.monotonic(), time.time_ns() // 1_000_000)  # replaced whole: no lock needed
        self._failing = False
        self._closed = threading.Event()
        self.refresh()
        # As long-lived as the process, so watched (`long_lived`: a build watches it): a dead one
        # would freeze the clock, holding events for good or sending them in quiet hours.
        self.thread = long_lived(self._run, name="send-window-clock", role="send_window_clock")
        self.thread.start()

    def now_ms(self) -> int:
        read_at, read_ms = self._reading
        return read_ms + round((time.monotonic() - read_at) * 1000)

    def refresh(self) -> None:
        try:
            offset = self.client.get(self.key)  # two calls, not a pipeline: a Redis Cluster routes each
            seconds, micros = self.client.time()
        except REDIS_ERRORS as exc:
            if not self._failing:
                log.warning("SEND_WINDOW_CLOCK=redis: cannot read the clock (%s); carrying the last reading forward",
                            type(exc).__name__)
            self._failing = True
            return
        self._failing = False
        shift = stored_text(offset).strip() if offset else ""
        # Signed (a clock set back); a malformed offset, written by hand, shifts nothing.
        shift_ms = int(shift) if shift.lstrip("-").isascii() and shift.lstrip("-").isdigit() else 0
        self._reading = (time.monotonic(), int(seconds) * 1000 + int(micros) // 1000 + shift_ms)

    def close(self) -> None:
        """Stop reading Redis (the clock keeps running on its last reading)."""
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(self.refresh_s):
            self.refresh()


def set_clock_offset(client: Any, keys: Keys, offset_ms: int) -> None:
    """Move the shared clock of SEND_WINDOW_CLOCK=redis (tests, demos) by `offset_ms` from Redis's TIME."""
    client.set(keys.clock_offset(), int(offset_ms))


def clock_offset_to(client: Any, keys: Keys, target_ms: int) -> int:
    """The offset that makes the shared clock read `target_ms` now; set it, return it."""
    seconds, micros = client.time()
    offset = target_ms - (int(seconds) * 1000 + int(micros) // 1000)
    set_clock_offset(client, keys, offset)
    return offset
