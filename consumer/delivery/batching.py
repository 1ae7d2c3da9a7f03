"""Batching recipients per campaign into Pisano requests.

One queue per campaign. A campaign is *due* when it holds a full request's worth of sendable
recipients, or when its oldest sendable event has waited `BATCH_MAX_WAIT_MS`. Senders promise a
throttle slot for each due request (`wait_for_demand`), and only *take* the batch when the slot
arrives, so a batch keeps filling while it waits for its slot: under load, requests leave full.

Fairness. Throttle slots are the scarce resource (160 requests per 625 s on Pisano's cloud), so
campaigns take turns: at take time the due campaign served least recently goes first (round
robin; among campaigns never served, the oldest first). A campaign with a backlog therefore gets
every n-th request of n due campaigns, never all of them. With no campaign due, a slot is not
wasted on nothing if any recipient is waiting.

A request carries a phone and an event id at most once (Pisano keys its maps by phone). Within a
campaign, only the first waiting event of a phone is *sendable*; the phone's later events wait
aside, in order, and the next one becomes sendable when the one before it is taken into a
request. So 3,000 events of one phone go out one per request, each in its campaign's turn: they
cannot starve the other campaigns, and the scan for a request never walks over them.

Quiet hours. A campaign the `holds` predicate names (its send window is closed,
consumer/delivery/quiet_hours.py) is neither due nor anyone's turn, whatever its age, a flush or
a circuit: its events wait, promised no slot, until the predicate lets them go.

Thread-safety: the poll loop adds and drops, the sender threads take; one lock guards it all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice, repeat
from operator import attrgetter
from typing import Any

from consumer.ingest.mapping import Recipient

TopicPartition = tuple[str, int]
# C-level getters of a PendingEvent's fields: a request's 5,000 events are read in several passes
# (taking, admission, claim, settlement, latency), each a `map` instead of an interpreted loop.
_PHONE = attrgetter("recipient.phone")
EVENT_ID = attrgetter("recipient.event_id")
KAFKA_TIMESTAMP = attrgetter("message.timestamp_ms")  # epoch ms; 0 or less: none
RECIPIENT, REPLAY_OF, ABANDONED_BY = attrgetter("recipient"), attrgetter("replay_of"), attrgetter("abandoned_by")
TP, EPOCH, OFFSET = attrgetter("tp"), attrgetter("epoch"), attrgetter("offset")
MAX_REMEMBERED_TURNS = 10_000  # campaigns whose last turn is remembered while they have no events


@dataclass(slots=True, eq=False)
class PendingEvent:
    """A consumed record on its way to Pisano. The Kafka message is kept whole so a failure can
    be dead-lettered with its original key, value and headers.

    Compared and hashed by identity: each is one read of a record, two reads of the same record
    are two events (each ends with its own outcome), and the sender keeps a request's events in
    sets and dicts (`outcome.BatchReport`) without a key object per event."""

    message: Any
    tp: TopicPartition
    offset: int
    epoch: int
    recipient: Recipient
    enqueued_at: float
    # A verified replay of an ambiguous dead-letter: the attempt whose unknown mark it may override
    # (consumer/state/dedup.py); None for every other record.
    replay_of: str | None = None
    sendable_since: float = 0.0  # set by the Batcher: since when it may join a request
    # Attempts of this replica that gave the event up unsent while their claim of its id or their
    # reservation of its phone may still be in Redis (a lost reply, a release that never landed):
    # its next claim takes those over (consumer/delivery/claims.py, `Claim.let_go`). Most have none.
    abandoned_by: tuple[str, ...] = ()


@dataclass(slots=True)
class Batch:
    campaign_id: str
    events: list[PendingEvent] = field(default_factory=list)
    oldest_enqueued_at: float = 0.0

    def __len__(self) -> int:
        return len(self.events)

    def age(self, now: float) -> float:
        return now - self.oldest_enqueued_at


class _Campaign:
    """One campaign's waiting events: the sendable ones (at most one per phone) in the order they
    became sendable, and the later events of phones that have one sendable, aside."""

    __slots__ = ("later", "ready", "sendable")

    def __init__(self) -> None:
        self.ready: deque[PendingEvent] = deque()  # in `sendable_since` order
        self.sendable: set[str] = set()  # phones with an event in `ready`
        self.later: dict[str, deque[PendingEvent]] = {}  # phone -> its events behind that one

    def add(self, event: PendingEvent, since: float) -> None:
        phone = event.recipient.phone
        if phone in self.sendable:
            self.later.setdefault(phone, deque()).append(event)
        else:
            self.sendable.add(phone)
            event.sendable_since = since
            self.ready.append(event)

    def taken(self, event: PendingEvent) -> None:
        """`event` left in a request: its phone's next event becomes sendable.

        That event has waited since it arrived, so it counts as that old (a phone's backlog is due
        and takes its turn), but no older than the newest sendable event: `ready` stays in age
        order."""
        phone = event.recipient.phone
        waiting = self.later.get(phone)
        if not waiting:
            self.sendable.discard(phone)
            return
        following = waiting.popleft()
        if not waiting:
            del self.later[phone]
        self._append(following)

    def _append(self, event: PendingEvent) -> None:
        event.sendable_since = max(event.enqueued_at, self.ready[-1].sendable_since) if self.ready \
            else event.enqueued_at
        self.ready.append(event)

    def without(self, should_drop: Callable[[PendingEvent], bool], dropped: list[PendingEvent]) -> _Campaign:
        """A copy without the events matching (appended to `dropped`); a phone whose sendable
        event was dropped has its next kept one sendable."""
        kept = _Campaign()
        for event in self.ready:
            if should_drop(event):
                dropped.append(event)
            else:
                kept.ready.append(event)
                kept.sendable.add(event.recipient.phone)
        for phone, waiting in self.later.items():
            for event in waiting:
                if should_drop(event):
                    dropped.append(event)
                elif phone in kept.sendable:
                    kept.later.setdefault(phone, deque()).append(event)
                else:
                    kept.sendable.add(phone)
                    kept._append(event)
        return kept

    def __len__(self) -> int:
        return len(self.ready)

    def oldest(self) -> float:
        return self.ready[0].sendable_since


class Batcher:
    def __init__(self, max_recipients: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic,
                 holds: Callable[[str], bool] | None = None) -> None:
        self.max_recipients = max_recipients
        self.max_wait_s = max_wait_s
        self.clock = clock
        # Campaigns held back (outside their send window); asked under the lock: must not block.
        self.holds: Callable[[str], bool] = holds or (lambda campaign: False)
        self._queues: dict[str, _Campaign] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._promised = 0  # slots senders are fetching for due batches
        self._flush_all = False  # shutdown or rebalance: everything is due now
        self._takes = 0  # requests taken so far: the round robin's clock
        # Campaign -> the take when it last got a request. Kept when its queue empties: a campaign
        # emptied by each of its requests must not come back as never served, ahead of everyone.
        self._served: dict[str, int] = {}
        self.buffered = 0

    # ---------------------------------------------------------------- poll loop side

    def add(self, events: Iterable[PendingEvent]) -> None:
        with self._lock:
            for event in events:
                queue = self._queues.get(event.recipient.campaign_id)
                if queue is None:
                    queue = self._queues[event.recipient.campaign_id] = _Campaign()
                queue.add(event, event.enqueued_at)
                self.buffered += 1
            self._changed.notify_all()

    def drop(self, should_drop: Callable[[PendingEvent], bool]) -> list[PendingEvent]:
        """Remove and return the buffered events matching (partitions revoked from us)."""
        dropped: list[PendingEvent] = []
        with self._lock:
            for campaign, queue in list(self._queues.items()):
                kept = queue.without(should_drop, dropped)
                if kept.ready:
                    self._queues[campaign] = kept
                else:
                    del self._queues[campaign]
            self.buffered -= len(dropped)
            self._changed.notify_all()
        return dropped

    def held_count(self) -> int:
        """How many buffered events are held (one sum per campaign: cheap)."""
        with self._lock:
            return sum(len(queue) + sum(len(w) for w in queue.later.values())
                       for campaign, queue in self._queues.items() if self.holds(campaign))

    def held_events(self) -> list[PendingEvent]:
        """The buffered events of held campaigns (waiting for their send window: not stuck)."""
        with self._lock:
            return [event for campaign, queue in self._queues.items() if self.holds(campaign)
                    for event in (*queue.ready, *(e for waiting in queue.later.values() for e in waiting))]

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

    def full_requests(self) -> int:
        """Requests that would leave full now (while flushing: every due one)."""
        with self._lock:
            return self._full_requests()

    def wait_for_full(self, stop: threading.Event, timeout: float, more_than: int) -> bool:
        """Block up to `timeout` until more than `more_than` requests are full (or, while flushing,
        due): the pace's wake-up (consumer/delivery/pacing.py). True if so."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not stop.is_set():
                if self._full_requests() > more_than:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return False

    def cancel_promise(self) -> None:
        with self._lock:
            self._promised = max(0, self._promised - 1)
            self._changed.notify_all()

    def peek(self) -> str | None:
        """The campaign whose turn it is now (what `take` without `skip` would pick)."""
        with self._lock:
            now = self.clock()
            return self._next_turn(now, due_only=True) or self._next_turn(now, due_only=False)

    def take(self, skip: frozenset[str] = frozenset(), only: str | None = None) -> Batch | None:
        """Fulfil a promise: the next request of the due campaign whose turn it is (least recently
        served), else of the waiting campaign whose turn it is. `skip`: campaigns not to send now
        (their circuit is open: `peek` finds them for dead-lettering); `only`: that campaign's."""
        with self._lock:
            self._promised = max(0, self._promised - 1)
            now = self.clock()
            if only is not None:
                campaign: str | None = only if only in self._queues and not self.holds(only) else None
            else:
                campaign = (self._next_turn(now, due_only=True, skip=skip)
                            or self._next_turn(now, due_only=False, skip=skip))
            if campaign is None:
                return None
            self._takes += 1
            self._served[campaign] = self._takes
            if len(self._served) > MAX_REMEMBERED_TURNS:  # campaign ids come from records: bounded
                self._served = {c: n for c, n in self._served.items() if c in self._queues}
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

    def _is_due(self, queue: _Campaign, now: float) -> bool:
        return bool(queue) and (
            self._flush_all or len(queue) >= self.max_recipients or now - queue.oldest() >= self.max_wait_s
        )

    def _due_batches(self, now: float) -> int:
        total = 0
        for campaign, queue in self._queues.items():
            if self.holds(campaign):
                continue
            full, rest = divmod(len(queue), self.max_recipients)
            # The remainder after the full requests is due on its own oldest event's age.
            rest_due = rest and (self._flush_all or now - queue.ready[full * self.max_recipients].sendable_since
                                 >= self.max_wait_s)
            total += full + (1 if rest_due else 0)
        return total

    def _full_requests(self) -> int:
        if self._flush_all:
            return self._due_batches(self.clock())
        # A held campaign's full batches are no one's to send yet: they must not make a paced
        # request of another campaign urgent. At its window's opening they count, and its
        # backlog leaves as a backlog: full batches back to back.
        return sum(len(queue) // self.max_recipients for campaign, queue in self._queues.items()
                   if not self.holds(campaign))

    def _next_due_at(self, now: float) -> float | None:
        """When the next queue that is not due yet becomes due (due ones are already counted)."""
        heads = [q.oldest() for c, q in self._queues.items() if q and not self._is_due(q, now) and not self.holds(c)]
        return min(heads) + self.max_wait_s if heads else None

    def _next_turn(self, now: float, *, due_only: bool, skip: frozenset[str] = frozenset()) -> str | None:
        """The campaign served least recently (the oldest first among equals)."""
        best, best_key = None, (0, 0.0)
        for campaign, queue in self._queues.items():
            if not queue or campaign in skip or (due_only and not self._is_due(queue, now)) or self.holds(campaign):
                continue
            key = (self._served.get(campaign, 0), queue.oldest())
            if best is None or key < best_key:
                best, best_key = campaign, key
        return best

    def _take_from(self, campaign: str, limit: int, already: list[PendingEvent]) -> Batch:
        """Up to `limit` sendable events, none sharing a phone or an event id with `already` or
        each other (sendable events have distinct phones; `already` may share one with them)."""
        queue = self._queues[campaign]
        ready = queue.ready
        now = self.clock()
        batch = Batch(campaign, oldest_enqueued_at=ready[0].enqueued_at if ready else now)
        taken = batch.events
        if already or not _take_distinct_ids(ready, limit, taken):
            _take_checked(ready, limit, already, taken)
        # Only now: a phone's next event must not join the request its previous one is in.
        if queue.later:
            for event in taken:
                queue.taken(event)
        else:  # no phone has a later event waiting: `taken` would only end each one's turn
            queue.sendable.difference_update(map(_PHONE, taken))
        if not queue.ready:
            del self._queues[campaign]
        self.buffered -= len(batch.events)
        return batch


