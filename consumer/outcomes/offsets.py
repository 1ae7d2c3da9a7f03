"""Which offsets may be committed: per partition, the highest contiguous finished offset.

Records finish out of order (campaigns batch separately, dead-letters wait for their ack), so a
partition commits only up to its oldest unfinished record. Each assignment of a partition gets a
new epoch; an outcome that arrives for an earlier epoch (the partition was revoked meanwhile and
its records will be processed again by their new owner) is ignored.

Each record also carries its size and when it was consumed, for two bounds the poll loop keeps:
the bytes held by records without an outcome (MAX_BUFFERED_BYTES pauses fetching), and the age of
the oldest of them (past STUCK_RECORD_MS the replica reports itself not ready: a record that can
never get an outcome must not hold its partition back silently). A record held by quiet hours is
waiting by design, not stuck: its age runs from the last time it was seen held (`waiting`).

A partition's fetch position can also move back within one assignment: librdkafka resets it when
it detects log truncation (after an unclean leader election) or an out-of-range offset with
`auto.offset.reset=earliest`. The records from the new position on are read again, and after a
truncation they are not the records read before at the same offsets. So the partition starts a new
epoch there: the copies read before at those offsets are dropped (their outcomes no longer count,
so they can never finish a record read again), the records read before below the new position
still count (they are not read again, and the commit point waits for them), and the commit point
goes back to the new position at once (a restart must read those records again too).

Used from the poll loop only: no locking.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby, repeat, takewhile

from consumer.delivery.batching import EPOCH, OFFSET, TP, PendingEvent, TopicPartition

log = logging.getLogger(__name__)

_epochs = itertools.count(1)


@dataclass
class _Partition:
    epoch: int
    pending: deque[int] = field(default_factory=deque)
    consumed_at: deque[float] = field(default_factory=deque)  # beside `pending`, one per record
    sizes: dict[int, int] = field(default_factory=dict)  # bytes of each record without an outcome
    finished: set[int] = field(default_factory=set)
    waited: dict[int, float] = field(default_factory=dict)  # record -> when last seen held by quiet hours
    next_offset: int | None = None  # what a commit would store: the next record to process
    committed: int | None = None
    last: int = -1  # the highest offset tracked: a lower one means the position moved back
    # Epochs read before the position moved back, each with the offset below which its records
    # still count.
    earlier: list[tuple[int, int]] = field(default_factory=list)
    # Once the position moved back, a commit confirmed at or below this may have been sent before:
    # such confirmations say nothing of what the broker holds now (a later commit overrode it).
    confirms_above: int = -1
    # Assigned back within the consume call that took it away: the records that call hands back
    # may be the previous assignment's (`assign`), so nothing is committed until the fetch is seen
    # to go on (`release`, or a move back).
    held: bool = False


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}
        self.unfinished_bytes = 0
        self.moves_back = 0  # positions moved back so far: the poll loop then drops the first copies

    def assign(self, tp: TopicPartition, *, held: bool = False) -> None:
        """A new epoch of `tp`. `held`: the partition was given up and assigned back within one
        consume call, which may still hand back records of the earlier assignment, fetched before
        the rebalance (confluent-kafka-python#1013): passing the ownership test, they would be
        the new epoch's first records, and their outcomes would move the commit point past the
        records between the committed offset and them, which the new fetch has not delivered yet
        (or back below a later owner's commit). So its commit point is held until the fetch is
        seen to go on: the next consume call's records (`release`), or a record at or below one
        tracked, which supersedes the earlier ones (a move back)."""
        self.revoke(tp)
        self._partitions[tp] = _Partition(next(_epochs), held=held)

    def release(self, tp: TopicPartition) -> None:
        """The fetch of `tp` goes on past the consume call that assigned it back (`assign`)."""
        part = self._partitions.get(tp)
        if part is not None:
            part.held = False

    def revoke(self, tp: TopicPartition) -> None:
        part = self._partitions.pop(tp, None)
        if part is not None:
            self.unfinished_bytes -= sum(part.sizes.values())

    def owns(self, tp: TopicPartition) -> bool:
        """Whether `tp` is assigned to this replica (its records are ours to process)."""
        return tp in self._partitions

    def assigned(self) -> list[TopicPartition]:
        return list(self._partitions)

    def epoch(self, tp: TopicPartition) -> int | None:
        part = self._partitions.get(tp)
        return part.epoch if part else None

    def live(self, tp: TopicPartition, epoch: int, offset: int) -> bool:
        """Whether the outcome of this record (consumed in `epoch`) still counts: false once its
        partition was revoked, or read again from at or below `offset` (see the docstring)."""
        part = self._partitions.get(tp)
        return part is not None and _counts(part, epoch, offset)

    def track(self, tp: TopicPartition, offset: int, size: int = 0, now: float = 0.0) -> int:
        """Register a consumed record of `size` bytes, consumed at `now` (monotonic); returns the
        epoch its outcome must carry."""
        part = self._partitions.get(tp)
        if part is None:  # the poll loop tracks only partitions it owns (`owns`); be exact anyway
            self.assign(tp)
            part = self._partitions[tp]
        if offset <= part.last:
            self._moved_back(tp, part, offset)
        part.last = offset
        part.pending.append(offset)
        part.consumed_at.append(now)
        if size:
            part.sizes[offset] = size
            self.unfinished_bytes += size
        return part.epoch

    def _moved_back(self, tp: TopicPartition, part: _Partition, position: int) -> None:
        log.warning("partition %s[%d] is read again from offset %d (it had been read up to %d): the log was "
                    "truncated or its offset reset; records from there are processed again, and an event "
                    "delivered already is skipped by its id", tp[0], tp[1], position, part.last,
                    extra={"topic": tp[0], "partition": tp[1], "offset": position})
        self.moves_back += 1
        part.held = False  # the records read before from here on are superseded: the fetch is seen
        pending, sizes = part.pending, part.sizes
        while pending and pending[-1] >= position:  # `pending` ascends: the copies read again are its tail
            offset = pending.pop()
            part.consumed_at.pop()
            self.unfinished_bytes -= sizes.pop(offset, 0)
            part.finished.discard(offset)
            part.waited.pop(offset, None)
        # Kept until the partition is revoked, so that `live` stays exact for every copy: one
        # entry per move back, and those are rare.
        part.earlier = [(epoch, min(below, position)) for epoch, below in part.earlier]
        part.earlier.append((part.epoch, position))
        part.epoch = next(_epochs)
        if not pending and (part.next_offset is None or part.next_offset > position):
            part.next_offset = position
        part.committed = None  # what the broker holds may now be past the new position
        part.confirms_above = max(part.confirms_above, part.last + 1)  # above any commit sent before

    def finish(self, tp: TopicPartition, offset: int, epoch: int) -> None:
        part = self._partitions.get(tp)
        if part is not None and _counts(part, epoch, offset):
            self._finish(part, (offset,))

    def finish_events(self, events: Iterable[PendingEvent]) -> list[PendingEvent]:
        """`finish` for every event whose outcome still counts (`live`), a partition at a time in
        C-level passes (a delivered request ends 5000 of them); returns those events, in
        partition order. The others were revoked meanwhile (their next owner reads them again) or
        read again after their partition's position moved back (the copy read again counts)."""
        current: list[PendingEvent] = []
        for tp, group in groupby(sorted(events, key=TP), TP):
            part = self._partitions.get(tp)
            if part is None:
                continue
            events_of = list(group)
            if any(map(part.epoch.__ne__, map(EPOCH, events_of))):
                events_of = [event for event in events_of if _counts(part, event.epoch, event.offset)]
            current.extend(events_of)
            self._finish(part, map(OFFSET, events_of))
        return current

    def _finish(self, part: _Partition, offsets: Iterable[int]) -> None:
        pending = part.pending
        if not pending:
            return
        finished = part.finished
        fresh = set(offsets)
        fresh.difference_update(finished)  # already has its outcome (a dead-letter acknowledged twice, say)
        if fresh and min(fresh) < pending[0]:  # committed already: must not stay in `finished`
            fresh = {offset for offset in fresh if offset >= pending[0]}
        if not fresh:
            return
        finished.update(fresh)
        if part.waited:
            for offset in fresh:
                part.waited.pop(offset, None)
        self.unfinished_bytes -= sum(map(part.sizes.pop, fresh, repeat(0)))
        # The finished run at the head of the partition moves its commit point.
        done = list(takewhile(finished.__contains__, pending))
        if not done:
            return
        finished.difference_update(done)
        if len(done) == len(pending):
            pending.clear()
            part.consumed_at.clear()
        else:
            left, left_at = pending.popleft, part.consumed_at.popleft
            for _ in repeat(None, len(done)):
                left()
                left_at()
        part.next_offset = done[-1] + 1

    def unfinished(self, tp: TopicPartition) -> int:
        part = self._partitions.get(tp)
        return len(part.pending) if part else 0

    def waiting(self, records: list[tuple[TopicPartition, int]], now: float) -> None:
        """These records wait by design (held by quiet hours): their age for the stuck check runs
        from `now`, so a held backlog is not stuck, and once let go it ages from its release."""
        for tp, offset in records:
            part = self._partitions.get(tp)
            if part is not None and part.pending and offset >= part.pending[0] and offset not in part.finished:
                part.waited[offset] = now

    def oldest_unfinished_age(self, now: float) -> float:
        """Seconds since the oldest record without an outcome was consumed, or last seen waiting
        by design (`waiting`); 0 when there is none."""
        oldest = now
        for part in self._partitions.values():
            for offset, consumed_at in zip(part.pending, part.consumed_at, strict=False):
                if consumed_at >= oldest:
                    break  # consumed in order, and a wait only makes a record younger: the rest is younger
                waited = part.waited.get(offset)
                if waited is None:
                    if offset not in part.finished:
                        oldest = consumed_at
                        break
                else:
                    oldest = min(oldest, waited)
        return max(0.0, now - oldest)

    def commit_points(self, tps: list[TopicPartition] | None = None, *, all_known: bool = False
                      ) -> dict[TopicPartition, int]:
        """Offsets to commit: those that moved since the broker last confirmed one, or with
        `all_known` every partition that has a position (to repair a commit the broker lost)."""
        out = {}
        for tp in tps if tps is not None else list(self._partitions):
            part = self._partitions.get(tp)
            if part and part.next_offset is not None and not part.held \
                    and (all_known or part.next_offset != part.committed):
                out[tp] = part.next_offset
        return out

    def committed(self, points: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The broker confirmed these commits; returns those that tell what it holds now.
        Confirmations can arrive out of order, so only a higher one counts; after a move back,
        only one above every commit sent before it (until then the commit point is sent again each
        time: the broker may hold a lower one)."""
        counted = {}
        for tp, offset in points.items():
            part = self._partitions.get(tp)
            if part is not None and offset > part.confirms_above \
                    and (part.committed is None or offset > part.committed):
                part.committed = counted[tp] = offset
        return counted


def _counts(part: _Partition, epoch: int, offset: int) -> bool:
    """Whether an outcome of the record at `offset`, consumed in `epoch`, counts in `part`."""
    return epoch == part.epoch or _live_earlier(part, epoch, offset)


def _live_earlier(part: _Partition, epoch: int, offset: int) -> bool:
    for earlier, below in part.earlier:
        if earlier == epoch:
            return offset < below
    return False
