"""Claims and their leases around each POST (issue 11, finding 6): every request is preceded by a
renewal of its claims inside its slot's lead time, so a renewal never delays a POST past its slot
and no POST leaves on a claim older than one request; a lost claim reply is checked again under
the same tag instead of leaving the ids claimed for the whole lease."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from consumer.config.settings import Settings
from consumer.config.windows import parse_rate_limits
from consumer.delivery import slots
from consumer.delivery.batching import Batch
from consumer.delivery.pisano import Accepted
from consumer.delivery.slots import PREPARE_LEAD_S, RENEWAL_REACH_S, Slot
from consumer.errors import PisanoApiError, StateStoreError
from consumer.state.arming import Arming
from consumer.state.dedup import Settlement
from consumer.state.limiter import Grant
from consumer.state.trip import Step
from tests.support.fakes import CAMPAIGN, FakePisano, event, rig

OK = Accepted(200, "req", 0.01)
SLOT_WAIT_S = 0.3


@dataclass
class Timeline:
    """Monotonic times of slots granted, claims (first and renewals), POSTs, and the claims made
    pending again after an attempt that certainly failed (consumer/state/arming.py)."""

    slots: list[float] = field(default_factory=list)
    claims: list[float] = field(default_factory=list)
    posts: list[float] = field(default_factory=list)
    disarms: list[float] = field(default_factory=list)


class SlotsAhead:
    """A throttle whose every slot is SLOT_WAIT_S away; records when each slot falls."""

    windows = parse_rate_limits("100/1s")

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        self.timeline.slots.append(time.monotonic() + SLOT_WAIT_S)
        return Grant(granted=True, wait_s=SLOT_WAIT_S, slot_ms=0)

    def pause(self, seconds: float) -> float:
        return 0.0  # it pauses nothing

    def paused_until_ms(self) -> int:  # it pauses nothing: no slot lies inside a pause
        return 0

    def stage_pause_read(self) -> Step[None]:
        return Step.answered(None)

    def utilisation(self) -> dict:  # type: ignore[type-arg]
        return {}


def timed_rig(pisano: FakePisano, renew_s: float = 0.15):  # type: ignore[no-untyped-def]
    timeline = Timeline()
    r = rig(pisano, limiter=SlotsAhead(timeline))  # type: ignore[arg-type]
    real_claim, real_send = r.dedup.claim, pisano.send

    def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        if rest and rest[0] is Arming.PENDING:
            timeline.disarms.append(time.monotonic())
            return real_claim(tag, requests, *rest)
        if rest and rest[0] is Arming.KEEP:  # the batch's other claims, in the renewal's own round trip
            return real_claim(tag, requests, *rest)
        timeline.claims.append(time.monotonic())
        if len(timeline.claims) > 1:
            time.sleep(renew_s)  # a renewal of 5000 ids on a busy Redis
        return real_claim(tag, requests, *rest)

    def send(campaign, body, leave_by=None):  # type: ignore[no-untyped-def]
        timeline.posts.append(time.monotonic())
        return real_send(campaign, body, leave_by)

    r.dedup.claim = claim  # type: ignore[method-assign]
    pisano.send = send  # type: ignore[method-assign]
    return r, timeline


def process_in_a_slot(r, timeline: Timeline, events: list) -> None:  # type: ignore[no-untyped-def, type-arg]
    """As the sender thread does: a slot reserved, the batch claimed within its lead time."""
    slot_at = time.monotonic() + 0.1
    timeline.slots.append(slot_at)
    r.sender.process(Batch(CAMPAIGN, list(events)), slot=Slot(slot_at))


def assert_each_post_renewed_in_its_lead_and_on_time(timeline: Timeline, lateness_s: float) -> None:
    for post in timeline.posts[1:]:
        slot = max(s for s in timeline.slots if s <= post + 0.01)
        renewals = [c for c in timeline.claims if c <= post]
        assert renewals and renewals[-1] <= slot, "the renewal sat between the slot and the POST"
        assert slot - renewals[-1] <= 0.5, "renewed long before the slot: not inside its lead time"
        assert post - slot <= lateness_s, f"POST left {post - slot:.3f}s after its slot"


def test_a_retry_renews_its_claims_before_its_slot_not_between_slot_and_post() -> None:
    r, timeline = timed_rig(FakePisano([PisanoApiError(503, None, "busy"), OK]))
    process_in_a_slot(r, timeline, [event(1)])
    assert r.kinds() == {"e1": {"delivered"}}
    assert len(timeline.posts) == 2 and len(timeline.claims) == 2
    assert_each_post_renewed_in_its_lead_and_on_time(timeline, r.sender.destination.max_lateness_s)
    # made pending once the 503 came back, before the backoff; the renewal arms them again
    assert len(timeline.disarms) == 1 and timeline.posts[0] < timeline.disarms[0] < timeline.claims[1]


def test_each_bisection_request_renews_before_its_slot() -> None:
    bad = event(2).recipient.phone
    refuse = lambda phones: PisanoApiError(422, 13028, "Invalid parameters") if bad in phones else OK  # noqa: E731
    r, timeline = timed_rig(FakePisano(default=refuse), renew_s=0.1)
    process_in_a_slot(r, timeline, [event(i) for i in range(4)])
    assert r.reasons() == {"e2": "pisano_error"}
    assert len(timeline.posts) >= 3 and len(timeline.claims) == len(timeline.posts)
    assert_each_post_renewed_in_its_lead_and_on_time(timeline, r.sender.destination.max_lateness_s)


def test_a_first_post_in_a_slot_reserved_again_renews_its_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    # Preparing overran the slot (a slow Redis): the request takes a new slot, and its claims,
    # taken before the old one and further from the new one than a renewal reaches, are renewed
    # before the new one.
    monkeypatch.setattr(slots, "RENEWAL_REACH_S", SLOT_WAIT_S / 2)
    r, timeline = timed_rig(FakePisano(), renew_s=0.0)
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=Slot(time.monotonic() - 5.0))
    assert r.kinds() == {"e1": {"delivered"}}
    assert len(timeline.slots) == 1 and len(timeline.claims) == 2, "the late request did not renew"
    assert timeline.claims[1] <= timeline.slots[0] <= timeline.posts[0]


def test_a_lost_claim_reply_is_checked_again_under_the_same_tag() -> None:
    # The claim reached Redis but its reply was lost, and the release failed too (a failover):
    # the ids are claimed under this request's tag. Claiming again under the same tag finds them
    # ours; parking them instead would hold them for the whole lease, then end them ambiguous.
    r = rig()
    real_claim, real_settle = r.dedup.claim, r.dedup.settle
    calls = {"claim": 0}

    def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        calls["claim"] += 1
        statuses = real_claim(tag, requests, *rest)
        if calls["claim"] == 1:
            raise StateStoreError("reply lost")
        return statuses

    def settle(outcome, tag, ids):  # type: ignore[no-untyped-def]
        if outcome is Settlement.RELEASED and calls["claim"] == 1:
            raise StateStoreError("still failing over")
        real_settle(outcome, tag, ids)

    r.dedup.claim = claim  # type: ignore[method-assign]
    r.dedup.settle = settle  # type: ignore[method-assign]
    r.process([event(1), event(2)])
    assert r.kinds() == {"e1": {"delivered"}, "e2": {"delivered"}}
    assert len(r.pisano.requests) == 1


def test_a_claim_redis_never_answers_parks_the_events_and_frees_them() -> None:
    r = rig()
    r.dedup.claim = lambda *a: (_ for _ in ()).throw(StateStoreError("down"))  # type: ignore[method-assign]
    r.sender._stop.set()  # no waiting out the retries
    r.process([event(1)])
    assert r.kinds() == {"e1": {"requeue"}} and not r.pisano.requests
    assert r.dedup.state("e1") is None


class ImmediateSlots(SlotsAhead):
    """A throttle with budget to spare: every slot is now."""

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        self.timeline.slots.append(time.monotonic())
        return Grant(granted=True, wait_s=0.0, slot_ms=0)


def test_a_slow_renewal_for_an_immediate_slot_costs_one_slot_more_not_the_budget() -> None:
    # The renewal cannot come before an immediate slot; when it overruns it, the request takes a
    # next slot, which falls within the lead time of that renewal: no renewing again, no loop.
    timeline = Timeline()
    r = rig(FakePisano([PisanoApiError(503, None, "busy"), OK]), limiter=ImmediateSlots(timeline))  # type: ignore[arg-type]
    r.sender.slots.max_lateness_s = 0.02  # PISANO_RATE_MARGIN_MS=0
    real_claim = r.dedup.claim

    def slow_claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return real_claim(tag, requests, *rest)

    r.dedup.claim = slow_claim  # type: ignore[method-assign]
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=Slot(time.monotonic() + 0.2))
    assert r.kinds() == {"e1": {"delivered"}} and len(r.pisano.requests) == 2
    assert len(timeline.slots) == 2  # the retry's slot, and one more after its renewal overran it


class SlotsAfterTheLead(SlotsAhead):
    """A throttle with budget to spare that, like the real one, grants no slot sooner than the
    preparation's lead (`prepare_ms`)."""

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        self.timeline.slots.append(time.monotonic() + prepare_ms / 1000)
        return Grant(granted=True, wait_s=prepare_ms / 1000, slot_ms=0)