def _take_distinct_ids(ready: deque[PendingEvent], limit: int, taken: list[PendingEvent]) -> bool:
    """The first `limit` ready events into `taken`, if no two of them share an event id (True);
    else nothing is taken (False). Ready events have distinct phones already, so that is the whole
    check for a new request, made in C-level passes: nearly every request takes this way."""
    head = list(islice(ready, limit))
    if len(set(map(EVENT_ID, head))) < len(head):
        return False
    if len(head) == len(ready):
        ready.clear()
    else:
        popleft = ready.popleft
        for _ in repeat(None, len(head)):
            popleft()
    taken.extend(head)
    return True


def _take_checked(ready: deque[PendingEvent], limit: int, already: list[PendingEvent],
                  taken: list[PendingEvent]) -> None:
    """Up to `limit` ready events into `taken`, skipping those that share a phone or an event id
    with `already` or with one taken before (a top-up; a duplicate event id)."""
    phones = {e.recipient.phone for e in already}
    event_ids = {e.recipient.event_id for e in already}
    skipped: list[PendingEvent] = []
    # Bound the scan: skips are rare (a top-up's phones, a duplicate event id), but never O(queue).
    budget = limit * 4
    # Bound methods in locals: this loop runs for every event of the requests that come here.
    popleft, take, add_phone, add_id = ready.popleft, taken.append, phones.add, event_ids.add
    while ready and len(taken) < limit and budget > 0:
        budget -= 1
        event = popleft()
        recipient = event.recipient
        if recipient.phone in phones or recipient.event_id in event_ids:
            skipped.append(event)
            continue
        add_phone(recipient.phone)
        add_id(recipient.event_id)
        take(event)
    ready.extendleft(reversed(skipped))
