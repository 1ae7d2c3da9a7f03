"""In-memory parts for unit tests of the sending side: a scripted Pisano, events, a sender."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumer.config.windows import parse_rate_limits
from consumer.delivery.attempts import RetryPolicy
from consumer.delivery.backoff import Backoff
from consumer.delivery.batching import Batch, Batcher, PendingEvent
from consumer.delivery.destination import Destination
from consumer.delivery.outcome import Outcome
from consumer.delivery.pisano import Accepted
from consumer.delivery.sender import FailurePolicy, Sender
from consumer.delivery.slots import Slot
from consumer.errors import PisanoApiError, SlotMissed
from consumer.ingest.mapping import Recipient
from consumer.operations.metrics import Metrics
from consumer.state.circuit import CircuitBreaker
from consumer.state.limiter import Limiter, NoLimiter
from consumer.state.memory import MemoryCircuitStore, MemoryDedup, MemoryLimiter

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
Answer = Accepted | BaseException | Callable[[list[str]], Accepted | BaseException]


@dataclass
class FakePisano:
    """Answers each POST with the next scripted answer (then accepts); records what was sent.

    An answer may be a function of the request's phones, e.g. to refuse any request holding a
    bad phone, as Pisano refuses a whole request for one bad recipient."""

    answers: list[Answer] = field(default_factory=list)
    default: Answer | None = None
    requests: list[list[str]] = field(default_factory=list)
    probes: int = 0
    missed: int = 0  # requests not sent: called after their `leave_by`
    warmed: list[float] = field(default_factory=list)  # each `warm`'s time allowed
    # Optional: called as each request would leave, before the `leave_by` check (a stall there).
    on_wire: Callable[[], None] | None = None

    def send(self, campaign_id: str, body: bytes, leave_by: float | None = None) -> Accepted:
        import json

        if self.on_wire is not None:
            self.on_wire()
        if leave_by is not None and (over := time.monotonic() - leave_by) > 0:  # as PisanoClient at the wire
            self.missed += 1
            raise SlotMissed(over)
        phones = list(json.loads(body)["phone_numbers"])
        self.requests.append(phones)
        answer = self.answers.pop(0) if self.answers else (self.default or Accepted(200, "req", 0.01))
        if callable(answer) and not isinstance(answer, BaseException):
            answer = answer(phones)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def warm(self, within_s: float) -> None:
        self.warmed.append(within_s)

    def probe_token(self, campaign_id: str = "", leave_by: float | None = None) -> PisanoApiError | None:
        if self.on_wire is not None:
            self.on_wire()
        if leave_by is not None and (over := time.monotonic() - leave_by) > 0:  # as `send`
            self.missed += 1
            raise SlotMissed(over)
        self.probes += 1
        return None

    def close(self) -> None:
        pass

    @property
    def sent_phones(self) -> list[str]:
        return [p for request in self.requests for p in request]


def event(i: int, campaign: str = CAMPAIGN, replay_of: str | None = None, partition: int = 0) -> PendingEvent:
    recipient = Recipient(event_id=f"e{i}", campaign_id=campaign, phone=f"+9053212{i:05d}")
    return PendingEvent(message=None, tp=("t", partition), offset=i, epoch=0, recipient=recipient, enqueued_at=0.0,
                        replay_of=replay_of)


@dataclass
class Rig:
    """A sender on fakes, its outcomes collected."""

    sender: Sender
    pisano: FakePisano
    dedup: MemoryDedup
    batcher: Batcher
    outcomes: list[Outcome]

    def process(self, events: list[PendingEvent]) -> None:
        self.sender.process(Batch(events[0].recipient.campaign_id, list(events)), slot=Slot(0.0))

    def kinds(self) -> dict[str, set[str]]:
        """Event id -> every outcome kind it got (each should get exactly one)."""
        out: dict[str, set[str]] = {}
        for outcome in self.outcomes:
            for e in outcome.events:
                out.setdefault(e.recipient.event_id, set()).add(outcome.kind)
        return out

    def reasons(self) -> dict[str, str]:
        return {e.recipient.event_id: o.failure.reason for o in self.outcomes if o.failure for e in o.events}

    def attempts(self) -> dict[str, str | None]:
        """Event id -> the attempt id its dead-letter names (dlq.attempt.id)."""
        return {e.recipient.event_id: o.failure.attempt_id for o in self.outcomes if o.failure for e in o.events}

    def unknown_mark(self, event_id: str) -> str:
        """The unknown mark an ambiguous dead-letter's replay may override: the one it names."""
        return f"u|{self.attempts()[event_id]}"

    def outcome_count(self) -> int:
        return sum(len(o.events) for o in self.outcomes)


