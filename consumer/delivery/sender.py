"""Sender threads: throttle slot, claim, POST, settle, report.

Each thread promises a slot for a due batch, reserves it in the shared limiter, sleeps until
shortly before it (the batch keeps filling meanwhile), takes the batch, claims its event ids,
POSTs at the slot, records the outcome in Redis and hands it to the poll loop, which commits
offsets or dead-letters. Threads sleep; the poll loop never does (DESIGN.md invariant 4).

What a failure leads to is decided by `consumer.delivery.failures.classify`:
- retriable (429, 5xx, 408, connection refused): retried with backoff, each attempt in a slot of
  its own, within the attempt and time budget; then dead-lettered;
- ambiguous (read timeout, 504): AMBIGUOUS_POLICY, by default dead-lettered as `ambiguous`;
- account scope (wrong token, locked account): the fleet's circuit opens (consumer.state.circuit);
- recipient scope (13028 invalid parameters, ...): the batch is split to find the bad recipients,
  within ISOLATION_BUDGET_SHARE of the throttle budget (consumer.delivery.isolation);
- request scope (unknown campaign, invalid flow): the whole batch is dead-lettered.

Redis unreachable means no slot and no claim, so no send (invariant 5): the thread backs off and
tries again; the batches wait in the buffer, and the poll loop pauses fetching when it is full.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from consumer.delivery.batching import Batch, Batcher, PendingEvent, TopicPartition
from consumer.delivery.failures import Verdict, classify
from consumer.delivery.isolation import IsolationBudget, split
from consumer.delivery.pisano import Accepted, PisanoClient, build_body
from consumer.errors import PisanoApiError, PisanoError, StateStoreError
from consumer.operations.logs import redact_phones
from consumer.operations.metrics import Metrics
from consumer.outcomes.deadletter import Failure
from consumer.state.circuit import CircuitBreaker, Trip
from consumer.state.dedup import CLAIMED, DELIVERED, HELD, ClaimRequest, Deduplicator
from consumer.state.limiter import RateLimiter

log = logging.getLogger(__name__)

OutcomeKind = Literal["delivered", "skipped", "requeue", "dead_letter"]
AmbiguousPolicy = Literal["dead_letter", "assume_delivered", "resend"]
REDIS_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
# The batch is taken, claimed and encoded this long before its slot, so that at the slot only the
# POST remains: requests then reach Pisano a steady moment after their slots, and the throttle
# margin only has to cover the network, not a claim of 5000 ids or a JSON body being built.
PREPARE_LEAD_S = 0.2


@dataclass
class Outcome:
    kind: OutcomeKind
    events: list[PendingEvent]
    failure: Failure | None = None
    accepted_at_ms: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    budget_s: float
    backoff_base_s: float
    backoff_max_s: float

    def backoff(self, attempt: int, retry_after_s: float | None) -> float:
        """Full-jitter exponential backoff; never sooner than the server's Retry-After."""
        jittered = random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))
        return max(jittered, retry_after_s or 0.0)


@dataclass(frozen=True)
class FailurePolicy:
    retry: RetryPolicy
    ambiguous: AmbiguousPolicy
    isolation_share: float


@dataclass
class _Sent:
    """How one request (with its retries) ended."""

    accepted: Accepted | None = None
    error: PisanoError | None = None
    verdict: Verdict | None = None
    attempts: int = 0
    abandoned: bool = False  # stopping: it never reached a final answer
    claim_lost: bool = False  # the ids' claims could not be renewed: not sent again


@dataclass
class _Work:
    """What one thread has in flight, for the rebalance callback to wait on."""

    partitions: Tally[TopicPartition] = field(default_factory=Tally)


