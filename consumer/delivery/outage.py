"""Waiting out a Redis outage in a sender thread: counted, logged sparingly, backed off."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from consumer.delivery.backoff import REDIS_BACKOFF
from consumer.errors import StateStoreError
from consumer.operations.metrics import Metrics

log = logging.getLogger(__name__)


class RedisOutage:
    """Redis unreachable means no slot and no claim, so no send (ARCHITECTURE.md invariant 5):
    the thread waits and tries again while the batches wait in the buffer."""

    def __init__(self, metrics: Metrics, stop: threading.Event) -> None:
        self.metrics = metrics
        self.stop = stop
        self._failures = 0

    def failed(self, operation: str, exc: StateStoreError, wait: Callable[[float], bool] | None = None) -> None:
        """Count the failure and wait before the next try (returns early when stopping). `wait`:
        how to wait instead of `stop.wait` (a request holding claims: its heartbeat's)."""
        self.metrics.redis_errors.labels(operation).inc()
        self._failures += 1
        if self._failures in (1, 10) or self._failures % 100 == 0:
            log.error("not sending until Redis answers (%s failed): %s", operation, exc)  # exc says why, what to do
        (wait or self.stop.wait)(REDIS_BACKOFF.delay(self._failures))

    def recovered(self) -> None:
        self._failures = 0