def test_a_renewal_slower_than_the_lead_costs_one_slot_more_not_a_slot_per_turn() -> None:
    # A retry's renewal of 5000 ids on a slow Redis overruns its slot's lead time and the request
    # loses the slot. The next slot is a lead time after that renewal (the limiter grants none sooner):
    # renewing for it again would overrun it again, slot after slot, and never send.
    timeline = Timeline()
    r = rig(FakePisano([PisanoApiError(503, None, "busy"), OK]), limiter=SlotsAfterTheLead(timeline))  # type: ignore[arg-type]
    real_claim = r.dedup.claim
    calls = []

    def slow_renewal(tag, requests, *rest):  # type: ignore[no-untyped-def]
        if rest and rest[0] is Arming.PENDING:  # after the 503: not a renewal
            return real_claim(tag, requests, *rest)
        calls.append(time.monotonic())
        if len(calls) > 1:
            time.sleep(PREPARE_LEAD_S + r.sender.slots.max_lateness_s + 0.1)
        return real_claim(tag, requests, *rest)

    r.dedup.claim = slow_renewal  # type: ignore[method-assign]
    done = threading.Thread(target=r.sender.process, args=(Batch(CAMPAIGN, [event(1)]),),
                            kwargs={"slot": r.sender.slots.reserve()}, daemon=True)
    done.start()
    done.join(5)
    stopped = done.is_alive()
    r.sender._stop.set()
    assert not stopped, f"still renewing after {len(timeline.slots)} slots"
    assert r.kinds() == {"e1": {"delivered"}} and len(r.pisano.requests) == 2
    # The first request's slot; the retry's, lost to its renewal; the next one, not renewed for.
    assert len(timeline.slots) == 3 and len(calls) == 2


def test_a_renewal_covers_a_slot_only_within_the_claim_lease_margin() -> None:
    # Skipping a renewal relies on the claim's lease outliving the request by its margin.
    assert Settings.claim_lease_margin_ms / 1000 / 2 > RENEWAL_REACH_S
