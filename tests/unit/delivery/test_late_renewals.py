"""A renewal or a heartbeat beat whose reply was lost lands late, after its request's release
(consumer/delivery/claims.py). Like a disarm whose reply was lost (`Claim.disarm`), such a script
call is not cancelled when its connection is given up. It used to take the ids again under the
request's attempt (a renewal or a beat that found an id free claimed it, armed): the events' next
attempt found that claim live and held them back for a lease, then found it lapsed armed, and
every event was dead-lettered `ambiguous`, though the only request that carried them was answered
503 and nothing reached Pisano. A renewal now takes no free id (lua/claim.lua, the renewal mode):
the late call leaves nothing, and the next attempt sends the events (tests/unit/delivery/
test_renewal_lost.py: another replica's copy too)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

import consumer.delivery.claims as claims_module
from consumer.delivery.heartbeat import Heartbeat
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, StateStoreError
from consumer.state.arming import Arming
from consumer.state.memory import MemoryDedup
from tests.support.fakes import FakePisano, Rig, event, lands_late_then_sent_once, rig

OK = Accepted(200, "req", 0.01)
LEASE_MS = 60_000


def clocked_rig() -> tuple[Rig, MemoryDedup, list[int]]:
    """A sender whose dedup store runs on `now` (ms), its first request answered 503."""
    now = [1_700_000_000_000]
    dedup = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600, clock=lambda: now[0])
    return rig(FakePisano([PisanoApiError(503, None, "busy")], default=OK), dedup=dedup), dedup, now


def lose_claim_replies(dedup: MemoryDedup, lost: Callable[[Arming], bool]) -> list[Any]:
    """The claim calls `lost` picks run later (the returned list lands them); each raises now, as
    a call whose reply timed out."""
    late: list[Any] = []
    real_claim = dedup.claim

    def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        if lost(rest[0] if rest else Arming.ARM):
            late.append(lambda: real_claim(tag, requests, *rest))
            raise StateStoreError("Timeout reading from Redis")
        return real_claim(tag, requests, *rest)

    dedup.claim = claim  # type: ignore[method-assign]
    return late


def advance(now: list[int]) -> Any:
    """Move the stores' clock past a lease, as a requeued event may wait."""
    return lambda: now.__setitem__(0, now[0] + LEASE_MS + 1000)


def test_a_renewal_whose_reply_never_came_back_is_taken_over_by_the_next_attempt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims_module, "RENEW_TRIES", 1)  # one lost reply, then Redis counts as away
    r, dedup, now = clocked_rig()
    pisano = r.pisano
    armed = itertools.count(1)
    # the renewal before the retry (the second armed call): it runs, its reply is lost
    late = lose_claim_replies(dedup, lambda arming: arming is Arming.ARM and next(armed) == 2)
    events = [event(i) for i in range(3)]
    r.process(events)
    assert len(pisano.requests) == 1
    lands_late_then_sent_once(r, events, late, advance(now))  # however long the requeue waited
    assert len(pisano.requests) == 2


def test_a_beat_whose_reply_never_came_back_is_taken_over_by_the_next_attempt() -> None:
    """A beat's reply lost while the request waited for its retry; the request then ends unsent
    (here its claims are found lost at the renewal, as a replica whose Redis answers again late
    may): released, the late beat lands after."""
    r, dedup, now = clocked_rig()
    pisano = r.pisano
    calls: list[Arming] = []
    late = lose_claim_replies(dedup, lambda arming: calls.append(arming) or (arming is Arming.KEEP and not late))
    real_ready = r.sender.slots.ready
    readies = [0]

    def ready(slot, renew, *, fresh=None, heartbeat=None, screen=None, on_pause=None):  # type: ignore[no-untyped-def]
        readies[0] += 1
        if readies[0] == 2:  # the retry waits: a beat goes, its reply lost; then the retry is refused
            assert heartbeat is not None and isinstance(heartbeat, Heartbeat)
            heartbeat._beating(time.monotonic())  # a beat falls due
            heartbeat.found_lost()
        return real_ready(slot, renew, fresh=fresh, heartbeat=heartbeat, screen=screen, on_pause=on_pause)

    r.sender.slots.ready = ready  # type: ignore[method-assign]
    events = [event(i) for i in range(3)]
    r.process(events)
    assert Arming.KEEP in calls, calls
    assert len(pisano.requests) == 1
    lands_late_then_sent_once(r, events, late, advance(now))


def test_a_late_renewal_with_phones_is_no_contact(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with the contact cooldown: the late renewal's phone reservation, armed, lapsed into a
    contact nobody made (an event read elsewhere ended `cooldown`); the next attempt takes it over."""
    from consumer.delivery.contacts import ContactCooldown, CooldownWindows
    from consumer.state.cooldown import MemoryCooldown
    from consumer.state.redis import Keys
    from consumer.state.suppression import MemoryOptOutList, OptOutHasher, Suppression

    monkeypatch.setattr(claims_module, "RENEW_TRIES", 1)
    day = 86_400_000
    now = [1_700_000_000_000]
    dedup = MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600, clock=lambda: now[0])
    phones = MemoryCooldown(lease_ms=LEASE_MS, ttl_ms=day, clock=lambda: now[0])
    pisano = FakePisano([PisanoApiError(503, None, "busy")], default=OK)
    r = rig(pisano, dedup=dedup)
    suppression = Suppression(OptOutHasher(b"k" * 32, "TR"), MemoryOptOutList(), digits_are_e164=False)
    r.sender.cooldown = ContactCooldown(phones, CooldownWindows(day), Keys("t"), suppression.phone_entry)
    late: list[Any] = []
    real_claim, real_reserve = dedup.claim, phones.reserve
    armed = [0, 0]

    def claim(tag, requests, *rest):  # type: ignore[no-untyped-def]
        arming = rest[0] if rest else Arming.ARM
        if arming is Arming.ARM:
            armed[0] += 1
            if armed[0] == 2:  # the renewal's claim step runs, the trip's reply is lost (below)
                late.append(lambda: real_claim(tag, requests, *rest))
                return None
        return real_claim(tag, requests, *rest)

    def reserve(tag, requests, *, window_ms, arming=Arming.ARM, renewal=False):  # type: ignore[no-untyped-def]
        if arming is Arming.ARM:
            armed[1] += 1
            if armed[1] == 2:
                late.append(lambda: real_reserve(tag, requests, window_ms=window_ms, arming=arming, renewal=renewal))
                raise StateStoreError("Timeout reading from Redis")
        return real_reserve(tag, requests, window_ms=window_ms, arming=arming, renewal=renewal)

    dedup.claim = claim  # type: ignore[method-assign]
    phones.reserve = reserve  # type: ignore[method-assign]
    events = [event(i) for i in range(3)]
    r.process(events)
    assert len(late) == 2
    lands_late_then_sent_once(r, events, late, advance(now))
    assert len(pisano.requests) == 2
