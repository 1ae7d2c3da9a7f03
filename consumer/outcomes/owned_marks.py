"""The marks of the partitions this replica owns, in memory: looked up once per record read again.

Dead-letter marks (consumer/outcomes/deadletter.py) and receipt marks (consumer/outcomes/receipts.py)
are kept in Redis per partition (consumer/state/dead_letters.py `PartitionMarks`). A replica that
is assigned a partition loads its marks once, then asks this copy, in memory, about each record it
reads: whether it ended before (dead-lettered, or given its receipt) on a pass a restart or a
rebalance cut short. The copy is trimmed below confirmed commits, like the marks in Redis, and
dropped with the partition.

A partition whose key holds what this consumer did not write (WRONGTYPE), or more marks than a
partition ever has (OversizeStateError, found by the load's size check before the set is read:
consumer/state/dead_letters.py `read_sets`), is left out of the marks'
calls, found at its load or, when the key turned foreign later, by the call it failed
(`isolating`): one call touching such a key fails whole, so leaving it in would pause the marks of
every partition, again after every pause.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from consumer.errors import StateStoreError
from consumer.state.dead_letters import TopicPartition
from consumer.state.redis_errors import passes

# The time a poll turn spends loading newly assigned partitions' marks before it leaves the rest
# to the next turns (`OwnedMarks.load_all`): the loop keeps turning (heartbeats, commits, health).
LOAD_TURN_S = 1.0

V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")


class OwnedMarks(Generic[V]):
    """Offset -> what a mark holds, per owned partition. `load(tp)` reads a partition's marks from
    the store (raising what the store raises); `assigned` only notes the partitions, and `load_all`
    loads those not loaded yet, so a caller whose store failed tries again later.

    `without(tp, exc)`, when a partition's load raised: True to go on without its marks (the
    caller said why): a failure no wait ends (a key holding what this consumer did not write)
    would otherwise leave the partition unloaded, so never fetched, for good."""

    def __init__(self, load: Callable[[TopicPartition], Mapping[int, V]], *,
                 without: Callable[[TopicPartition, Exception], bool] | None = None) -> None:
        self._load = load
        self._without = without
        self._marks: dict[TopicPartition, dict[int, V]] = {}
        self.owned: set[TopicPartition] = set()  # assigned, not revoked or lost since
        self.unloaded: set[TopicPartition] = set()  # owned, marks not loaded yet (the store failed)
        # Consumed without marks (`without` said so), owned or not since: the caller keeps their
        # records and commit points out of the store's calls, whose every call touching the key
        # would fail (and pause the others'). Kept past a revoke, until a load of the partition's
        # marks succeeds: the revoke's last commit, and those confirmed the minute before it, come
        # due after it (ConfirmedCommits), as do outcomes of requests that outlive it.
        self.without: set[TopicPartition] = set()

    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        tps = set(tps)
        self.owned |= tps
        self.unloaded |= tps  # loaded again: the key may have been mended since (`load_all`)

    def load_all(self, budget_s: float | None = None, clock: Callable[[], float] | None = None, *,
                 only: Iterable[TopicPartition] | None = None) -> None:
        """Load the marks of the partitions assigned and not loaded yet; each partition loaded
        stays loaded if a later one raises. With `budget_s`, no partition's load starts once that
        long was spent (one always does): the rest stay unloaded for the caller's next call (its
        next poll turn). Each partition's load is bounded (consumer/state/dead_letters.py
        `read_sets`: seconds at MAX_PARTITION_MARKS), but many partitions near it at one
        assignment would hold the poll loop past its liveness (LIVENESS_S) and the replica would
        be restarted, again at each assignment. `only`: these partitions alone (those not loaded
        yet), the others left for later calls."""
        clock = clock or time.monotonic
        started = clock()
        for n, tp in enumerate(sorted(self.unloaded if only is None else self.unloaded & set(only))):
            if budget_s is not None and n and clock() - started >= budget_s:
                return
            try:
                loaded = self._load(tp)
            except Exception as exc:
                if self._without is not None and self._without(tp, exc):
                    self.unloaded.discard(tp)  # no marks: its records are judged as if none were there
                    self.without.add(tp)
                    continue
                raise
            if loaded:
                # What is in memory wins: remembered since the assignment, it is newer than the
                # store's copy. (Loaded before, on a reload after a move back, it is at worst a
                # dead-letter's note over its acknowledged mark: one more lookup before a produce.)
                self._marks[tp] = {**loaded, **self._marks.get(tp, {})}
            self.unloaded.discard(tp)
            self.without.discard(tp)  # its key mended: in the store's calls again

    def isolating(self, call: Callable[[list[T]], Sequence[R] | None], items: Sequence[T],
                  tp_of: Callable[[T], TopicPartition]) -> list[R | None]:
        """`call(items)` (one pipelined call of the store), its replies by item (None for a call
        that answers nothing). When it fails for a reason no wait ends (`without` says so: a key
        that turned foreign after its partition's marks loaded, which a load would have found),
        the call again one partition at a time: a partition whose own call fails so goes without
        its marks, as at its load (one warning, counted), and its items' replies are None; the
        others' calls are made, so their marks go on. An outage (here or in a partition's call)
        is raised: the caller pauses, as before.

        Only on that failure does it cost more round trips (one per partition, once: the
        partition is left out of later calls). The writes made again (ZADD, PEXPIRE,
        ZREMRANGEBYSCORE) are the same writes: the failed pipeline ran the others' already."""
        try:
            replies = call(list(items))
        except Exception as exc:
            if self._without is None or passes(exc):
                raise
        else:
            return [None] * len(items) if replies is None else list(replies)
        out: list[R | None] = [None] * len(items)
        by_tp: dict[TopicPartition, list[int]] = {}
        for n, item in enumerate(items):
            by_tp.setdefault(tp_of(item), []).append(n)
        for tp, indexes in by_tp.items():
            try:
                replies = call([items[n] for n in indexes])
            except Exception as exc:
                if not self._without(tp, exc):
                    raise  # an outage meanwhile: the caller pauses
                self.without.add(tp)
                continue
            if replies is not None:
                for n, reply in zip(indexes, replies, strict=True):
                    out[n] = reply
        return out

    def of(self, tp: TopicPartition) -> dict[int, V] | None:
        """The marks of one of our partitions, None when it has none (the common case)."""
        return self._marks.get(tp) or None

    def __bool__(self) -> bool:
        """Whether any of our partitions has marks: asked once a poll call, not once a record."""
        return bool(self._marks)

    def remember(self, tp: TopicPartition, offset: int, value: V) -> None:
        """A mark of ours the store had not when the partition's marks were loaded."""
        self._marks.setdefault(tp, {})[offset] = value

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions revoked or lost: their next owner loads the marks from the store."""
        for tp in tps:
            self._marks.pop(tp, None)
            self.owned.discard(tp)
            self.unloaded.discard(tp)
            # not `without`: what comes due for them after the revoke still stays out of the calls

    def trim(self, points: Mapping[TopicPartition, int]) -> None:
        """The group committed these points: the records below them are not read again by us (a
        commit the coordinator loses is a new owner's, who loads the marks from the store)."""
        for tp, offset in points.items():
            marks = self._marks.get(tp)
            if marks:
                for below in [n for n in marks if n < offset]:
                    del marks[below]
                if not marks:
                    del self._marks[tp]


def go_on_without(log: logging.Logger, what: str, cost: str, on_error: Callable[[], None],
                  tp: TopicPartition, exc: Exception) -> bool:
    """For `OwnedMarks(without=partial(go_on_without, log, what, cost, on_error))`: whether a
    partition whose `what` ("dead-letter marks") failed to load with `exc`, or failed a read or
    write of them after they loaded (`OwnedMarks.isolating`), is consumed without them. Not after
    an outage (it ends: the partition waits for its marks, or its dead-letters for their notes;
    the caller's pause counts it). After a failure no wait ends (Redis answered that the key holds
    what this consumer did not write, or more marks than a partition ever has, or the store could
    not read what is stored), `on_error` counts it, and a warning says which key, what is wrong
    with it and what to do (the StateStoreError's words, which name the key), and `cost`: what
    being without them may do."""
    if passes(exc):
        return False
    on_error()
    topic, partition = tp
    # Our own words; only the type of anything else, which may quote what was stored.
    shown = exc if isinstance(exc, StateStoreError) else \
        f"{type(exc).__name__} on a stored value this consumer cannot read: delete the partition's {what} keys"
    # "used": found at the load or by a later read or write (`OwnedMarks.isolating`); the
    # StateStoreError's words say which and name the key.
    log.warning("the %s of %s[%d] cannot be used (%s); %s[%d] is consumed without them until it is assigned "
                "again: %s", what, topic, partition, shown, topic, partition, cost,
                extra={"topic": topic, "partition": partition})
    return True
