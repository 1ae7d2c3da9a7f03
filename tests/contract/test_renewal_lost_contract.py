"""The renewal mode of the claim and the phone reservation (lua/claim.lua, lua/reserve_phones.lua):
a renewal, a disarm or a heartbeat beat renews only the caller's own claims. An id (or phone) it
finds free, or held by anyone else, is answered lost (L) and nothing is written for it, against a
single Redis and a Redis Cluster as against the memory twins.

Before, such a call took a free id anew under its attempt: one whose reply was lost and that
landed after its request's release left a stray claim that another replica's copy of the event
waited a lease for, then (armed) dead-lettered `ambiguous` though nothing had been sent; a stray
phone reservation counted as a contact."""

from __future__ import annotations

import time

import pytest

from consumer.state.arming import Arming
from consumer.state.cooldown import PhoneFate, PhoneRequest
from consumer.state.dedup import ClaimRequest, Settlement
from tests.contract.test_cooldown_contract import DAY, key
from tests.contract.test_cooldown_contract import codes as phone_codes
from tests.contract.test_late_disarm_contract import is_pending
from tests.contract.test_pending_claims_contract import codes, ids

LEASE_MS = 300
MODES = [Arming.ARM, Arming.PENDING, Arming.KEEP]


@pytest.mark.parametrize("arming", MODES, ids=[m.name for m in MODES])
def test_a_renewal_finding_an_id_free_answers_lost_and_writes_nothing(make_dedup, arming: Arming) -> None:  # type: ignore[no-untyped-def]
    a, b = make_dedup(2)
    tag = a.new_tag()
    assert codes(a.claim(tag, ids("e1"))) == "C"
    a.settle(Settlement.RELEASED, tag, ["e1"])  # the request released its claims; the call lands late
    assert codes(a.claim(tag, ids("e1", "e2"), arming, renewal=True)) == "LL"
    assert a.state("e1") is None and a.state("e2") is None
    assert codes(b.claim(b.new_tag(), ids("e1", "e2"))) == "CC"  # another replica's copy: at once


