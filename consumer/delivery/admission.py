"""Admission: the contact policy a batch passes just before its ids are claimed (issue 13).

    batch taken -> admission: expired? -> one round trip: suppressed? claim (dedup), phones -> POST

- `expired`: past MAX_EVENT_AGE now (consumer/ingest/freshness.py). Intake already ended the
  events that were too old on arrival; these are the ones that grew old while they waited.
- `suppressed`: the phone or external id is on the opt-out list (consumer/state/suppression.py),
  asked for the whole batch in the same round trip as its dedup claim (`claims.Claim.claim`, which
  releases the claims of the events the list has: they are never sent).

Both are final outcomes: the events are never sent, and they are committed like skipped duplicates.
A Redis failure while the list is read fails closed like the claim it travels with: nothing of
the batch is sent; the events wait and are tried again (StateStoreError to the sender).

The Sender calls `screen` in `_claim`, before each claim (a top-up is screened too), and hands
`suppression` to the batch's claim. Events held back by quiet hours
(consumer/delivery/quiet_hours.py) come through here when their window opens, so one that grew
past MAX_EVENT_AGE overnight ends as `expired`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from consumer.delivery.batching import PendingEvent
from consumer.delivery.outcome import Outcome
from consumer.ingest.freshness import Freshness
from consumer.state.suppression import Suppression

UNCHECKABLE = ("the phone cannot be looked up in the opt-out list (digits only, and no PHONE_REGION to read "
               "it in); map phones to E.164 or set PHONE_REGION")


class Admission:
    def __init__(self, *, freshness: Freshness | None = None, suppression: Suppression | None = None) -> None:
        self.freshness = freshness
        self.suppression = suppression

    def __bool__(self) -> bool:
        return self.freshness is not None or self.suppression is not None

    def screen(self, events: Sequence[PendingEvent], report: Callable[[Outcome], None]) -> list[PendingEvent]:
        """The events that may be claimed; the others are reported (expired). The opt-out list is
        not asked here: it travels with the claim (`claims.Claim`, given `suppression`)."""
        if self.freshness is None:
            return list(events)
        now_ms = int(time.time() * 1000)
        admitted: list[PendingEvent] = []
        expired: list[PendingEvent] = []
        for event in events:
            (expired if self.freshness.expired(event, now_ms) else admitted).append(event)
        if expired:
            report(Outcome("expired", expired))
        return admitted
