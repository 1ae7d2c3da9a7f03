"""A disarm (the PENDING marking after a failed attempt) whose reply was lost may land late: after
its request's release, after the events' next attempt, after their delivery (consumer/delivery/
claims.py, `Claim.disarm`). Against a single Redis and a Redis Cluster as against the memory twin:
what it leaves is taken over by the next attempt that carries its tag (`PendingEvent.abandoned_by`),
armed for its own POST; a copy that does not carry it is held for a lease, then finds the id free
(the late call sent nothing) or, for a signed replay's claim, the unknown mark it replaced; and the
late call never disturbs the state an attempt after it wrote."""

from __future__ import annotations

import time

from consumer.state.arming import Arming
from consumer.state.cooldown import PhoneFate, PhoneRequest
from consumer.state.dedup import ClaimRequest, Settlement
from tests.contract.test_cooldown_contract import DAY, key
from tests.contract.test_cooldown_contract import codes as phone_codes
from tests.contract.test_pending_claims_contract import codes, ids

LEASE_MS = 400


def is_pending(value: str | None) -> bool:
    return value is not None and value.startswith("c|") and value.rsplit("|", 1)[1].startswith("0")


def test_a_late_disarm_after_the_release_is_taken_over_by_the_tagged_attempt(make_dedup) -> None:  # type: ignore[no-untyped-def]
    mine, other = make_dedup(2, lease_ms=LEASE_MS)
    lost = mine.new_tag()
    assert codes(mine.claim(lost, ids("e1", "e2"))) == "CC"
    mine.settle(Settlement.RELEASED, lost, ["e1", "e2"])  # claim_lost: released, requeued tagged
    assert codes(mine.claim(lost, ids("e1", "e2"), Arming.PENDING)) == "CC"  # the late disarm lands
    assert is_pending(mine.state("e1")) and is_pending(mine.state("e2"))
    # A copy read by another replica (a duplicate record, a rebalance): held while the stray claim lives
    assert codes(other.claim(other.new_tag(), ids("e2"))) == "H"
    nxt = mine.new_tag()
    taken = mine.claim(nxt, [ClaimRequest("e1", None, (lost,))])
    assert codes(taken) == "C"
    value = str(mine.state("e1"))
    assert value.startswith(f"c|{nxt}|") and not is_pending(value), value  # armed, for its own POST
    assert codes(other.claim(other.new_tag(), ids("e1"))) == "H"  # the taker's live claim
    time.sleep(LEASE_MS / 1000 + 0.15)
    # e2's stray claim lapsed: pending, so free (the late call sent nothing), not ambiguous
    copy = other.new_tag()
    assert codes(other.claim(copy, ids("e2"))) == "C"
    assert str(other.state("e2")).startswith(f"c|{copy}|")


def test_a_late_disarm_never_touches_what_a_later_attempt_wrote(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup(lease_ms=60_000)
    lost, nxt = a.new_tag(), a.new_tag()
    a.claim(lost, ids("e1", "e2", "e3"))
    a.settle(Settlement.RELEASED, lost, ["e1", "e2", "e3"])
    tagged = [ClaimRequest(i, None, (lost,)) for i in ("e1", "e2", "e3")]
    assert codes(a.claim(nxt, tagged)) == "CCC"
    a.settle(Settlement.DELIVERED, nxt, ["e2"])
    a.settle(Settlement.UNKNOWN, nxt, ["e3"])
    before = [a.state(i) for i in ("e1", "e2", "e3")]
    late = a.claim(lost, ids("e1", "e2", "e3"), Arming.PENDING)
    assert codes(late) == "HDU" and late.attempts == ["", "", nxt]
    assert [a.state(i) for i in ("e1", "e2", "e3")] == before


def test_a_late_disarm_of_a_replay_keeps_the_mark_it_overrode(make_dedup) -> None:  # type: ignore[no-untyped-def]
    a, b = make_dedup(2, lease_ms=LEASE_MS)
    x = a.new_tag()
    a.claim(x, ids("e1", "e2"))
    a.settle(Settlement.UNKNOWN, x, ["e1", "e2"])
    lost = a.new_tag()
    assert codes(a.claim(lost, ids("e1", "e2", replay_of=x))) == "CC"
    a.settle(Settlement.RELEASED, lost, ["e1", "e2"])
    assert a.state("e1") == f"u|{x}"
    assert codes(a.claim(lost, ids("e1", "e2", replay_of=x), Arming.PENDING)) == "CC"  # late
    # the replay's next attempt takes it over, still over x's mark: released, the mark comes back
    nxt = a.new_tag()
    assert codes(a.claim(nxt, [ClaimRequest("e1", x, (lost,))])) == "C"
    a.settle(Settlement.RELEASED, nxt, ["e1"])
    assert a.state("e1") == f"u|{x}"
    # a plain copy elsewhere: held, then x's mark again (never free: nobody checked x for it)
    assert codes(b.claim(b.new_tag(), ids("e2"))) == "H"
    time.sleep(LEASE_MS / 1000 + 0.15)
    plain = b.claim(b.new_tag(), ids("e2"))
    assert codes(plain) == "U" and plain.attempts == [x]


def test_a_late_phone_disarm_after_the_release(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    mine, other = make_cooldown(2, lease_ms=LEASE_MS)
    lost = "a|lost"
    assert phone_codes(mine.reserve(lost, [PhoneRequest(key(1)), PhoneRequest(key(2))], window_ms=DAY)) == "RR"
    mine.settle(PhoneFate.RELEASED, lost, [key(1), key(2)])
    # the late disarm (a renewal: no earlier tags) lands after the release
    late = mine.reserve(lost, [PhoneRequest(key(1)), PhoneRequest(key(2))], window_ms=DAY, arming=Arming.PENDING)
    assert phone_codes(late) == "RR"
    assert phone_codes(other.reserve("b|copy", [PhoneRequest(key(2))], window_ms=DAY)) == "H"
    assert phone_codes(mine.reserve("a|next", [PhoneRequest(key(1), None, (lost,))], window_ms=DAY)) == "R"
    assert str(mine.state(key(1))).startswith("r|") and not str(mine.state(key(1))).startswith("r|0")
    mine.settle(PhoneFate.ACCEPTED, "a|next", [key(1)])
    # arriving later still, it finds the contact: never a reservation over it
    assert phone_codes(mine.reserve(lost, [PhoneRequest(key(1))], window_ms=DAY, arming=Arming.PENDING)) == "C"
    time.sleep(LEASE_MS / 1000 + 0.15)
    assert phone_codes(other.reserve("b|copy2", [PhoneRequest(key(1)), PhoneRequest(key(2))], window_ms=DAY)) == "CR"
