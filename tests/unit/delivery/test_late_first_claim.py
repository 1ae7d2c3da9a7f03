"""A batch's FIRST claim (not a renewal: it must take free ids) whose reply was lost is not
cancelled either: it may land after the ids were released, and take them again under an attempt
that sends nothing. The renewal mode cannot help it (lua/claim.lua ARGV[9]): the ids it claims,
once released, count as given up, so the events this replica sends round again take over what the
late call may leave (`Claim.let_go`) instead of being held back a lease and then dead-lettered
`ambiguous` though never sent (a stray phone reservation, armed, lapsing into a contact nobody made).

Two ways: a try lost, the next answered, the ids released later (held by the contact cooldown,
held by the send window, refused...); or Redis staying away, the release after the last try landing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import consumer.delivery.claims as claims_module
from consumer.delivery.backoff import Backoff
from consumer.delivery.batching import PendingEvent
from consumer.delivery.claims import Claim
from consumer.errors import StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.cooldown import MemoryCooldown, PhoneFate, PhoneRequest, PhoneStatus
from consumer.state.dedup import ClaimRequest, ClaimStatus, Settlement
from consumer.state.memory import MemoryDedup
from tests.support.fakes import FakePisano, event, rig
from tests.unit.delivery.test_renewal_lost import DAY, OK, another_replica, cooldown_on, stores


def lose_first_calls(dedup: MemoryDedup, phones: MemoryCooldown | None, count: int) -> list[Callable[[], Any]]:
    """The first `count` trips' replies are lost: their calls run later (the returned list lands
    them); every later trip is answered."""
    late: list[Callable[[], Any]] = []
    real_claim, real_reserve = dedup.claim, phones.reserve if phones is not None else None
    lost = [0, 0]

    def claim(tag, requests, *rest, **named):  # type: ignore[no-untyped-def]
        if lost[0] < count:
            lost[0] += 1
            late.append(lambda: real_claim(tag, requests, *rest, **named))
            if phones is None:
                raise StateStoreError("Timeout reading from Redis")
            return None  # the trip's last step, the phones', fails it
        return real_claim(tag, requests, *rest, **named)

    def reserve(tag, requests, **named):  # type: ignore[no-untyped-def]
        assert real_reserve is not None
        if lost[1] < count:
            lost[1] += 1
            late.append(lambda: real_reserve(tag, requests, **named))
            raise StateStoreError("Timeout reading from Redis")
        return real_reserve(tag, requests, **named)

    dedup.claim = claim  # type: ignore[method-assign]
    if phones is not None:
        phones.reserve = reserve  # type: ignore[method-assign]
    return late


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims_module, "REDIS_BACKOFF", Backoff(0.0, 0.0, jitter=False))


def released_with_a_call_in_flight(away: bool, with_phones: bool) -> tuple[Any, Any, list[str], list[Any],
                                                                          list[PendingEvent]]:
    """A batch of three whose first claim got no reply (`away`: none of its tries did), released
    and requeued; its lost calls (`late`) not landed yet."""
    dedup, phones = stores()
    events = [event(i) for i in range(3)]
    ids = [e.recipient.event_id for e in events]
    late = lose_first_calls(dedup, phones if with_phones else None, claims_module.CLAIM_TRIES if away else 1)
    claim = Claim(dedup, Metrics(), threading.Event(), cooldown=cooldown_on(phones) if with_phones else None,
                  window_ms=DAY if with_phones else 0)
    with claim:
        if away:
            with pytest.raises(StateStoreError):
                claim.claim(events)  # released after the last try: the sender requeues them
        else:
            assert len(claim.claim(events).claimed) == 3
            claim.settle(Settlement.RELEASED, events)  # e.g. held by the send window: requeued
        requeued = claim.let_go(events)
    return dedup, phones, ids, late, requeued


@pytest.mark.parametrize("with_phones", [False, True], ids=["claims", "phones"])
@pytest.mark.parametrize("away", [False, True], ids=["answered-on-retry", "redis-stays-away"])
def test_a_first_claim_landing_after_the_release_is_taken_over_by_the_next_attempt(
        away: bool, with_phones: bool) -> None:
    dedup, phones, ids, late, requeued = released_with_a_call_in_flight(away, with_phones)
    assert [dedup.state(i) for i in ids] == [None] * 3
    assert late
    for land in late:
        land()  # the lost call lands now, after the release: it takes the ids again
    # This replica's next attempt of the events: sent at once, not held back a lease (and then
    # dead-lettered `ambiguous`, its phone's stray reservation lapsing into a contact).
    nxt = Claim(dedup, Metrics(), threading.Event(), cooldown=cooldown_on(phones) if with_phones else None,
                window_ms=DAY if with_phones else 0)
    with nxt:
        answer = nxt.claim(requeued)
        assert [e.recipient.event_id for e in answer.claimed] == ids, (answer.held, answer.phone_held)
        nxt.settle(Settlement.DELIVERED, answer.claimed)


def test_a_sender_whose_claim_lands_after_its_release_sends_the_events_round_once() -> None:
    """The whole sender: Redis does not answer the batch's claim (each try lands later), the trip
    is released and the events requeued; the late tries land; the events sent round again are
    delivered at once, in one request."""
    dedup, _ = stores()
    r = rig(FakePisano(default=OK), dedup=dedup)
    late = lose_first_calls(dedup, None, claims_module.CLAIM_TRIES)
    events = [event(i) for i in range(3)]
    r.process(events)
    assert r.kinds() == {e.recipient.event_id: {"requeue"} for e in events}
    for land in late:
        land()
    requeued = [e for o in r.outcomes if o.kind == "requeue" for e in o.events]
    r.outcomes.clear()
    r.process(requeued)
    assert r.kinds() == {e.recipient.event_id: {"delivered"} for e in events}, r.reasons()
    assert len(r.pisano.requests) == 1


@pytest.mark.parametrize("with_phones", [False, True], ids=["claims", "phones"])
@pytest.mark.parametrize("away", [False, True], ids=["answered-on-retry", "redis-stays-away"])
def test_a_first_claim_landing_after_the_release_leaves_nothing_for_another_replica(
        away: bool, with_phones: bool) -> None:
    """The same late landing, seen from another replica reading a copy of the events (an upstream
    duplicate, the records read again after a rebalance): the release left a tombstone naming the
    attempt (lua/settle.lua, lua/settle_phones.lua), so the late call takes nothing and the copy is
    sent at once. It used to find the late call's claim live: held back a lease, then (armed)
    dead-lettered `ambiguous` though never sent; a stray phone reservation lapsed into a contact."""
    dedup, phones, ids, late, _ = released_with_a_call_in_flight(away, with_phones)
    for land in late:
        land()
    assert [dedup.state(i) for i in ids] == [None] * 3
    other = another_replica(dedup, phones if with_phones else None)
    copies = [event(i) for i in range(3)]
    other.process(copies)
    assert other.kinds() == {i: {"delivered"} for i in ids}, other.reasons()


def test_a_late_first_claim_takes_nothing_its_answered_retry_found_held() -> None:
    """The first try's reply lost, the retry answered: an id another replica's copy holds is held
    back here. The late try may land after that copy's request failed and released it: it finds
    the tombstone the retry's answer left (`Claim._bury_unclaimed`), not a free id, so the copy's
    next attempt is sent at once instead of finding a claim of an attempt that never sends."""
    dedup, _ = stores()
    other = dedup.replica()
    copy_tag = other.new_tag()
    assert other.claim(copy_tag, [ClaimRequest("e0")]) == [ClaimStatus.CLAIMED]  # a copy read elsewhere
    late = lose_first_calls(dedup, None, 1)
    events = [event(i) for i in range(3)]
    claim = Claim(dedup, Metrics(), threading.Event())
    with claim:
        answer = claim.claim(events)
        assert [e.recipient.event_id for e in answer.held] == ["e0"]
        claim.settle(Settlement.DELIVERED, answer.claimed)
        claim.let_go(answer.held)
    other.settle(Settlement.RELEASED, copy_tag, ["e0"])  # the copy's request certainly failed
    for land in late:
        land()
    assert dedup.state("e0") is None
    r = rig(FakePisano(default=OK), dedup=other)
    r.process([event(0)])
    assert r.kinds() == {"e0": {"delivered"}}, r.reasons()


def test_a_late_first_reservation_takes_nothing_its_answered_retry_found_held() -> None:
    """As above for a phone: the answered retry found it reserved by a copy read elsewhere, so
    this batch released it with a tombstone, which rides on the copy's reservation (lua/
    settle_phones.lua). The copy's request certainly failed and released it; the late try lands
    after that and takes nothing, so the copy's next attempt is sent at once. It used to find the
    late try's reservation: held back a lease, then counted as a contact nobody made (`cooldown`)."""
    dedup, phones = stores()
    policy = cooldown_on(phones)
    key = policy.key(event(0).recipient.phone)
    other_dedup, other_phones = dedup.replica(), phones.replica()
    copy_tag = other_dedup.new_tag()
    assert other_dedup.claim(copy_tag, [ClaimRequest("e0")]) == [ClaimStatus.CLAIMED]
    assert other_phones.reserve(copy_tag, [PhoneRequest(key)], window_ms=DAY) == [PhoneStatus.RESERVED]
    late = lose_first_calls(dedup, phones, 1)
    events = [event(i) for i in range(3)]
    claim = Claim(dedup, Metrics(), threading.Event(), cooldown=policy, window_ms=DAY)
    with claim:
        answer = claim.claim(events)
        assert [e.recipient.event_id for e in answer.held] == ["e0"]
        claim.sending(answer.claimed)
        claim.settle(Settlement.DELIVERED, answer.claimed)
        claim.let_go(answer.held)
    other_dedup.settle(Settlement.RELEASED, copy_tag, ["e0"])  # the copy's request certainly failed
    other_phones.settle(PhoneFate.RELEASED, copy_tag, [key])
    for land in late:
        land()
    assert phones.state(key) is None or not str(phones.state(key)).startswith("r|")
    r = another_replica(dedup, phones)
    r.process([event(0)])
    assert r.kinds() == {"e0": {"delivered"}}, r.reasons()
