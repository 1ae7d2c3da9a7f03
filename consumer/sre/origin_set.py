"""The distinct origins (topic, partition, offset) of dead-letters, counted exactly in little memory.

`dlq stats` counts the distinct source records of a DLQ that may hold millions (a token outage
dead-letters everything). A Python set costs ~70 bytes an origin, and the stats keep one per row
and one for the whole topic. Here each source partition keeps its offsets as sorted, disjoint
intervals in two arrays of 64-bit integers: a DLQ holds runs of consecutive offsets (whole stretches
of a partition failed alike), each run costs 16 bytes whatever its length, and even offsets with
no neighbour cost 16 bytes each, not 70. Offsets that come out of order wait in a buffer that is
merged in once it is as large as the intervals (so merging costs O(n log n) overall).

`replay` asks too whether it re-published an origin already in this run (`add_new`): the same
intervals, searched by bisection, and the pending offsets mirrored in a set, made on the first
question only (`dlq stats` never asks: it pays nothing for it). Found by review: a set of tuples
took ~190 bytes an origin, ~1.9 GB for a token outage's 10 million dead-letters.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

MIN_PENDING = 4096  # merge no sooner: small merges cost more than they save


class _Offsets:
    """The distinct offsets of one source partition."""

    __slots__ = ("count", "ends", "pending", "pending_set", "starts")

    def __init__(self) -> None:
        self.starts = array("q")  # interval i is [starts[i], ends[i]): sorted, disjoint, not touching
        self.ends = array("q")
        self.pending = array("q")  # offsets not merged in yet (may repeat, or repeat merged ones)
        self.count = 0  # distinct offsets in the intervals
        self.pending_set: set[int] | None = None  # `pending` as a set, once `contains` was asked

    def add(self, offset: int) -> None:
        if not self.pending and self.ends:
            # In order, the common case: extend the last run, or it is already in it.
            if offset == self.ends[-1]:
                self.ends[-1] += 1
                self.count += 1
                return
            if self.starts[-1] <= offset < self.ends[-1]:
                return
            if offset > self.ends[-1]:
                self.starts.append(offset)
                self.ends.append(offset + 1)
                self.count += 1
                return
        elif not self.ends:
            self.starts.append(offset)
            self.ends.append(offset + 1)
            self.count = 1
            return
        self.pending.append(offset)
        if self.pending_set is not None:
            self.pending_set.add(offset)
        if len(self.pending) >= max(MIN_PENDING, len(self.starts)):
            self.merge()

    def contains(self, offset: int) -> bool:
        at = bisect_right(self.starts, offset) - 1
        if at >= 0 and offset < self.ends[at]:
            return True
        if self.pending_set is None:
            self.pending_set = set(self.pending)
        return offset in self.pending_set

    def merge(self) -> None:
        if not self.pending:
            return
        starts, ends = array("q"), array("q")
        count = 0
        runs = iter(zip(self.starts, self.ends, strict=True))
        run = next(runs, None)
        for offset in sorted(self.pending):
            # Every run that ends before this offset (and does not touch it) is final.
            while run is not None and run[1] < offset:
                count += _append(starts, ends, *run)
                run = next(runs, None)
            if run is not None and run[0] <= offset:
                if offset == run[1]:  # one past its end: the run takes it
                    run = (run[0], run[1] + 1)
                continue  # else inside the run
            count += _append(starts, ends, offset, offset + 1)
        while run is not None:
            count += _append(starts, ends, *run)
            run = next(runs, None)
        self.starts, self.ends, self.pending, self.count = starts, ends, array("q"), count
        if self.pending_set is not None:
            self.pending_set.clear()

    def __len__(self) -> int:
        self.merge()
        return self.count


def _append(starts: array[int], ends: array[int], start: int, end: int) -> int:
    """Add [start, end) after the last interval, joining it when they touch; the offsets it adds."""
    if ends and start <= ends[-1]:
        added = max(0, end - ends[-1])
        ends[-1] = max(ends[-1], end)
        return added
    starts.append(start)
    ends.append(end)
    return end - start


class OriginSet:
    """A set of origins that only counts, and tells whether an origin is new: add(), add_new() and len()."""

    __slots__ = ("_partitions",)

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], _Offsets] = {}

    def add(self, origin: tuple[str, int, int]) -> None:
        topic, partition, offset = origin
        offsets = self._partitions.get((topic, partition))
        if offsets is None:
            offsets = self._partitions[(topic, partition)] = _Offsets()
        offsets.add(offset)

    def add_new(self, origin: tuple[str, int, int]) -> bool:
        """Add `origin`; whether it was not in the set before."""
        topic, partition, offset = origin
        offsets = self._partitions.get((topic, partition))
        if offsets is None:
            offsets = self._partitions[(topic, partition)] = _Offsets()
        elif offsets.contains(offset):
            return False
        offsets.add(offset)
        return True

    def __contains__(self, origin: object) -> bool:
        if not isinstance(origin, tuple) or len(origin) != 3:
            return False
        topic, partition, offset = origin
        offsets = self._partitions.get((topic, partition))
        return offsets is not None and offsets.contains(offset)

    def __len__(self) -> int:
        return sum(len(offsets) for offsets in self._partitions.values())