def rig(pisano: FakePisano | None = None, *, limiter: Limiter | None = None, max_attempts: int = 3,
        ambiguous: str = "dead_letter", isolation_share: float = 0.25, dedup: MemoryDedup | None = None,
        max_recipients: int = 5000, stop: threading.Event | None = None, quiet_hours: Any = None) -> Rig:
    pisano = pisano or FakePisano()
    dedup = dedup or MemoryDedup(lease_ms=60_000, horizon_s=3600)
    circuit = CircuitBreaker(MemoryCircuitStore(), cooldown_ms=60_000, max_cooldown_ms=120_000, probe_lease_ms=1000)
    destination = Destination("default", pisano, limiter or NoLimiter(), circuit, max_recipients=max_recipients)
    batcher = Batcher(max_recipients, 1.0)
    outcomes: list[Outcome] = []
    policy = FailurePolicy(RetryPolicy(max_attempts, 60.0, Backoff(0.001, 0.002)), ambiguous,  # type: ignore[arg-type]
                           isolation_share)
    sender = Sender(destination=destination, batcher=batcher, dedup=dedup, metrics=Metrics(), report=outcomes.append,
                    policy=policy, threads=1, throttle_horizon_s=30.0, claim_lease_ms=dedup.lease_ms,
                    quiet_hours=quiet_hours)
    return Rig(sender, pisano, dedup, batcher, outcomes)


def windows_limiter(spec: str, **kwargs: Any) -> MemoryLimiter:
    # No grace: a sender's tests start on a state no replica could have lost (the fence has its own).
    return MemoryLimiter(parse_rate_limits(spec), margin_ms=0, horizon_ms=kwargs.get("horizon_ms", 60_000),
                         grace_ms=kwargs.get("grace_ms", 0))


ClaimAnswer = Callable[[int, Any, Callable[[], Any]], Any]


def intercept_claims(dedup: MemoryDedup, answer: ClaimAnswer) -> None:
    """Every `dedup.claim` (the claim, then each renewal and beat) answered by `answer(n, requests,
    real)`: n counts the calls from 1, `real()` makes the call for real. A test's Redis that finds a
    claim lost, or fails, from some call on."""
    real_claim = dedup.claim
    calls = itertools.count(1)

    def claim(tag: Any, requests: Any, *rest: Any) -> Any:
        return answer(next(calls), requests, lambda: real_claim(tag, requests, *rest))

    dedup.claim = claim  # type: ignore[method-assign]


def lands_late_then_sent_once(r: Rig, events: list[PendingEvent], late: list[Callable[[], Any]],
                              before_retry: Callable[[], None] | None = None) -> None:
    """A request ended unsent (each event requeued) while calls whose replies were lost are still
    under way: they land now, after its release; then (after `before_retry`) the events' next
    attempt delivers each of them."""
    assert r.kinds() == {e.recipient.event_id: {"requeue"} for e in events}
    assert late, "no call's reply was lost"
    while late:
        late.pop()()
    if before_retry is not None:
        before_retry()
    r.outcomes.clear()
    r.process(events)
    assert r.kinds() == {e.recipient.event_id: {"delivered"} for e in events}, r.reasons()
