"""Reserving throttle slots for a destination's sender threads.

A slot's time arrives as a wait measured on Redis's clock, so only a duration crosses machines:
clock skew between replicas does not matter. A slot further away than the horizon is refused
with its wait; then no thread of this sender asks again until the slot would be within reach,
so a replica holds no far slot and does not hammer Redis.
"""

from __future__ import annotations

import threading
import time

from consumer.delivery.outage import RedisOutage
from consumer.errors import StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.limiter import Limiter


class SlotReserver:
    def __init__(self, limiter: Limiter, metrics: Metrics, stop: threading.Event, outage: RedisOutage,
                 horizon_s: float, destination: str) -> None:
        self.limiter = limiter
        self.metrics = metrics
        self.dm = metrics.destination(destination)
        self.stop = stop
        self.outage = outage
        self.horizon_s = horizon_s
        self._blocked_until = 0.0  # shared by the threads: the next slot is beyond the horizon until then

    def reserve(self) -> float | None:
        """Reserve a slot: its time on this process's monotonic clock (None if stopping)."""
        while not self.stop.is_set():
            blocked = self._blocked_until - time.monotonic()
            if blocked > 0:
                self.stop.wait(min(blocked, 1.0))
                continue
            try:
                grant = self.limiter.acquire()
            except StateStoreError as exc:
                self.outage.failed("throttle", exc)
                continue
            self.outage.recovered()
            self.dm.throttle_fenced.set(1 if grant.held else 0)
            if not grant.granted:
                self.dm.throttle_refusals.inc()
                # A fence holds every slot until its end; a far slot comes within reach earlier.
                ahead = grant.wait_s if grant.held else grant.wait_s - self.horizon_s
                self._blocked_until = time.monotonic() + max(0.05, ahead)
                continue
            self.dm.throttle_slots.inc()
            self.metrics.throttle_wait.observe(grant.wait_s)
            return time.monotonic() + grant.wait_s
        return None

    def wait_for_slot(self) -> bool:
        """Reserve a slot and sleep until it; False when stopping."""
        slot_at = self.reserve()
        return slot_at is not None and not self.stop.wait(max(0.0, slot_at - time.monotonic()))
