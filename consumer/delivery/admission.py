"""Admission: the contact policy a batch passes just before its ids are claimed (issue 13).

    batch taken -> admission: expired? -> one round trip: suppressed? claim (dedup), phones -> POST

- `stale` (a dead letter, as at intake, consumer/ingest/intake.py): older by its Kafka timestamp
  than DEDUP_HORIZON_S minus STALE_MARGIN_S now. Intake weighed it on arrival; an event that waited
  since (quiet hours hold one over a weekend, 60 h, far past the 1-day margin) could otherwise be
  claimed after its delivered mark expired, and a re-read record be sent a second time.
- `expired`: past MAX_EVENT_AGE now (consumer/ingest/freshness.py). Intake already ended the
  events that were too old on arrival; these are the ones that grew old while they waited.
- `suppressed`: the phone or external id is on the opt-out list (consumer/state/suppression.py),
  asked for the whole batch in the same round trip as its dedup claim (`claims.Claim.claim`, which
  releases the claims of the events the list has: they are never sent).

Both are final outcomes: the events are never sent, and they are committed like skipped duplicates.
A Redis failure while the list is read fails closed like the claim it travels with: nothing of
the batch is sent; the events wait and are tried again (StateStoreError to the sender).

The Sender calls `screen` in `_claim`, before each claim (a top-up is screened too), and hands
`suppression` to the batch's claim. Age (expired, stale) is weighed again just before every POST,
after the request's waits (its slot, a retry's backoff, a Redis outage, bisection's earlier groups):
`AgeScreen`, called by `SlotReserver.ready`. An event refused there ends as here (`expired`, or a
`stale` dead letter), unsent, its claim released so it is not remembered as delivered; the rest of
the request goes on without it. Events held back by quiet hours
(consumer/delivery/quiet_hours.py) come through here when their window opens, so one that grew
past MAX_EVENT_AGE overnight ends as `expired`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from consumer.delivery.batching import KAFKA_TIMESTAMP, PendingEvent
from consumer.delivery.outcome import Outcome
from consumer.errors import StaleRecordError
from consumer.ingest.freshness import Freshness
from consumer.ingest.intake import check_age
from consumer.outcomes.deadletter import Failure
from consumer.state.suppression import Suppression

UNCHECKABLE = ("the phone cannot be looked up in the opt-out list (digits only, and no PHONE_REGION to read "
               "it in); map phones to E.164 or set PHONE_REGION")


class Admission:
    def __init__(self, *, freshness: Freshness | None = None, suppression: Suppression | None = None,
                 stale_after_ms: int | None = None) -> None:
        self.freshness = freshness
        self.suppression = suppression
        self.stale_after_ms = stale_after_ms

    def __bool__(self) -> bool:
        return self.freshness is not None or self.suppression is not None or self.stale_after_ms is not None

    def screen(self, events: Sequence[PendingEvent], report: Callable[[Outcome], None],
               now_ms: int | None = None) -> list[PendingEvent]:
        """The events that may be claimed; the others are reported (stale, expired). The opt-out
        list is not asked here: it travels with the claim (`claims.Claim`, given `suppression`).
        `now_ms`: judge them as at this wall time (epoch ms) instead of now."""
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        if self.stale_after_ms is not None:
            events = self._not_stale(events, report, self.stale_after_ms, now_ms)
        if self.freshness is None:
            return list(events)
        admitted: list[PendingEvent] = []
        expired: list[PendingEvent] = []
        for event in events:
            (expired if self.freshness.expired(event, now_ms) else admitted).append(event)
        if expired:
            report(Outcome("expired", expired))
        return admitted

    def weighs_age(self) -> bool:
        return self.freshness is not None or self.stale_after_ms is not None

    def refusal_ms(self, events: Sequence[PendingEvent]) -> int | None:
        """The earliest wall time (epoch ms) at which `screen` refuses one of these events for its
        age (expired or stale); None: never. The ages only grow, so one figure per request serves
        until an event is refused: no pass over its events before every POST."""
        due: list[int] = []
        if self.stale_after_ms is not None:
            stamps = [stamp for stamp in map(KAFKA_TIMESTAMP, events) if stamp > 0]
            if stamps:
                due.append(min(stamps) + self.stale_after_ms + 1)
        freshness = self.freshness
        if freshness is not None:
            times = [t for t in (freshness.event_time_ms(e.recipient, e.message) for e in events) if t is not None]
            if times:
                due.append(min(times) + freshness.max_age_ms + 1)
        return min(due, default=None)

    @staticmethod
    def _not_stale(events: Sequence[PendingEvent], report: Callable[[Outcome], None], stale_after_ms: int,
                   now_ms: int) -> Sequence[PendingEvent]:
        # A pre-filter with check_age's test (a timestamp, and older than the margin), inlined: it
        # runs for every event of every request, and check_age, which judges and words the
        # message, is called only for the few it lets through.
        cutoff = now_ms - stale_after_ms
        if min(map(KAFKA_TIMESTAMP, events), default=cutoff) >= cutoff:
            return events  # nearly every request: all fresh, decided by one C-level pass
        stale: list[tuple[PendingEvent, str]] = []
        for event in [event for event in events if 0 < event.message.timestamp_ms < cutoff]:
            try:
                check_age(event.message, stale_after_ms, now_ms)
            except StaleRecordError as exc:
                stale.append((event, str(exc)))
        if not stale:
            return events
        for event, message in stale:  # one dead-letter failure each: the message names its age
            report(Outcome("dead_letter", [event], Failure("stale", message, campaign_id=event.recipient.campaign_id)))
        gone = {event for event, _ in stale}  # PendingEvent hashes by identity
        return [event for event in events if event not in gone]


class AgeScreen:
    """One request's events weighed for their age again just before each of its POSTs (the module
    docstring): `events` (and `ids`, their ids in the same order, when given) lose the refused
    events in place, so every later use of the lists (renewals, beats, `sending`, settlements,
    bisection's groups) sees only what is left."""

    def __init__(self, admission: Admission, events: list[PendingEvent], ids: list[str] | None = None) -> None:
        self.admission = admission
        self.events = events
        self.ids = ids
        self._due_ms = admission.refusal_ms(events)

    def weigh(self, within_s: float) -> list[Outcome]:
        """The outcomes of the events refused if the POST left `within_s` from now (the latest it
        may leave): they are taken out of `events`; reporting them, and releasing their claims
        first, is the caller's."""
        at_ms = int(time.time() * 1000) + math.ceil(within_s * 1000)
        if self._due_ms is None or at_ms < self._due_ms:
            return []  # nearly every request: one comparison
        ended: list[Outcome] = []
        kept = self.admission.screen(self.events, ended.append, at_ms)
        if self.ids is not None:
            keep = set(kept)  # PendingEvent hashes by identity
            self.ids[:] = [event_id for event, event_id in zip(self.events, self.ids, strict=True) if event in keep]
        self.events[:] = kept
        self._due_ms = self.admission.refusal_ms(self.events)
        return ended
