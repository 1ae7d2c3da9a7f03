"""The renewal mode renews every claim and reservation that is still the caller's own, whatever its
form (review of the renewal mode: a legitimate renewal answering L would end its request unsent
each time). Against a single Redis, a Redis Cluster and the memory twins."""

from __future__ import annotations

import time

from consumer.state.arming import Arming
from consumer.state.cooldown import PhoneRequest
from consumer.state.dedup import RedisDedup, Settlement
from consumer.state.memory import _Entry
from tests.contract.test_cooldown_contract import DAY, key
from tests.contract.test_cooldown_contract import codes as phone_codes
from tests.contract.test_late_disarm_contract import is_pending
from tests.contract.test_pending_claims_contract import codes, ids

LEASE_MS = 300


def test_an_own_claim_past_its_lease_is_renewed_while_nobody_found_it(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup(lease_ms=LEASE_MS)
    tag = a.new_tag()
    assert codes(a.claim(tag, ids("e1", "e2"))) == "CC"
    assert codes(a.claim(tag, ids("e2"), Arming.PENDING, renewal=True)) == "C"
    time.sleep(LEASE_MS / 1000 + 0.15)
    assert codes(a.claim(tag, ids("e1", "e2"), Arming.KEEP, renewal=True)) == "CC"
    assert not is_pending(a.state("e1")) and is_pending(a.state("e2"))
    assert codes(a.claim(tag, ids("e1", "e2"), Arming.ARM, renewal=True)) == "CC"


def test_a_renewal_over_a_former_release_mark_renews_the_replay_claim(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """0.2.0's marks still read (the layout's first horizon): a replay's claim over one, and a
    first claim of an id 0.2.0 never marked, are renewed; a 0.2.0 delivered mark stays delivered."""
    (a,) = make_dedup()
    x = a.new_tag()
    for event_id, mark in (("e1", f"u|{x}"), ("e3", "d")):
        if isinstance(a, RedisDedup):
            a.client.set(a.keys.event(event_id), mark)
        else:
            a._marks[event_id] = _Entry(mark, a.clock() + 60_000)
    replay = a.new_tag()
    requests = [*ids("e1", replay_of=x), *ids("e2")]
    assert codes(a.claim(replay, requests)) == "CC"
    for arming in (Arming.PENDING, Arming.KEEP, Arming.ARM):
        assert codes(a.claim(replay, requests, arming, renewal=True)) == "CC"
    assert codes(a.claim(replay, ids("e3"), Arming.ARM, renewal=True)) == "D"
    a.settle(Settlement.RELEASED, replay, ["e1", "e2"])
    assert a.state("e1") == f"u|{x}" and a.state("e2") is None


def test_an_own_phone_reservation_past_its_lease_is_refused_as_before(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    """Armed, lapsed, it is a contact (C, as before the renewal mode); pending, lapsed, it covered
    nothing and is gone: lost (before: reserved anew). Either way the request is not sent: its
    claims are released and its next attempt reserves afresh; nothing is written."""
    (mine,) = make_cooldown(lease_ms=LEASE_MS, ttl_ms=DAY)
    tag = "a|1"
    assert phone_codes(mine.reserve(tag, [PhoneRequest(key(1)), PhoneRequest(key(2))], window_ms=DAY)) == "RR"
    assert phone_codes(mine.reserve(tag, [PhoneRequest(key(2))], window_ms=DAY, arming=Arming.PENDING,
                                    renewal=True)) == "R"
    before = [mine.state(key(1)), mine.state(key(2))]
    time.sleep(LEASE_MS / 1000 + 0.15)
    answer = mine.reserve(tag, [PhoneRequest(key(1)), PhoneRequest(key(2))], window_ms=DAY, renewal=True)
    assert phone_codes(answer) == "CL"
    assert [mine.state(key(1)), mine.state(key(2))] == before
    assert phone_codes(mine.reserve("b|1", [PhoneRequest(key(2))], window_ms=DAY)) == "R"
