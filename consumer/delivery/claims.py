"""A batch's claim on its event ids, as a context manager (ARCHITECTURE.md invariants 1 and 2).

Inside the `with`: claim the ids, renew the claims before every retry, mark which ids are in a
request that may have left (`sending`), settle them with the request's fate. On exit, whatever
way the block ends, every id still claimed is settled: released when no request carrying it
may have left (it may be sent again), unknown when one may have (never resent on its own). So
no exception can leave a claim behind to block its event for the whole lease.

With the contact cooldown on, the claim also drives the batch's phone reservations
(`contacts.PhoneReservation`, same tag): phones are reserved for the ids just claimed, and every
renewal, settlement and the exit path do for a phone what they do for its id.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from consumer.delivery.backoff import REDIS_BACKOFF
from consumer.delivery.batching import PendingEvent
from consumer.delivery.contacts import ContactCooldown, PhoneReservation
from consumer.errors import StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.cooldown import PhoneFate
from consumer.state.dedup import ClaimRequest, ClaimStatus, DedupStore, Settlement

log = logging.getLogger(__name__)

# A phone's fate follows its id's.
PHONE_FATES = {Settlement.DELIVERED: PhoneFate.ACCEPTED, Settlement.UNKNOWN: PhoneFate.UNKNOWN,
               Settlement.RELEASED: PhoneFate.RELEASED}
RENEW_TRIES = 5
CLAIM_TRIES = 3  # a lost reply is asked again under the same tag; then Redis counts as away
SETTLE_TRIES = 15  # about a minute of Redis outage: an outcome must be recorded if at all possible


@dataclass
class Claimed:
    """The answer to one claim, event by event."""

    claimed: list[PendingEvent] = field(default_factory=list)
    delivered: list[PendingEvent] = field(default_factory=list)
    held: list[PendingEvent] = field(default_factory=list)
    unknown: list[PendingEvent] = field(default_factory=list)
    # The attempt whose unknown mark each unknown event found: its dead-letter's dlq.attempt.id.
    unknown_attempts: list[str] = field(default_factory=list)
    # Claimed ids the contact cooldown refused (their claims released): phone contacted within the
    # cooldown; phone reserved by a live attempt elsewhere; phone not readable into E.164.
    cooling: list[PendingEvent] = field(default_factory=list)
    phone_held: list[PendingEvent] = field(default_factory=list)
    uncheckable: list[PendingEvent] = field(default_factory=list)

    def add(self, event: PendingEvent, status: ClaimStatus, attempt: str = "") -> None:
        if status is ClaimStatus.CLAIMED:
            self.claimed.append(event)
        elif status is ClaimStatus.DELIVERED:
            self.delivered.append(event)
        elif status is ClaimStatus.HELD:
            self.held.append(event)
        else:
            self.unknown.append(event)
            self.unknown_attempts.append(attempt)


class Claim:
    def __init__(self, dedup: DedupStore, metrics: Metrics, stop: threading.Event, *,
                 cooldown: ContactCooldown | None = None, window_ms: int = 0) -> None:
        self.dedup = dedup
        self.metrics = metrics
        self.stop = stop
        self.tag = dedup.new_tag()
        # The batch's phone reservations, when its campaign has a cooldown.
        self.phones = PhoneReservation(cooldown, window_ms, self.tag, metrics, stop) \
            if cooldown is not None and window_ms > 0 else None
        # When the batch's first claim was asked (monotonic): a lease runs from there, however
        # long the rest of the preparation took.
        self.claimed_at: float | None = None
        self._held: dict[str, bool] = {}  # claimed event id -> a request carrying it may have left
        # Settled on exit, for the sender to report: (events, whether a request may have left).
        self.left_over: list[tuple[str, bool]] = []

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.phones is not None:
            try:
                self.phones.left_over({i for i, sent in self._held.items() if sent})
            except Exception:  # never mask the error; a reservation left behind expires into a contact
                log.exception("could not settle left-over phone reservations")
        if not self._held:
            return
        self.left_over = list(self._held.items())
        unknown = [i for i, sent in self.left_over if sent]
        released = [i for i, sent in self.left_over if not sent]
        if error is not None:
            log.error("batch processing failed after claiming (%s); settling %d claims: %d unknown, %d released",
                      type(error).__name__, len(self.left_over), len(unknown), len(released))
        self._held.clear()
        try:
            self._settle_ids(Settlement.UNKNOWN, unknown)
            self._settle_ids(Settlement.RELEASED, released)
        except Exception:  # never mask the error that brought us here; the lease bounds the claims
            log.exception("could not settle %d left-over claims; they expire with their lease", len(self.left_over))

    def claim(self, events: Sequence[PendingEvent]) -> Claimed:
        """Claim the events' ids in one round trip; StateStoreError if Redis stays away.

        A lost reply (a timeout, a failover) leaves the ids maybe claimed under this tag. Claims
        are idempotent per tag, so the claim is asked again under the same tag: its answer says
        what is really ours. Parked instead, with a release that may fail as well, the ids would
        stay claimed for the whole lease and then end as ambiguous without ever being sent, each
        round wasting a throttle slot. Only if Redis stays away is what the
        script may have claimed released, and the error raised."""
        requests = _requests(events)
        if self.claimed_at is None:
            self.claimed_at = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                statuses = self.dedup.claim(self.tag, requests)
                break
            except StateStoreError as exc:
                delay = REDIS_BACKOFF.delay(tries)
                if tries < CLAIM_TRIES:  # the last failure is counted by the caller's outage
                    self.metrics.redis_errors.labels("claim").inc()
                    log.warning("claim reply lost (%s); claiming again under the same tag in %.1fs", exc, delay)
                if tries >= CLAIM_TRIES or self.stop.wait(delay):
                    with contextlib.suppress(StateStoreError):
                        self.dedup.settle(Settlement.RELEASED, self.tag, [e.recipient.event_id for e in events])
                    raise
        if len(statuses) == len(events) and statuses.count(ClaimStatus.CLAIMED) == len(events):
            # The common answer, taken whole: this runs for every event of every request.
            self._held.update(dict.fromkeys((r.event_id for r in requests), False))
            return self._reserve_phones(Claimed(claimed=list(events)))
        answer = Claimed()
        for event, status, attempt in zip(events, statuses, statuses.attempts, strict=True):
            answer.add(event, status, attempt)
            if status is ClaimStatus.CLAIMED:
                self._held[event.recipient.event_id] = False
        return self._reserve_phones(answer)

    def _reserve_phones(self, answer: Claimed) -> Claimed:
        """Reserve the phones of the ids just claimed; release the claims of those refused. If
        Redis stays away, the ids just claimed are released too and StateStoreError raised."""
        if self.phones is None or not answer.claimed:
            return answer
        try:
            phones = self.phones.reserve(answer.claimed)
        except StateStoreError:
            with contextlib.suppress(StateStoreError):
                self.dedup.settle(Settlement.RELEASED, self.tag, [e.recipient.event_id for e in answer.claimed])
            for event in answer.claimed:
                self._held.pop(event.recipient.event_id, None)
            raise
        refused = phones.cooling + phones.held + phones.uncheckable
        if refused:
            self.settle(Settlement.RELEASED, refused)
        answer.claimed = phones.reserved
        answer.cooling, answer.phone_held, answer.uncheckable = phones.cooling, phones.held, phones.uncheckable
        return answer

    def renew(self, events: Sequence[PendingEvent]) -> bool:
        """Claim again under the same tag (idempotent; refreshes the lease), and the phones with
        them. False: do not send."""
        for attempt in range(1, RENEW_TRIES + 1):
            try:
                if not all(s is ClaimStatus.CLAIMED for s in self.dedup.claim(self.tag, _requests(events))):
                    return False
                return self.phones is None or self.phones.renew(events)
            except StateStoreError as exc:
                self.metrics.redis_errors.labels("claim").inc()
                delay = REDIS_BACKOFF.delay(attempt)
                log.error("could not renew claims (%s); retrying in %.1fs", exc, delay)
                if self.stop.wait(delay):
                    return False
        return False

    def sending(self, events: Sequence[PendingEvent]) -> None:
        """These ids are about to leave in a request: from now on their fate may be unknown."""
        self._held.update(dict.fromkeys((e.recipient.event_id for e in events), True))

    def settle(self, outcome: Settlement, events: Sequence[PendingEvent]) -> None:
        """Record the fate of these events' request. Until it is recorded they stay held, so an
        exception here still ends them as unknown on exit if a request may have left."""
        ids = [e.recipient.event_id for e in events]
        self._settle_ids(outcome, ids)
        for event_id in ids:
            self._held.pop(event_id, None)
        if self.phones is not None:
            try:
                self.phones.settle(PHONE_FATES[outcome], ids)
            except Exception:  # the ids' fate stands; a reservation left behind expires into a contact
                log.exception("could not settle %d phone reservations", len(ids))

    def _settle_ids(self, outcome: Settlement, ids: list[str]) -> None:
        """Record an outcome in Redis, retrying while Redis is away (bounded, not interruptible:
        an outcome must be recorded if at all possible)."""
        if not ids:
            return
        for attempt in range(1, SETTLE_TRIES + 1):
            try:
                self.dedup.settle(outcome, self.tag, ids)
                return
            except StateStoreError as exc:
                self.metrics.redis_errors.labels("settle").inc()
                delay = REDIS_BACKOFF.delay(attempt)
                log.error("could not record an outcome in Redis (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
        log.error("gave up recording an outcome in Redis; duplicates of these %d events will be "
                  "dead-lettered as ambiguous once their claim lease expires", len(ids))


def _requests(events: Sequence[PendingEvent]) -> list[ClaimRequest]:
    return [ClaimRequest(e.recipient.event_id, e.replay_of) for e in events]
