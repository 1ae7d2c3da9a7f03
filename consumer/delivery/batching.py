"""Batching recipients per campaign into Pisano requests.

One queue per campaign. A campaign is *due* when it holds a full request's worth of recipients,
or when its oldest event has waited `BATCH_MAX_WAIT_MS`. Senders promise a throttle slot for
each due request (`wait_for_demand`), and only *take* the batch when the slot arrives, so a batch
keeps filling while it waits for its slot: under load, requests leave full. At take time the
oldest due campaign goes first; with no campaign due, a slot is not wasted on nothing if any
recipient is waiting.

A request carries a phone and an event id at most once (Pisano keys its maps by phone); a second
event for the same phone waits for the next request.

Thread-safety: the poll loop adds and drops, the sender threads take; one lock guards it all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from consumer.ingest.mapping import Recipient

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class PendingEvent:
    """A consumed record on its way to Pisano. The Kafka message is kept whole so a failure can
    be dead-lettered with its original key, value and headers."""

    message: Any
    tp: TopicPartition
    offset: int
    epoch: int
    recipient: Recipient
    enqueued_at: float
    # A verified replay of an ambiguous dead-letter: the attempt whose unknown mark it may override
    # (consumer/state/dedup.py); None for every other record.
    replay_of: str | None = None


@dataclass(slots=True)
class Batch:
    campaign_id: str
    events: list[PendingEvent] = field(default_factory=list)
    oldest_enqueued_at: float = 0.0

    def __len__(self) -> int:
        return len(self.events)

    def age(self, now: float) -> float:
        return now - self.oldest_enqueued_at


class Batcher:
    def __init__(self, max_recipients: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_recipients = max_recipients
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._queues: dict[str, deque[PendingEvent]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._promised = 0  # slots senders are fetching for due batches
        self._flush_all = False  # shutdown or rebalance: everything is due now
        self.buffered = 0

    # ---------------------------------------------------------------- poll loop side

    def add(self, events: Iterable[PendingEvent]) -> None:
        with self._lock:
            for event in events:
                queue = self._queues.get(event.recipient.campaign_id)
                if queue is None:
                    queue = self._queues[event.recipient.campaign_id] = deque()
                queue.append(event)
                self.buffered += 1
            self._changed.notify_all()

    def drop(self, should_drop: Callable[[PendingEvent], bool]) -> list[PendingEvent]:
        """Remove and return the buffered events matching (partitions revoked from us)."""
        dropped: list[PendingEvent] = []
        with self._lock:
            for campaign, queue in list(self._queues.items()):
                kept: deque[PendingEvent] = deque()
                for event in queue:
                    (dropped if should_drop(event) else kept).append(event)
                if kept:
                    self._queues[campaign] = kept
                else:
                    del self._queues[campaign]
            self.buffered -= len(dropped)
            self._changed.notify_all()
        return dropped

    def flush_all(self, enabled: bool = True) -> None:
        with self._lock:
            self._flush_all = enabled
            self._changed.notify_all()

    # ---------------------------------------------------------------- sender side

    def wait_for_demand(self, stop: threading.Event, timeout: float) -> bool:
        """Block until a due batch has no slot promised yet, then promise one (True)."""
        deadline = self.clock() + timeout
        with self._lock:
            while not stop.is_set():
                now = self.clock()
                if self._due_batches(now) > self._promised:
                    self._promised += 1
                    return True
                remaining = deadline - now
                if remaining <= 0:
                    return False
                next_due = self._next_due_at(now)
                wake = remaining if next_due is None else min(remaining, max(0.001, next_due - now))
                self._changed.wait(wake)
        return False

    def cancel_promise(self) -> None:
        with self._lock:
            self._promised = max(0, self._promised - 1)
            self._changed.notify_all()

    def take(self) -> Batch | None:
        """Fulfil a promise: the oldest due campaign's next request, else the oldest waiting one."""
        with self._lock:
            self._promised = max(0, self._promised - 1)
            now = self.clock()
            campaign = self._oldest_campaign(now, due_only=True) or self._oldest_campaign(now, due_only=False)
            if campaign is None:
                return None
            batch = self._take_from(campaign, self.max_recipients, [])
            self._changed.notify_all()
            return batch

    def top_up(self, batch: Batch, room: int) -> list[PendingEvent]:
        """More recipients of the batch's campaign, for room left after some were skipped."""
        with self._lock:
            if batch.campaign_id not in self._queues:
                return []
            extra = self._take_from(batch.campaign_id, room, batch.events)
            return extra.events

    # ---------------------------------------------------------------- inside the lock

    def _is_due(self, queue: deque[PendingEvent], now: float) -> bool:
        return bool(queue) and (
            self._flush_all or len(queue) >= self.max_recipients
            or now - queue[0].enqueued_at >= self.max_wait_s
        )

    def _due_batches(self, now: float) -> int:
        total = 0
        for queue in self._queues.values():
            full, rest = divmod(len(queue), self.max_recipients)
            # The remainder after the full requests is due on its own oldest event's age.
            rest_due = rest and (self._flush_all or now - queue[full * self.max_recipients].enqueued_at
                                 >= self.max_wait_s)
            total += full + (1 if rest_due else 0)
        return total

    def _next_due_at(self, now: float) -> float | None:
        """When the next queue that is not due yet becomes due (due ones are already counted)."""
        heads = [q[0].enqueued_at for q in self._queues.values() if q and not self._is_due(q, now)]
        return min(heads) + self.max_wait_s if heads else None

    def _oldest_campaign(self, now: float, *, due_only: bool) -> str | None:
        best, best_at = None, 0.0
        for campaign, queue in self._queues.items():
            if not queue or (due_only and not self._is_due(queue, now)):
                continue
            if best is None or queue[0].enqueued_at < best_at:
                best, best_at = campaign, queue[0].enqueued_at
        return best

    def _take_from(self, campaign: str, limit: int, already: list[PendingEvent]) -> Batch:
        """Up to `limit` events, none sharing a phone or an event id with `already` or each other."""
        queue = self._queues[campaign]
        batch = Batch(campaign, oldest_enqueued_at=queue[0].enqueued_at)
        phones = {e.recipient.phone for e in already}
        event_ids = {e.recipient.event_id for e in already}
        skipped: list[PendingEvent] = []
        # Bound the scan: a queue full of one phone must not cost O(queue) per request.
        budget = limit * 4
        while queue and len(batch.events) < limit and budget > 0:
            budget -= 1
            event = queue.popleft()
            recipient = event.recipient
            if recipient.phone in phones or recipient.event_id in event_ids:
                skipped.append(event)
                continue
            phones.add(recipient.phone)
            event_ids.add(recipient.event_id)
            batch.events.append(event)
        queue.extendleft(reversed(skipped))
        if not queue:
            del self._queues[campaign]
        self.buffered -= len(batch.events)
        return batch
