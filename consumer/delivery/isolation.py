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

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from consumer.config.windows import RateWindow

T = TypeVar("T")
R = TypeVar("R")

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


@dataclass(frozen=True)
class Step(Generic[T, R]):
    """What the search asks of its driver: `send` the group (reply: True accepted, a refusal R
    when refused for a recipient again, None when it ended otherwise), or settle it as refused
    `alone` or left `unisolated` when the budget ran out (reply: None). `because` is the refusal
    that put the group there."""

    kind: Literal["send", "alone", "unisolated"]
    group: list[T]
    because: R


def bisect(events: list[T], refusal: R, budget: IsolationBudget) -> Generator[Step[T, R], R | bool | None, None]:
    """The search as a pure generator: it decides what to send, the driver sends it.

    A refused group is halved and its first half sent alone. Accepted: the second half must hold
    the culprit, so it is split in turn without being sent whole. Refused: the first half is
    split in turn, and the second half is sent to learn its fate. A recipient refused on its own
    ends `alone`; groups left when the budget is spent end `unisolated`.
    """
    refused: list[tuple[list[T], R]] = [(events, refusal)]
    while refused:
        group, why = refused.pop()
        if len(group) == 1:
            yield Step("alone", group, why)
            continue
        first, second = split(group)
        reply = yield from _send(first, why, budget)
        if reply is True and len(second) > 1:
            refused.append((second, why))
            continue
        if reply is not None and not isinstance(reply, bool):
            refused.append((first, reply))
        reply = yield from _send(second, why, budget)
        if reply is not None and not isinstance(reply, bool):
            refused.append((second, reply))


def _send(group: list[T], why: R, budget: IsolationBudget) -> Generator[Step[T, R], R | bool | None, R | bool | None]:
    if not budget.spend():
        yield Step("unisolated", group, why)
        return None
    return (yield Step("send", group, why))