def test_a_renewal_renews_arms_and_disarms_its_own_claims_as_before(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    tag = a.new_tag()
    assert codes(a.claim(tag, ids("e1", "e2"))) == "CC"
    assert codes(a.claim(tag, ids("e1", "e2"), Arming.PENDING, renewal=True)) == "CC"  # a disarm
    assert is_pending(a.state("e1")) and is_pending(a.state("e2"))
    assert codes(a.claim(tag, ids("e1"), Arming.KEEP, renewal=True)) == "C"  # a beat keeps it pending
    assert is_pending(a.state("e1"))
    assert codes(a.claim(tag, ids("e1", "e2", "e3"), Arming.ARM, renewal=True)) == "CCL"  # before the POST
    assert str(a.state("e1")).startswith(f"c|{tag}|") and not is_pending(a.state("e1"))
    assert not is_pending(a.state("e2")) and a.state("e3") is None


def test_a_renewal_of_a_replay_keeps_the_mark_it_replaced(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    x = a.new_tag()
    a.claim(x, ids("e1"))
    a.settle(Settlement.UNKNOWN, x, ["e1"])
    replay = a.new_tag()
    assert codes(a.claim(replay, ids("e1", replay_of=x))) == "C"
    assert codes(a.claim(replay, ids("e1", replay_of=x), Arming.ARM, renewal=True)) == "C"
    a.settle(Settlement.RELEASED, replay, ["e1"])
    assert a.state("e1") == f"u|{x}"
    # landing late, the renewal overrides nothing: the mark stays, the replay's claim is lost
    late = a.claim(replay, ids("e1", replay_of=x), Arming.ARM, renewal=True)
    assert codes(late) == "L" and a.state("e1") == f"u|{x}"


def test_a_renewal_answers_as_before_for_another_attempts_claim_and_writes_nothing(make_dedup) -> None:  # type: ignore[no-untyped-def]
    a, b = make_dedup(2, lease_ms=LEASE_MS)
    mine, other, armed, pending = a.new_tag(), b.new_tag(), b.new_tag(), b.new_tag()
    b.claim(other, ids("e1", "e2", "e3"))
    b.settle(Settlement.DELIVERED, other, ["e2"])
    b.settle(Settlement.UNKNOWN, other, ["e3"])
    b.claim(armed, ids("e4"))
    b.claim(pending, ids("e5"), Arming.PENDING)
    before = [a.state(i) for i in ("e1", "e2", "e3", "e4", "e5")]
    answer = a.claim(mine, ids("e1", "e2", "e3", "e4", "e5"), Arming.ARM, renewal=True)
    assert codes(answer) == "HDUHH" and answer.attempts == ["", "", other, "", ""]
    assert [a.state(i) for i in ("e1", "e2", "e3", "e4", "e5")] == before
    time.sleep(LEASE_MS / 1000 + 0.15)
    # lapsed: the armed claim is unknown (as a first claim finds it), the pending one free: lost
    answer = a.claim(mine, ids("e4", "e5"), Arming.KEEP, renewal=True)
    assert codes(answer) == "UL" and answer.attempts == [armed, ""]
    assert [a.state("e4"), a.state("e5")] == before[3:]


def test_a_renewal_takes_over_no_given_up_claim(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    gone, nxt = a.new_tag(), a.new_tag()
    a.claim(gone, ids("e1"))
    answer = a.claim(nxt, [ClaimRequest("e1", None, (gone,))], Arming.ARM, renewal=True)
    assert codes(answer) == "L" and str(a.state("e1")).startswith(f"c|{gone}|")
    assert codes(a.claim(nxt, [ClaimRequest("e1", None, (gone,))])) == "C"  # the first claim does


@pytest.mark.parametrize("arming", MODES, ids=[m.name for m in MODES])
def test_a_phone_renewal_finding_it_free_answers_lost_and_writes_nothing(make_cooldown, arming: Arming) -> None:  # type: ignore[no-untyped-def]
    mine, other = make_cooldown(2, lease_ms=60_000, ttl_ms=DAY)
    lost = "a|lost"
    assert phone_codes(mine.reserve(lost, [PhoneRequest(key(1))], window_ms=DAY)) == "R"
    mine.settle(PhoneFate.RELEASED, lost, [key(1)])
    late = mine.reserve(lost, [PhoneRequest(key(1)), PhoneRequest(key(2))], window_ms=DAY, arming=arming,
                        renewal=True)
    assert phone_codes(late) == "LL"
    assert mine.state(key(1)) is None and mine.state(key(2)) is None
    assert phone_codes(other.reserve("b|copy", [PhoneRequest(key(1)), PhoneRequest(key(2))], window_ms=DAY)) == "RR"


def test_a_phone_renewal_renews_its_own_and_answers_as_before_for_others(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    mine, other = make_cooldown(2, lease_ms=60_000, ttl_ms=DAY)
    tag = "a|1"
    assert phone_codes(mine.reserve(tag, [PhoneRequest(key(1))], window_ms=DAY)) == "R"
    assert phone_codes(mine.reserve(tag, [PhoneRequest(key(1))], window_ms=DAY, arming=Arming.PENDING,
                                    renewal=True)) == "R"
    assert str(mine.state(key(1))).startswith("r|0")  # disarmed
    assert phone_codes(mine.reserve(tag, [PhoneRequest(key(1))], window_ms=DAY, arming=Arming.KEEP,
                                    renewal=True)) == "R"
    assert str(mine.state(key(1))).startswith("r|0")
    assert phone_codes(mine.reserve(tag, [PhoneRequest(key(1))], window_ms=DAY, renewal=True)) == "R"
    assert str(mine.state(key(1))).startswith("r|") and not str(mine.state(key(1))).startswith("r|0")  # armed
    other.reserve("b|1", [PhoneRequest(key(2))], window_ms=DAY)  # another attempt's live reservation
    other.reserve("b|2", [PhoneRequest(key(3))], window_ms=DAY)
    other.settle(PhoneFate.ACCEPTED, "b|2", [key(3)])  # a contact within the window
    before = [mine.state(key(2)), mine.state(key(3))]
    answer = mine.reserve(tag, [PhoneRequest(key(2)), PhoneRequest(key(3)), PhoneRequest(key(4))],
                          window_ms=DAY, renewal=True)
    assert phone_codes(answer) == "HCL"
    assert [mine.state(key(2)), mine.state(key(3)), mine.state(key(4))] == [*before, None]
    # a contact older than the window is no claim of ours either: lost, and kept as it is
    time.sleep(0.01)
    assert phone_codes(mine.reserve(tag, [PhoneRequest(key(3))], window_ms=1, renewal=True)) == "L"
    assert mine.state(key(3)) == before[1]
