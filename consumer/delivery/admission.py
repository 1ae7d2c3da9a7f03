"""Admission: the contact policy a batch passes just before its ids are claimed (issue 13).

    batch taken -> admission: expired? suppressed? -> claim (dedup) -> POST

- `expired`: past MAX_EVENT_AGE now (consumer/ingest/freshness.py). Intake already ended the
  events that were too old on arrival; these are the ones that grew old while they waited.
- `suppressed`: the phone or external id is on the opt-out list (consumer/state/suppression.py),
  asked in one round trip for the whole batch.

Both are final outcomes: the events are never claimed or sent, and they are committed like
skipped duplicates. A Redis failure while the list is read fails closed like the claim: nothing of
the batch is sent; the events wait and are tried again (StateStoreError to the sender).

The Sender calls `screen` in `_claim`, before each claim (a top-up is screened too). Events held
back by quiet hours (consumer/delivery/quiet_hours.py) come through here when their window opens,
so one that grew past MAX_EVENT_AGE overnight ends as `expired`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from consumer.delivery.batching import PendingEvent
from consumer.delivery.outcome import Outcome
from consumer.ingest.freshness import Freshness
from consumer.outcomes.deadletter import Failure
from consumer.state.suppression import Suppression

log = logging.getLogger(__name__)

UNCHECKABLE = ("the phone cannot be looked up in the opt-out list (digits only, and no PHONE_REGION to read "
               "it in); map phones to E.164 or set PHONE_REGION")


class Admission:
    def __init__(self, *, freshness: Freshness | None = None, suppression: Suppression | None = None) -> None:
        self.freshness = freshness
        self.suppression = suppression

    def __bool__(self) -> bool:
        return self.freshness is not None or self.suppression is not None

    def screen(self, events: Sequence[PendingEvent], report: Callable[[Outcome], None]) -> list[PendingEvent]:
        """The events that may be claimed; the others are reported (expired, suppressed).
        StateStoreError if the opt-out list cannot be read: nothing is reported then."""
        admitted = list(events)
        expired: list[PendingEvent] = []
        if self.freshness is not None:
            now_ms = int(time.time() * 1000)
            fresh: list[PendingEvent] = []
            for event in admitted:
                (expired if self.freshness.expired(event, now_ms) else fresh).append(event)
            admitted = fresh
        suppressed: list[PendingEvent] = []
        uncheckable: list[PendingEvent] = []
        if self.suppression is not None and admitted:
            answers = self.suppression.suppressed([e.recipient for e in admitted])  # may raise: report nothing
            kept: list[PendingEvent] = []
            for event, answer in zip(admitted, answers, strict=True):
                if answer is None:
                    uncheckable.append(event)
                elif answer:
                    suppressed.append(event)
                else:
                    kept.append(event)
            admitted = kept
        if expired:
            report(Outcome("expired", expired))
        if suppressed:
            log.info("%d events not sent: on the opt-out list", len(suppressed), extra={"count": len(suppressed)})
            report(Outcome("suppressed", suppressed))
        if uncheckable:
            report(Outcome("dead_letter", uncheckable, Failure("invalid_event", UNCHECKABLE)))
        return admitted
