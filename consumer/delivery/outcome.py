"""How a batch's events end, as the sender hands them to the poll loop.

delivered  Pisano accepted them: commit.            skipped  delivered before: commit.
requeue    not sent, try again later (held elsewhere, Redis away, claim lost).
dead_letter  with a Failure naming the reason: produce to the DLQ, then commit.
expired    past MAX_EVENT_AGE, never sent: commit.  suppressed  on the opt-out list, never sent: commit.
cooldown   its phone was contacted within the campaign's CONTACT_COOLDOWN, never sent: commit.
           (contact policy: consumer/ingest/freshness.py, consumer/delivery/admission.py,
           consumer/delivery/contacts.py; final, not failures)

`BatchReport` makes sure every event of a batch gets exactly one outcome: whatever is still
open when the batch's processing ends (a bug, an exception from a library) gets the fallback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from consumer.delivery.batching import PendingEvent
from consumer.outcomes.deadletter import Failure

OutcomeKind = Literal["delivered", "skipped", "requeue", "dead_letter", "expired", "suppressed", "cooldown"]
# Final outcomes of the contact policy: committed like `skipped`, counted by reason.
FILTERED: tuple[OutcomeKind, ...] = ("expired", "suppressed", "cooldown")


@dataclass
class Outcome:
    kind: OutcomeKind
    events: list[PendingEvent]
    failure: Failure | None = None
    accepted_at_ms: int = 0
    # delivered: the id this consumer gave the request Pisano accepted, and Pisano's own if it sent one
    request_id: str | None = None
    pisano_request_id: str | None = None
    attempts: int = 0  # delivered: requests made for the batch, retries included


class BatchReport:
    """The outcomes of one batch's events: each event is reported once."""

    def __init__(self, report: Callable[[Outcome], None], events: Iterable[PendingEvent] = ()) -> None:
        self._report = report
        self._open: dict[PendingEvent, bool] = dict.fromkeys(events, True)  # PendingEvent hashes by identity
        self._lock = threading.Lock()

    def add(self, events: Iterable[PendingEvent]) -> None:
        """Events joined the batch (a top-up after skipped ids freed room)."""
        with self._lock:
            self._open.update(dict.fromkeys(events, True))

    def __call__(self, outcome: Outcome) -> None:
        with self._lock:
            events, still_open = outcome.events, self._open
            if len(events) == len(still_open) and still_open.keys() == set(events):
                # Every open event, each once (a delivered batch): all fresh, taken whole.
                still_open.clear()
                fresh = events
            else:
                fresh = [e for e in events if still_open.pop(e, False)]
        if fresh:
            outcome.events = fresh
            self._report(outcome)

    def open_events(self) -> list[PendingEvent]:
        with self._lock:
            return list(self._open)

