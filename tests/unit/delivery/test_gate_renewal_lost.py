"""A gate renewal (the renewal just before a POST, `Sender._renew`) that finds a claim lost counts
as a beat that found it lost (consumer/delivery/heartbeat.py): the batch's later requests end
unsent at once, reserving no throttle slot. One that could not reach Redis is not a loss: the
later requests still try their own gate."""

from __future__ import annotations

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.delivery import claims
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, StateStoreError
from consumer.state.dedup import ClaimStatus
from consumer.state.limiter import Grant
from consumer.state.trip import Step
from tests.support.fakes import FakePisano, Rig, event, intercept_claims, rig

OK = Accepted(200, "req", 0.01)


class CountedSlots:
    """A throttle whose every slot is at once; counts the slots reserved."""

    windows = parse_rate_limits("100/1s")

    def __init__(self) -> None:
        self.reserved = 0

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        self.reserved += 1
        return Grant(granted=True, wait_s=0.0, slot_ms=0)

    def pause(self, seconds: float) -> float:
        return 0.0  # it pauses nothing

    def paused_until_ms(self) -> int:  # it pauses nothing: no slot lies inside a pause
        return 0

    def stage_pause_read(self) -> Step[None]:
        return Step.answered(None)

    def utilisation(self) -> dict:  # type: ignore[type-arg]
        return {}


def bisecting_rig(limiter: CountedSlots) -> Rig:
    bad = event(0).recipient.phone
    refuse = lambda phones: PisanoApiError(422, 13028, "Invalid parameters") if bad in phones else OK  # noqa: E731
    return rig(FakePisano(default=refuse), limiter=limiter)  # type: ignore[arg-type]


def test_a_gate_renewal_that_finds_a_claim_lost_reserves_no_slot_for_bisections_later_groups() -> None:
    limiter = CountedSlots()
    r = bisecting_rig(limiter)

    def claim(n, requests, real):  # type: ignore[no-untyped-def]
        statuses = real()
        if n >= 2:  # after the claim (the first POST needs no renewal), e3 is lost (lapsed, taken elsewhere)
            return [ClaimStatus.HELD if rq.event_id == "e3" else s for rq, s in zip(requests, statuses, strict=True)]
        return statuses

    intercept_claims(r.dedup, claim)
    r.process([event(i) for i in range(4)])
    assert len(r.pisano.requests) == 1  # only the whole batch: every later group ends unsent
    assert r.kinds() == {f"e{i}": {"requeue"} for i in range(4)}
    # The first request's slot (its slot_at 0.0 is long past: a new one) and the first group's,
    # whose gate found the loss; none for the second group.
    assert limiter.reserved == 2, f"{limiter.reserved} slots reserved: later groups wasted slots"


def test_a_gate_renewal_that_cannot_reach_redis_does_not_end_the_later_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "RENEW_TRIES", 1)
    limiter = CountedSlots()
    r = bisecting_rig(limiter)

    def claim(n, requests, real):  # type: ignore[no-untyped-def]
        # (call 2 made the batch's claims pending after the refusal, `Sender._conclude`)
        if n == 3:  # the first group's gate renewal: Redis away
            raise StateStoreError("connection refused")
        return real()

    intercept_claims(r.dedup, claim)
    r.process([event(i) for i in range(4)])
    kinds = r.kinds()
    assert kinds["e0"] == kinds["e1"] == {"requeue"}  # the group whose gate failed: not sent
    assert kinds["e2"] == kinds["e3"] == {"delivered"}, "a Redis error was taken for a lost claim"
