"""Deliveries to a topic that failed since the last poll turn, said in one line a turn.

A topic that refuses everything (down, not authorised, a size limit) fails every record produced to
it: one ERROR line per record was 10,000 lines for a failed round of a 10,000-record burst, and as
many again after each backoff. The dead-letter queue and the receipt writer each keep a
`FailedDeliveries` and say it from their `poll()`: how many, the last reason, the soonest retry, and
the first record's coordinates for the log's fields.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any


class FailedDeliveries:
    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what  # "dead-letter", "receipt": the line reads "<what> to <topic> failed ..."
        self.log = log  # the owner's logger: its name says which writer failed
        self._count = 0
        self._why = ""
        self._soonest = 0.0
        self._first: dict[str, Any] = {}

    def add(self, why: str, backoff_s: float, context: Mapping[str, Any] | None = None) -> None:
        """One delivery failed (`why`) and goes again in `backoff_s`."""
        if not self._count:
            self._soonest, self._first = backoff_s, dict(context or {})
        self._soonest = min(self._soonest, backoff_s)
        self._count += 1
        self._why = why

    def say(self, topic: str) -> None:
        """The failures since the last call, in one line (none: nothing said)."""
        if not self._count:
            return
        count, self._count = self._count, 0
        self.log.error("%s to %s failed for %d record%s (%s); producing %s again in %.1fs or more, offsets wait",
                       self.what, topic, count, "" if count == 1 else "s", self._why,
                       "it" if count == 1 else "them", self._soonest, extra={**self._first, "count": count})