class Sender:
    def __init__(
        self,
        *,
        batcher: Batcher,
        dedup: Deduplicator,
        client: PisanoClient,
        limiter: RateLimiter | None,
        circuit: CircuitBreaker,
        metrics: Metrics,
        report: Callable[[Outcome], None],
        policy: FailurePolicy,
        threads: int,
        throttle_horizon_s: float,
        max_lateness_s: float,
    ) -> None:
        self.batcher = batcher
        self.dedup = dedup
        self.client = client
        self.limiter = limiter
        self.circuit = circuit
        self.metrics = metrics
        self.report = report
        self.policy = policy
        self.retry = policy.retry
        self.throttle_horizon_s = throttle_horizon_s
        self.max_lateness_s = max_lateness_s
        self._threads = [threading.Thread(target=self._run, name=f"sender-{i}", daemon=True) for i in range(threads)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._work: dict[int, _Work] = {}
        self._blocked_until = 0.0  # the next slot is beyond the horizon until then (all threads)
        self._redis_failures = 0

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        """Stop taking work; threads finish the request they are in, up to `timeout`."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def in_flight(self, partitions: set[TopicPartition] | None = None) -> int:
        """Events in requests under way (only those of `partitions` when given)."""
        with self._lock:
            return sum(n for work in self._work.values() for tp, n in work.partitions.items()
                       if partitions is None or tp in partitions)

    # ------------------------------------------------------------------ thread body

    def _run(self) -> None:
        while not self._stop.is_set():
            promised = False
            try:
                if not self.batcher.wait_for_demand(self._stop, timeout=0.5):
                    continue
                promised = True
                if self._short_circuit():
                    continue
                slot_at = self._reserve_slot()
                if slot_at is None or self._stop.wait(max(0.0, slot_at - PREPARE_LEAD_S - time.monotonic())):
                    self.batcher.cancel_promise()
                    continue
                promised = False
                batch = self.batcher.take()
                if batch is None:
                    self.metrics.throttle_wasted.inc()
                    continue
                self._process(batch, slot_at)
            except Exception:  # a bug here must not silently kill a sender thread
                if promised:  # a promise never kept would hold back a due batch for good
                    self.batcher.cancel_promise()
                log.exception("sender thread error; continuing")
                self._stop.wait(1.0)

    def _short_circuit(self) -> bool:
        """While the circuit is open, dead-letter the due batch at once, burning no slot."""
        try:
            state, trip = self.circuit.state()
            if state == "closed":
                return False
        except StateStoreError as exc:
            self.batcher.cancel_promise()
            self._redis_down("circuit", exc)
            return True
        batch = self.batcher.take()
        if batch is not None and trip is not None:
            self.report(Outcome("dead_letter", batch.events, Failure(
                "pisano_error", f"not sent, circuit open: Pisano answered {trip.message}", code=trip.code,
                http_status=trip.http_status, campaign_id=batch.campaign_id, attempts=0)))
        return True

    def _reserve_slot(self) -> float | None:
        """Reserve a throttle slot: its time on this process's monotonic clock (None if stopping).

        The wait comes from Redis's clock, so only a duration crosses machines: clock skew
        between replicas does not matter."""
        if self.limiter is None:
            return time.monotonic()
        while not self._stop.is_set():
            blocked = self._blocked_until - time.monotonic()
            if blocked > 0:
                self._stop.wait(min(blocked, 1.0))
                continue
            try:
                grant = self.limiter.acquire()
            except StateStoreError as exc:
                self._redis_down("throttle", exc)
                continue
            self._redis_failures = 0
            if not grant.granted:
                self.metrics.throttle_refusals.inc()
                # Ask again when the slot would be within the horizon; until then hold nothing.
                self._blocked_until = time.monotonic() + max(0.05, grant.wait_s - self.throttle_horizon_s)
                continue
            self.metrics.throttle_slots.inc()
            self.metrics.throttle_wait.observe(grant.wait_s)
            return time.monotonic() + grant.wait_s
        return None

    def _redis_down(self, operation: str, exc: StateStoreError) -> None:
        self.metrics.redis_errors.labels(operation).inc()
        delay = REDIS_BACKOFF_S[min(self._redis_failures, len(REDIS_BACKOFF_S) - 1)]
        self._redis_failures += 1
        if self._redis_failures in (1, 10) or self._redis_failures % 100 == 0:
            log.error("Redis unavailable (%s): not sending until it is back; %s", operation, exc)
        self._stop.wait(delay)

    # ------------------------------------------------------------------ one batch

    def _process(self, batch: Batch, slot_at: float) -> None:
        ident = threading.get_ident()
        with self._lock:
            work = self._work[ident] = _Work(Tally(e.tp for e in batch.events))
        try:
            tag = self.dedup.new_tag()
            claimed = self._claim(tag, batch, work)
            if claimed:
                self._deliver(tag, batch, claimed, slot_at)
        finally:
            with self._lock:
                self._work.pop(ident, None)

    def _claim(self, tag: str, batch: Batch, work: _Work) -> list[PendingEvent]:
        """Claim the batch's ids; report skipped, held and unknown ones; top up once if room."""
        candidates = batch.events
        claimed: list[PendingEvent] = []
        for round_ in range(2):
            try:
                statuses = self.dedup.claim(tag, [ClaimRequest(e.recipient.event_id, e.replay) for e in candidates])
            except StateStoreError as exc:
                # The script may have run and only its answer got lost: free what it may have
                # claimed under this tag, or those ids would look in flight until the lease ends.
                with contextlib.suppress(StateStoreError):
                    self.dedup.release(tag, [e.recipient.event_id for e in candidates])
                self.report(Outcome("requeue", candidates))
                self._redis_down("claim", exc)
                break
            self._redis_failures = 0
            skipped, held, unknown = [], [], []
            for event, status in zip(candidates, statuses, strict=True):
                if status == CLAIMED:
                    claimed.append(event)
                elif status == DELIVERED:
                    skipped.append(event)
                elif status == HELD:
                    held.append(event)
                else:
                    unknown.append(event)
            if skipped:
                self.metrics.duplicates_skipped.inc(len(skipped))
                self.report(Outcome("skipped", skipped))
            if held:
                self.metrics.events_held.inc(len(held))
                self.report(Outcome("requeue", held))
            if unknown:
                self.report(Outcome("dead_letter", unknown, Failure(
                    "ambiguous", "an earlier attempt for this event id may have reached Pisano "
                    "(its outcome was never recorded); check, then replay", campaign_id=batch.campaign_id)))
            room = self.batcher.max_recipients - len(claimed)
            if round_ or room <= 0 or not (skipped or held or unknown):
                break
            # Skipped ids freed room in a request whose slot is already paid for.
            candidates = self.batcher.top_up(Batch(batch.campaign_id, claimed), room)
            if not candidates:
                break
            with self._lock:
                work.partitions.update(e.tp for e in candidates)
            batch.events = claimed + candidates
        return claimed

    def _deliver(self, tag: str, batch: Batch, events: list[PendingEvent], slot_at: float) -> None:
        campaign = batch.campaign_id
        body = build_body([e.recipient for e in events])
        if self._stop.wait(max(0.0, slot_at - time.monotonic())):
            self._settle(self.dedup.release, tag, events)  # never sent: free again, records stay uncommitted
            return
        if self.limiter is not None and time.monotonic() - slot_at > self.max_lateness_s:
            # Preparing overran the slot (a slow Redis, a busy CPU). Sent this late, the request
            # could reach Pisano after a later slot's request and break a window; take a new slot.
            self.metrics.throttle_wasted.inc()
            if not self._wait_for_slot():
                self._settle(self.dedup.release, tag, events)
                return
        self.metrics.batch_size.observe(len(events))
        self.metrics.batch_age.observe(batch.age(time.monotonic()))
        sent = self._send(campaign, body, first_slot_taken=True, renew=lambda: self._renew(tag, events))
        if self._unfinished(sent, tag, events):
            return
        if sent.accepted is not None:
            self._delivered(tag, campaign, events, sent)
            return
        assert sent.error is not None and sent.verdict is not None
        if sent.verdict.scope == "account" and sent.verdict.action == "dead_letter":
            self._open_circuit(sent.error)
        if _refused_for_a_recipient(sent) and len(events) > 1:
            self._isolate(tag, campaign, events, sent)
            return
        self._failed(tag, campaign, events, sent)

    def _send(self, campaign: str, body: bytes, *, first_slot_taken: bool, renew: Callable[[], bool]) -> _Sent:
        """POST one request, retrying what may be retried, each attempt in a throttle slot of its own.

        Before every attempt but the first right after claiming, the claims are renewed: retries
        and isolation can outlast a claim's lease, and an expired claim lets a replay send the
        same event elsewhere."""
        sent = _Sent()
        started = time.monotonic()
        if not first_slot_taken and not self._wait_for_slot():
            sent.abandoned = True
            return sent
        while True:
            if (sent.attempts or not first_slot_taken) and not renew():
                sent.claim_lost = True
                return sent
            sent.attempts += 1
            self.metrics.in_flight_requests.inc()
            try:
                sent.accepted = self.client.send(campaign, body)
            except PisanoError as error:
                sent.error, sent.verdict = error, classify(error)
                self._count_request(error)
            finally:
                self.metrics.in_flight_requests.dec()
            if sent.accepted is not None:
                self.metrics.requests.labels("200", "").inc()
                self.metrics.request_duration.observe(sent.accepted.elapsed_s)
                return sent
            assert sent.error is not None and sent.verdict is not None
            retry_after = sent.error.retry_after_s if isinstance(sent.error, PisanoApiError) else None
            delay = self.retry.backoff(sent.attempts, retry_after)
            spent = time.monotonic() - started
            if sent.verdict.action == "retry" and sent.attempts < self.retry.max_attempts \
                    and spent + delay < self.retry.budget_s:
                if self._wait_to_retry(sent.error, delay):
                    continue
                sent.abandoned = True
            return sent

    def _renew(self, tag: str, events: list[PendingEvent]) -> bool:
        """Claim again under the same tag (idempotent; refreshes the lease). False: do not send."""
        requests = [ClaimRequest(e.recipient.event_id, e.replay) for e in events]
        for delay in REDIS_BACKOFF_S:
            try:
                return all(status == CLAIMED for status in self.dedup.claim(tag, requests))
            except StateStoreError as exc:
                self.metrics.redis_errors.labels("claim").inc()
                log.error("could not renew claims (%s); retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    return False
        return False

    def _unfinished(self, sent: _Sent, tag: str, events: list[PendingEvent]) -> bool:
        """Handle a request that never reached a final answer; True if so."""
        if sent.abandoned:  # stopping: the ids are free again, the records stay uncommitted
            self._settle(self.dedup.release, tag, events)
            return True
        if sent.claim_lost:  # their fate is decided again from Redis's state, later
            self._settle(self.dedup.release, tag, events)
            self.report(Outcome("requeue", events))
            return True
        return False

    def _wait_to_retry(self, error: PisanoError, delay: float) -> bool:
        """Back off, then get a new slot (every attempt counts against Pisano's throttle)."""
        if isinstance(error, PisanoApiError) and error.http_status == 429 and self.limiter is not None:
            self.metrics.throttle_pauses.inc()
            try:
                self.limiter.pause(delay)
            except StateStoreError as exc:
                self.metrics.redis_errors.labels("throttle").inc()
                log.error("could not pause the fleet's throttle: %s", exc)
        if self._stop.wait(delay):
            return False
        return self._wait_for_slot()

    def _wait_for_slot(self) -> bool:
        slot_at = self._reserve_slot()
        return slot_at is not None and not self._stop.wait(max(0.0, slot_at - time.monotonic()))

    # ------------------------------------------------------------------ outcomes

    def _delivered(self, tag: str, campaign: str, events: list[PendingEvent], sent: _Sent) -> None:
        assert sent.accepted is not None
        self._settle(self.dedup.delivered, tag, events)
        self.metrics.recipients_delivered.inc(len(events))
        log.info("delivered %d recipients", len(events),
                 extra={"campaign": campaign, "request_id": sent.accepted.request_id, "count": len(events),
                        "attempt": sent.attempts})
        self.report(Outcome("delivered", events, accepted_at_ms=int(time.time() * 1000)))

    def _failed(self, tag: str, campaign: str, events: list[PendingEvent], sent: _Sent) -> None:
        """A final failure of the whole request: settle the ids as its fate demands, dead-letter."""
        assert sent.error is not None and sent.verdict is not None
        reason = sent.verdict.reason
        if sent.verdict.action == "ambiguous":
            if self.policy.ambiguous == "assume_delivered":
                log.warning("request fate unknown (%s); AMBIGUOUS_POLICY=assume_delivered: counting %d as delivered",
                            sent.error, len(events), extra={"campaign": campaign, "count": len(events)})
                self._settle(self.dedup.delivered, tag, events)
                self.report(Outcome("delivered", events, accepted_at_ms=int(time.time() * 1000)))
                return
            if self.policy.ambiguous == "resend":
                # At-least-once by choice: the ids are freed and the events go round again.
                self._settle(self.dedup.release, tag, events)
                self.report(Outcome("requeue", events))
                return
            self._settle(self.dedup.unknown, tag, events)
        else:
            self._settle(self.dedup.release, tag, events)
            if sent.verdict.action == "retry" and reason == "pisano_error":
                # Retriable answers (5xx, 408) until the attempts or the time budget ran out. A 429
                # keeps `throttled`, no answer at all keeps `transport_error`.
                reason = "retries_exhausted"
        failure = self._failure(reason, sent, campaign)
        log.warning("request failed: %s; dead-lettering %d events", redact_phones(failure.message), len(events),
                    extra={"campaign": campaign, "status": failure.http_status, "code": failure.code,
                           "reason": reason, "count": len(events), "attempt": sent.attempts})
        self.report(Outcome("dead_letter", events, failure))

    @staticmethod
    def _failure(reason: str, sent: _Sent, campaign: str) -> Failure:
        api = sent.error if isinstance(sent.error, PisanoApiError) else None
        return Failure(
            reason=reason,
            message=api.message if api else getattr(sent.error, "message", str(sent.error)),
            code=api.code if api else None,
            http_status=api.http_status if api else None,
            campaign_id=campaign,
            attempts=sent.attempts,
        )

    def _isolate(self, tag: str, campaign: str, events: list[PendingEvent], first: _Sent) -> None:
        """Split a refused batch to find the recipients that made Pisano refuse it.

        A refused group is halved and its first half sent alone. Accepted: delivered, and the
        second half must hold the culprit, so it is split in turn without being sent whole.
        Refused: the first half is split in turn, and the second half is sent to learn its fate.
        A single recipient refused on its own is dead-lettered with Pisano's answer. Groups
        left when the budget is spent are dead-lettered with the code, marked not isolated.
        """
        budget = IsolationBudget.for_windows(self.limiter.windows if self.limiter else (), self.policy.isolation_share)
        refused: list[tuple[list[PendingEvent], _Sent]] = [(events, first)]
        spent = 0

        def attempt(group: list[PendingEvent], because: _Sent) -> _Sent | bool:
            """Send `group`: its refusal to split further, True when accepted, False otherwise."""
            nonlocal spent
            if not budget.spend():
                self._unisolated(tag, campaign, group, because)
                return False
            spent += 1
            sent = self._send(campaign, build_body([e.recipient for e in group]), first_slot_taken=False,
                              renew=lambda: self._renew(tag, group))
            if self._unfinished(sent, tag, group):
                pass
            elif sent.accepted is not None:
                self._delivered(tag, campaign, group, sent)
                return True
            elif _refused_for_a_recipient(sent):
                return sent
            else:
                self._failed(tag, campaign, group, sent)
            return False

        while refused:
            group, answer = refused.pop()
            if len(group) == 1:
                self._failed(tag, campaign, group, answer)
                continue
            first_half, second_half = split(group)
            first_answer = attempt(first_half, answer)
            if isinstance(first_answer, _Sent):
                refused.append((first_half, first_answer))
            elif first_answer and len(second_half) > 1:
                refused.append((second_half, answer))  # the culprit must be in here: split it unsent
                continue
            second_answer = attempt(second_half, answer)
            if isinstance(second_answer, _Sent):
                refused.append((second_half, second_answer))
        log.info("isolated the recipients Pisano refused in %d extra requests", spent,
                 extra={"campaign": campaign, "count": len(events)})

    def _unisolated(self, tag: str, campaign: str, events: list[PendingEvent], refused: _Sent) -> None:
        self._settle(self.dedup.release, tag, events)
        failure = self._failure("pisano_error", refused, campaign)
        failure = Failure(failure.reason, f"{failure.message} (not isolated: ISOLATION_BUDGET_SHARE spent)",
                          failure.code, failure.http_status, campaign, refused.attempts)
        self.report(Outcome("dead_letter", events, failure))

    def _settle(self, record: Callable[[str, list[str]], None], tag: str, events: list[PendingEvent]) -> None:
        """Record a request's outcome in Redis, retrying while Redis is away (bounded)."""
        ids = [e.recipient.event_id for e in events]
        for delay in (*REDIS_BACKOFF_S, *(5.0,) * 10):
            try:
                record(tag, ids)
                return
            except StateStoreError as exc:
                self.metrics.redis_errors.labels("settle").inc()
                log.error("could not record an outcome in Redis (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)  # not interruptible: this outcome must be recorded if at all possible
        log.error("gave up recording an outcome in Redis; duplicates of these %d events will be "
                  "dead-lettered as ambiguous once their claim lease expires", len(ids))

    # ------------------------------------------------------------------ circuit

    def _open_circuit(self, error: PisanoError) -> None:
        api = error if isinstance(error, PisanoApiError) else None
        try:
            self.circuit.open(Trip(api.code if api else None, api.http_status if api else None, str(error)))
        except StateStoreError as exc:
            self.metrics.redis_errors.labels("circuit").inc()
            log.error("could not open the circuit in Redis: %s", exc)
        self.metrics.circuit_state.set(1)

    def _count_request(self, error: PisanoError) -> None:
        if isinstance(error, PisanoApiError):
            self.metrics.requests.labels(str(error.http_status), str(error.code or "")).inc()
        else:
            self.metrics.requests.labels("ambiguous" if getattr(error, "ambiguous", False) else "transport", "").inc()


def _refused_for_a_recipient(sent: _Sent) -> bool:
    return sent.verdict is not None and sent.verdict.action == "dead_letter" and sent.verdict.scope == "recipient"
