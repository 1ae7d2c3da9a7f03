"""A renewal, a disarm or a heartbeat beat whose reply was lost lands late, after its request
released its claims: it must leave nothing behind for another replica's copy of the event, or the
record read again after a restart (lua/claim.lua, lua/reserve_phones.lua: a renewal takes no id).

Before: landing on a free id, the late call took it again under the released attempt. The
replica that made it took it over on its next attempt (`Claim.let_go`), but another replica's copy
found the stray claim live and held the event back for a lease; then, armed (a renewal, a beat),
it lapsed into an unknown mark and the event was dead-lettered `ambiguous` though nothing had been
sent; a stray phone reservation counted as a contact (the survey could end `cooldown`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import consumer.delivery.claims as claims_module
from consumer.delivery.claims import Claim
from consumer.delivery.contacts import ContactCooldown, CooldownWindows
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.arming import Arming
from consumer.state.cooldown import MemoryCooldown
from consumer.state.dedup import Settlement
from consumer.state.memory import MemoryDedup
from consumer.state.redis import Keys
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, Suppression
from tests.support.fakes import FakePisano, Rig, event, rig

OK = Accepted(200, "req", 0.01)
LEASE_MS = 60_000
DAY = 86_400_000
NOW = 1_700_000_000_000


def cooldown_on(store: MemoryCooldown) -> ContactCooldown:
    suppression = Suppression(OptOutHasher(b"k" * 32, "TR"), MemoryOptOutList(), digits_are_e164=False)
    return ContactCooldown(store, CooldownWindows(DAY), Keys("t"), suppression.phone_entry)


def stores() -> tuple[MemoryDedup, MemoryCooldown]:
    """One Redis, its clock standing still: nothing lapses, so whatever holds the events back is
    a claim or a reservation left in it."""
    dedup = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600, clock=lambda: NOW)
    return dedup, MemoryCooldown(lease_ms=LEASE_MS, ttl_ms=DAY, clock=lambda: NOW)


def lose_replies(dedup: MemoryDedup, phones: MemoryCooldown | None) -> list[Callable[[], Any]]:
    """From now on every claim and reservation runs later (the returned list lands them); the trip
    that carries it fails now, as one whose reply timed out."""
    late: list[Callable[[], Any]] = []
    real_claim = dedup.claim

    def claim(tag, requests, *rest, **named):  # type: ignore[no-untyped-def]
        late.append(lambda: real_claim(tag, requests, *rest, **named))
        if phones is None:
            raise StateStoreError("Timeout reading from Redis")
        return None  # the trip's last step, the phones', fails it

    dedup.claim = claim  # type: ignore[method-assign]
    if phones is not None:
        real_reserve = phones.reserve

        def reserve(tag, requests, **named):  # type: ignore[no-untyped-def]
            late.append(lambda: real_reserve(tag, requests, **named))
            raise StateStoreError("Timeout reading from Redis")

        phones.reserve = reserve  # type: ignore[method-assign]
    return late


def answer_again(dedup: MemoryDedup, phones: MemoryCooldown | None) -> None:
    for store, name in ((dedup, "claim"), (phones, "reserve")):
        if store is not None:
            store.__dict__.pop(name, None)


def another_replica(dedup: MemoryDedup, phones: MemoryCooldown | None) -> Rig:
    """A replica reading a copy of the events (an upstream duplicate, or the records read again
    after a restart), on the same Redis."""
    r = rig(FakePisano(default=OK), dedup=dedup.replica())
    if phones is not None:
        r.sender.cooldown = cooldown_on(phones.replica())
    return r


def late_call_then_copy_sent(call: Callable[[Claim, list[Any]], Any], *, with_phones: bool) -> None:
    """A request's claims taken; `call` (a renewal, a disarm, a beat) gets no reply; the request
    releases its claims, then the call lands. A copy of the events read by another replica is then
    sent at once: nothing of the late call is left in Redis."""
    dedup, phones = stores()
    events = [event(i) for i in range(3)]
    claim = Claim(dedup, Metrics(), threading.Event(), cooldown=cooldown_on(phones) if with_phones else None,
                  window_ms=DAY if with_phones else 0)
    with claim:
        assert len(claim.claim(events).claimed) == 3
        late = lose_replies(dedup, phones if with_phones else None)
        call(claim, events)
        answer_again(dedup, phones if with_phones else None)
        claim.settle(Settlement.RELEASED, events)  # the request ended unsent
    assert late, "no call's reply was lost"
    for land in late:
        land()
    ids = [e.recipient.event_id for e in events]
    assert [dedup.state(i) for i in ids] == [None] * 3, "the late call left claims"
    if with_phones:
        keys = [claim.phones.key_for(e) for e in events] if claim.phones else []
        assert [phones.state(k) for k in keys if k] == [None] * 3, "the late call left phone reservations"
    copy = another_replica(dedup, phones if with_phones else None)
    copy.process([event(i) for i in range(3)])
    assert copy.kinds() == {i: {"delivered"} for i in ids}, copy.reasons()
    assert len(copy.pisano.requests) == 1


def renew(claim: Claim, events: list[Any]) -> None:
    assert claim.renew(events) is None  # Redis did not answer: not sent


def disarm(claim: Claim, events: list[Any]) -> None:
    claim.sending(events)
    claim.unsent(events)  # answered 503: certainly failed
    assert claim.disarm(events) is False


def beat(claim: Claim, events: list[Any]) -> None:
    assert claim.beat(events) is None


@pytest.mark.parametrize("with_phones", [False, True], ids=["claims", "phones"])
@pytest.mark.parametrize("call", [renew, disarm, beat], ids=["renewal", "disarm", "beat"])
def test_a_late_call_after_the_release_leaves_nothing_behind(
        call: Callable[[Claim, list[Any]], Any], with_phones: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims_module, "RENEW_TRIES", 1)  # one lost reply, then Redis counts as away
    late_call_then_copy_sent(call, with_phones=with_phones)


@pytest.mark.parametrize("with_phones", [False, True], ids=["claims", "phones"])
def test_a_sender_whose_renewal_lands_late_leaves_the_copy_to_be_sent_at_once(
        with_phones: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole sender: its first POST answered 503, the renewal before the retry gets no reply
    and lands after the request released its claims; a copy read by another replica is sent at
    once (it was held back a lease, then dead-lettered `ambiguous`)."""
    monkeypatch.setattr(claims_module, "RENEW_TRIES", 1)
    dedup, phones = stores()
    r = rig(FakePisano([PisanoApiError(503, None, "busy")], default=OK), dedup=dedup)
    if with_phones:
        r.sender.cooldown = cooldown_on(phones)
    late: list[Callable[[], Any]] = []
    real_claim, real_reserve = dedup.claim, phones.reserve
    armed = [0, 0]

    def claim(tag, requests, *rest, **named):  # type: ignore[no-untyped-def]
        if (rest[0] if rest else Arming.ARM) is Arming.ARM:
            armed[0] += 1
            if armed[0] == 2:  # the renewal before the retry: it runs later, its reply is lost
                late.append(lambda: real_claim(tag, requests, *rest, **named))
                if not with_phones:
                    raise StateStoreError("Timeout reading from Redis")
                return None
        return real_claim(tag, requests, *rest, **named)

    def reserve(tag, requests, **named):  # type: ignore[no-untyped-def]
        if named.get("arming", Arming.ARM) is Arming.ARM:
            armed[1] += 1
            if armed[1] == 2:
                late.append(lambda: real_reserve(tag, requests, **named))
                raise StateStoreError("Timeout reading from Redis")
        return real_reserve(tag, requests, **named)

    dedup.claim = claim  # type: ignore[method-assign]
    phones.reserve = reserve  # type: ignore[method-assign]
    events = [event(i) for i in range(3)]
    r.process(events)
    assert r.kinds() == {e.recipient.event_id: {"requeue"} for e in events}
    assert len(late) == (2 if with_phones else 1)
    for land in late:
        land()
    copy = another_replica(dedup, phones if with_phones else None)
    copy.process([event(i) for i in range(3)])
    assert copy.kinds() == {e.recipient.event_id: {"delivered"} for e in events}, copy.reasons()
    assert len(r.pisano.requests) == 1 and len(copy.pisano.requests) == 1
