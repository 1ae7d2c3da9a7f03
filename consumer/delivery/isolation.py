"""Finding the recipients that made Pisano refuse a request, within a budget of requests.

Pisano refuses a whole request for a reason that may lie with one recipient (13028 invalid
parameters, 13038 identity keys missing, ...), and does not say which. The batch is split in
halves, each sent on its own: accepted halves are delivered, refused halves are split again, until
the bad recipients stand alone. k bad recipients among n cost about 2·k·log2(n/k) requests: 3 in
5000 about 60. Each of those requests takes a throttle slot, so the search may spend at most a
share of the binding window's budget (ISOLATION_BUDGET_SHARE); what is not isolated by then is
dead-lettered with the code, to be replayed after a look.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from consumer.config.windows import RateWindow

T = TypeVar("T")

UNTHROTTLED_BUDGET = 200  # no throttle (PISANO_RATE_LIMITS=off): still a bound on one search


def split(group: Sequence[T]) -> list[list[T]]:
    middle = len(group) // 2
    return [list(group[:middle]), list(group[middle:])]


@dataclass
class IsolationBudget:
    left: int

    @classmethod
    def for_windows(cls, windows: Sequence[RateWindow], share: float) -> IsolationBudget:
        """A share of the longest window's limit: what a sustained search may take of the budget."""
        if not windows:
            return cls(UNTHROTTLED_BUDGET)
        longest = max(windows, key=lambda w: w.period_ms)
        return cls(max(2, int(longest.limit * share)))

    def spend(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True
