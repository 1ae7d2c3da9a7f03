"""Commit points the broker confirmed, held back before the marks below them are removed.

Dead-letter marks (consumer/outcomes/deadletter.py) and receipt marks (consumer/outcomes/receipts.py)
are only needed for records past their partition's commit point; this decides when a confirmed
point is safe to trim below.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping

from consumer.state.dead_letters import TopicPartition

# A confirmed commit can still be lost by a coordinator that fails over (the pipeline commits every
# position again each RECOMMIT_INTERVAL_S, 15 s, for that: consumer/pipeline.py); a partition that
# moves meanwhile is read again by its next owner from the commit before. So the marks below a
# commit go only this long after the broker confirmed it: a failover loses the writes of its last
# moments, not a commit confirmed a minute before (and while we own the partition, the recommit
# has repaired a loss by then).
MARKS_KEEP_S = 60.0


class ConfirmedCommits:
    """Commit points the broker confirmed, handed out (`due`) MARKS_KEEP_S after their
    confirmation, for removing the marks below them. At most one entry per partition and second."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, keep_s: float = MARKS_KEEP_S) -> None:
        self.clock = clock
        self.keep_s = keep_s
        self._points: dict[TopicPartition, deque[tuple[int, float, int]]] = {}  # (second, confirmed at, offset)

    def add(self, points: Mapping[TopicPartition, int]) -> None:
        now = self.clock()
        for tp, offset in points.items():
            queue = self._points.setdefault(tp, deque())
            if queue and queue[-1][2] >= offset:
                continue  # a lower point removes nothing the higher one will not
            if queue and queue[-1][0] == int(now):
                queue.pop()  # the same second: one entry, confirmed at the later time (never sooner)
            queue.append((int(now), now, offset))

    def due(self) -> dict[TopicPartition, int]:
        """The highest point of each partition confirmed MARKS_KEEP_S ago or more (taken out)."""
        limit = self.clock() - self.keep_s
        out: dict[TopicPartition, int] = {}
        for tp, queue in list(self._points.items()):
            while queue and queue[0][1] <= limit:
                out[tp] = queue.popleft()[2]
            if not queue:
                del self._points[tp]
        return out
