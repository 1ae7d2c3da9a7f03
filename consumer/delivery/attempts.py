"""One request to Pisano with its retries: each attempt in a throttle slot of its own.

Before every attempt but the first right after claiming, the claims are renewed: retries can
outlast a claim's lease, and an expired claim lets a replay send the same event elsewhere.
Just before each POST the claim learns that its ids may now have left (`sending`), so an
exception from then on settles them as unknown, never as free to send again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.delivery.backoff import Backoff
from consumer.delivery.destination import Destination
from consumer.delivery.failures import Verdict
from consumer.delivery.pisano import Accepted
from consumer.delivery.slots import SlotReserver
from consumer.errors import PisanoApiError, PisanoError, StateStoreError
from consumer.operations.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    budget_s: float
    backoff: Backoff


@dataclass
class Sent:
    """How one request (with its retries) ended."""

    accepted: Accepted | None = None
    error: PisanoError | None = None
    verdict: Verdict | None = None
    attempts: int = 0
    abandoned: bool = False  # stopping: it never reached a final answer
    claim_lost: bool = False  # the ids' claims could not be renewed: not sent again

    @property
    def refused_for_a_recipient(self) -> bool:
        return self.verdict is not None and self.verdict.action == "dead_letter" and self.verdict.scope == "recipient"


class Attempts:
    def __init__(self, destination: Destination, slots: SlotReserver, retry: RetryPolicy, metrics: Metrics,
                 stop: threading.Event) -> None:
        self.destination = destination
        self.slots = slots
        self.retry = retry
        self.metrics = metrics
        self.dm = metrics.destination(destination.name)
        self.stop = stop

    def send(self, campaign: str, body: bytes, *, slot_taken: bool, renew: Callable[[], bool],
             sending: Callable[[], None]) -> Sent:
        sent = Sent()
        started = time.monotonic()
        if not slot_taken and not self.slots.wait_for_slot():
            sent.abandoned = True
            return sent
        while True:
            if (sent.attempts or not slot_taken) and not renew():
                sent.claim_lost = True
                return sent
            sent.attempts += 1
            sending()
            self.dm.in_flight_requests.inc()
            try:
                sent.accepted = self.destination.client.send(campaign, body)
            except PisanoError as error:
                sent.error, sent.verdict = error, self.destination.classify(error)
                self._count(error)
            finally:
                self.dm.in_flight_requests.dec()
            if sent.accepted is not None:
                self.dm.requests("200", "").inc()
                self.metrics.request_duration.observe(sent.accepted.elapsed_s)
                return sent
            assert sent.error is not None and sent.verdict is not None
            retry_after = sent.error.retry_after_s if isinstance(sent.error, PisanoApiError) else None
            delay = self.retry.backoff.delay(sent.attempts, retry_after)
            if sent.verdict.action == "retry" and sent.attempts < self.retry.max_attempts \
                    and time.monotonic() - started + delay < self.retry.budget_s:
                if self._wait_to_retry(sent.error, delay):
                    continue
                sent.abandoned = True
            return sent

    def _wait_to_retry(self, error: PisanoError, delay: float) -> bool:
        """Back off, then get a new slot (every attempt counts against Pisano's throttle)."""
        if isinstance(error, PisanoApiError) and error.http_status == 429:
            self.dm.throttle_pauses.inc()
            try:
                self.destination.limiter.pause(delay)
            except StateStoreError as exc:
                self.metrics.redis_errors.labels("throttle").inc()
                log.error("could not pause the fleet's throttle: %s", exc)
        if self.stop.wait(delay):
            return False
        return self.slots.wait_for_slot()

    def _count(self, error: PisanoError) -> None:
        if isinstance(error, PisanoApiError):
            self.dm.requests(str(error.http_status), str(error.code or "")).inc()
        else:
            kind = "ambiguous" if getattr(error, "ambiguous", False) else "transport"
            self.dm.requests(kind, "").inc()
