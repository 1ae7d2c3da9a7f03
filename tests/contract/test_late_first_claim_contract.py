"""Tombstones (lua/settle.lua, lua/settle_phones.lua, lua/claim.lua, lua/reserve_phones.lua): a
batch's first claim, the one call that takes free ids, whose reply was lost is not cancelled and
may land after its attempt released the ids. Released with a tombstone (`tombstone=True`, the
release of what such a call may take: consumer/delivery/claims.py, `_doubtful`), that late call
finds the tombstone naming its attempt and takes nothing; any other attempt's claim ignores it.
Against a single Redis and a Redis Cluster as against the memory twins; the late landing is the
same script call run again after the release.

Before, the late call took the ids again under an attempt that never sends: another replica's
copy of the event (an upstream duplicate, a record read again after a rebalance) was held back a
lease, then found the claim lapsed armed and was dead-lettered `ambiguous`, never sent; a phone's
stray reservation lapsed into a contact nobody made (the copy could end `cooldown`)."""

from __future__ import annotations

import time

import pytest

from consumer.state.arming import Arming
from consumer.state.cooldown import PhoneFate, PhoneRequest
from consumer.state.dedup import Settlement
from tests.contract.test_cooldown_contract import DAY, key, phones
from tests.contract.test_cooldown_contract import codes as phone_codes
from tests.contract.test_pending_claims_contract import codes, ids


@pytest.mark.parametrize("landed", [True, False], ids=["ran-then-reply-lost", "queued-until-after"])
def test_a_first_claim_landing_after_its_release_takes_nothing(make_dedup, landed: bool) -> None:  # type: ignore[no-untyped-def]
    a, b = make_dedup(2)
    lost = a.new_tag()
    if landed:  # the call ran and only its reply was lost; else it was still queued
        assert codes(a.claim(lost, ids("e1", "e2"))) == "CC"
    a.settle(Settlement.RELEASED, lost, ["e1", "e2"], tombstone=True)
    assert a.state("e1") is None and a.state("e2") is None
    for _ in range(2):  # each try of the lost call may land, in any order
        assert codes(a.claim(lost, ids("e1", "e2"))) == "HH"
        assert a.state("e1") is None and a.state("e2") is None
    copy = b.new_tag()
    assert codes(b.claim(copy, ids("e1", "e2"))) == "CC"  # another replica's copy: at once
    assert codes(a.claim(lost, ids("e1"))) == "H"  # landing later still: the copy's claim stands
    assert str(a.state("e1")).startswith(f"c|{copy}|")


def test_a_tombstone_names_one_attempt_and_only_the_ids_it_released(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    lost = a.new_tag()
    a.claim(lost, ids("e1", "e2"))
    a.settle(Settlement.RELEASED, lost, ["e1"], tombstone=True)
    # the same attempt's claim of another id (a replay's second trip) and its own live claim
    assert codes(a.claim(lost, ids("e1", "e2", "e3"))) == "HCC"
    assert codes(a.claim(lost, ids("e2", "e3"), Arming.KEEP, renewal=True)) == "CC"
    assert codes(a.claim(lost, ids("e1"), Arming.ARM, renewal=True)) == "L"  # a renewal, as before
    nxt = a.new_tag()  # this replica's next attempt, with or without the lost one's tag
    assert codes(a.claim(nxt, ids("e1"))) == "C"
    a.settle(Settlement.RELEASED, nxt, ["e1"])
    assert codes(a.claim(lost, ids("e1"))) == "H" and a.state("e1") is None
    a.settle(Settlement.DELIVERED, lost, ["e2"])  # what the attempt did send is marked as ever
    assert a.state("e2") == "d"


def test_a_plain_release_leaves_no_tombstone(make_dedup) -> None:  # type: ignore[no-untyped-def]
    """Only a release whose first claim may land late writes one: a release of ids whose claim was
    answered leaves them as free as before, for the same attempt too (idempotent per tag)."""
    (a,) = make_dedup()
    tag = a.new_tag()
    a.claim(tag, ids("e1"))
    a.settle(Settlement.RELEASED, tag, ["e1"])
    assert codes(a.claim(tag, ids("e1"))) == "C"


def test_a_late_replay_claim_leaves_the_unknown_mark_it_overrode(make_dedup) -> None:  # type: ignore[no-untyped-def]
    a, b = make_dedup(2)
    x = a.new_tag()
    a.claim(x, ids("e1"))
    a.settle(Settlement.UNKNOWN, x, ["e1"])
    replay = b.new_tag()
    assert codes(b.claim(replay, ids("e1", replay_of=x))) == "C"
    b.settle(Settlement.RELEASED, replay, ["e1"], tombstone=True)
    assert b.state("e1") == f"u|{x}"
    assert codes(b.claim(replay, ids("e1", replay_of=x))) == "H"  # the late try overrides nothing
    assert b.state("e1") == f"u|{x}"
    found = a.claim(a.new_tag(), ids("e1"))  # a plain copy: ambiguous under x, as before the replay
    assert codes(found) == "U" and found.attempts == [x]
    assert codes(a.claim(a.new_tag(), ids("e1", replay_of=x))) == "C"  # another replay of x: sent


@pytest.mark.parametrize("landed", [True, False], ids=["ran-then-reply-lost", "queued-until-after"])
def test_a_first_reservation_landing_after_its_release_takes_nothing(make_cooldown, landed: bool) -> None:  # type: ignore[no-untyped-def]
    a, b = make_cooldown(2, ttl_ms=DAY)
    lost = "a|lost"
    if landed:
        assert phone_codes(a.reserve(lost, phones(1, 2), window_ms=DAY)) == "RR"
    for _ in range(2):  # a release asked again (its reply lost too) keeps one tombstone of the tag
        a.settle(PhoneFate.RELEASED, lost, [key(1), key(2)], tombstone=True)
    assert str(a.state(key(1))).count(lost) == 1
    for _ in range(2):
        assert phone_codes(a.reserve(lost, phones(1, 2), window_ms=DAY)) == "HH"
    assert phone_codes(a.reserve(lost, phones(1), window_ms=DAY, renewal=True)) == "L"
    assert phone_codes(b.reserve("b|copy", phones(1, 2), window_ms=DAY)) == "RR"  # free for anyone else
    assert str(b.state(key(1))).startswith("r|") and lost in str(b.state(key(1)))
    b.settle(PhoneFate.RELEASED, "b|copy", [key(1)])  # the copy's reservation carried the tombstone on
    assert phone_codes(a.reserve(lost, phones(1), window_ms=DAY)) == "H"
    assert phone_codes(b.reserve("b|next", phones(1), window_ms=DAY)) == "R"  # free for anyone else, as ever
    b.settle(PhoneFate.RELEASED, "b|next", [key(1)])
    b.settle(PhoneFate.ACCEPTED, "b|copy", [key(2)])
    assert phone_codes(a.reserve(lost, phones(2), window_ms=DAY)) == "C"


@pytest.mark.parametrize("landed", [True, False], ids=["ran-then-reply-lost", "queued-until-after"])
def test_a_phone_tombstone_keeps_the_contact_it_stands_on(make_cooldown, landed: bool) -> None:  # type: ignore[no-untyped-def]
    """A contact older than the asking campaign's window, still within another's: the release puts
    it back with the tombstone, the late call takes nothing, and every campaign judges the phone by
    the contact, as without the tombstone."""
    a, b = make_cooldown(2, ttl_ms=DAY)
    b.reserve("b|1", phones(1), window_ms=DAY)
    b.settle(PhoneFate.ACCEPTED, "b|1", [key(1)])
    contact = b.state(key(1))
    time.sleep(0.05)
    lost = "a|lost"
    if landed:
        assert phone_codes(a.reserve(lost, phones(1), window_ms=10)) == "R"
    a.settle(PhoneFate.RELEASED, lost, [key(1)], tombstone=True)
    assert phone_codes(a.reserve(lost, phones(1), window_ms=10)) == "H"
    assert phone_codes(b.reserve("b|2", phones(1), window_ms=DAY)) == "C"
    assert phone_codes(b.reserve("b|3", phones(1), window_ms=10)) == "R"
    b.settle(PhoneFate.RELEASED, "b|3", [key(1)])
    assert b.state(key(1)) == f"{contact}#x|{lost}"  # the contact, and the tombstone b|3 carried
    assert phone_codes(a.reserve(lost, phones(1), window_ms=10)) == "H"


def test_a_replays_phone_tombstone_keeps_the_unknown_contact(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    a, b = make_cooldown(2)
    a.reserve("a|1", phones(1), window_ms=DAY)
    a.settle(PhoneFate.UNKNOWN, "a|1", [key(1)])
    assert phone_codes(b.reserve("b|replay", phones(1, replay_of="a|1"), window_ms=DAY)) == "R"
    b.settle(PhoneFate.RELEASED, "b|replay", [key(1)], tombstone=True)
    assert phone_codes(b.reserve("b|replay", phones(1, replay_of="a|1"), window_ms=DAY)) == "H"
    assert phone_codes(b.reserve("b|copy", phones(1), window_ms=DAY)) == "C"
    assert phone_codes(b.reserve("b|2", [PhoneRequest(key(1), "a|1")], window_ms=DAY)) == "R"


@pytest.mark.parametrize("then", ["released", "renewed-then-released", "lapsed-pending", "taken-over", "buried"])
def test_a_phone_tombstone_outlives_another_attempts_reservation(make_cooldown, then: str) -> None:  # type: ignore[no-untyped-def]
    """Another attempt reserving the phone between the tombstone and the late call (the copy a
    replica reads, or a reservation made optimistically for another event of the phone and released
    at once) carries the tombstone on, and its release puts it back. Before, the reservation
    dropped it and its release left the phone free: the late call then reserved it under an attempt
    that never sends, and that stray reservation held the copy back a lease, then counted as a
    contact nobody made (the copy ended `cooldown`, never sent)."""
    a, b = make_cooldown(2, lease_ms=100 if then == "lapsed-pending" else 60_000, ttl_ms=DAY)
    lost = "a|lost"
    a.settle(PhoneFate.RELEASED, lost, [key(1)], tombstone=True)
    arming = Arming.PENDING if then == "lapsed-pending" else Arming.ARM
    assert phone_codes(b.reserve("b|copy", phones(1), window_ms=DAY, arming=arming)) == "R"
    assert phone_codes(a.reserve(lost, phones(1), window_ms=DAY)) == "H"  # landing while b holds it
    if then == "renewed-then-released":
        assert phone_codes(b.reserve("b|copy", phones(1), window_ms=DAY, arming=Arming.KEEP, renewal=True)) == "R"
    if then == "lapsed-pending":
        time.sleep(0.15)  # b's pending reservation lapsed: it texted no one
    elif then == "taken-over":  # b gave it up unsent; its next attempt takes it over, then releases it
        assert phone_codes(b.reserve("b|next", [PhoneRequest(key(1), None, ("b|copy",))], window_ms=DAY)) == "R"
        b.settle(PhoneFate.RELEASED, "b|next", [key(1)])
    elif then == "buried":  # b's first reservation was doubtful too
        b.settle(PhoneFate.RELEASED, "b|copy", [key(1)], tombstone=True)
        assert phone_codes(b.reserve("b|copy", phones(1), window_ms=DAY)) == "H"
    else:
        b.settle(PhoneFate.RELEASED, "b|copy", [key(1)])
    assert phone_codes(a.reserve(lost, phones(1), window_ms=DAY)) == "H"  # the late call takes nothing
    assert phone_codes(a.reserve(lost, phones(1), window_ms=DAY, renewal=True)) == "L"
    assert phone_codes(b.reserve("b|other", phones(1), window_ms=DAY)) == "R"  # free for anyone else


def test_a_carried_phone_tombstone_keeps_the_contact_under_it(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    """The tombstone carried by another attempt's reservation keeps the contact it stood on: that
    reservation's release puts back both, and every campaign judges the phone by the contact."""
    a, b = make_cooldown(2, ttl_ms=DAY)
    b.reserve("b|1", phones(1), window_ms=DAY)
    b.settle(PhoneFate.ACCEPTED, "b|1", [key(1)])
    contact = str(b.state(key(1)))
    time.sleep(0.05)
    lost = "a|lost"
    a.settle(PhoneFate.RELEASED, lost, [key(1)], tombstone=True)
    assert phone_codes(b.reserve("b|2", phones(1), window_ms=10)) == "R"
    b.settle(PhoneFate.RELEASED, "b|2", [key(1)])
    assert str(b.state(key(1))).startswith(contact)
    assert phone_codes(a.reserve(lost, phones(1), window_ms=10)) == "H"
    assert phone_codes(b.reserve("b|3", phones(1), window_ms=DAY)) == "C"
    b.settle(PhoneFate.ACCEPTED, "b|4", [key(1)])  # a contact made now wins over the tombstone, as ever
    assert phone_codes(a.reserve(lost, phones(1), window_ms=10)) == "C"


@pytest.mark.parametrize("then", ["released", "renewed-then-released", "lapsed-pending", "accepted"])
def test_a_phone_tombstone_rides_on_the_reservation_of_the_attempt_holding_it(make_cooldown, then: str) -> None:  # type: ignore[no-untyped-def]
    """The lost call's answered retry found the phone held by another attempt (a copy read
    elsewhere): its release leaves that reservation as it is (still the holder's, same lease) but
    carrying the tombstone, so the late call, landing after the holder let go, takes nothing. It
    left no tombstone at all before: the late call reserved the phone once the holder released it,
    and the holder's next attempt was held back a lease, then ended `cooldown`, never sent."""
    a, b = make_cooldown(2, lease_ms=100 if then == "lapsed-pending" else 60_000, ttl_ms=DAY)
    arming = Arming.PENDING if then == "lapsed-pending" else Arming.ARM
    assert phone_codes(b.reserve("b|copy", phones(1), window_ms=DAY, arming=arming)) == "R"
    held = str(b.state(key(1)))
    lost = "a|lost"
    a.settle(PhoneFate.RELEASED, lost, [key(1)], tombstone=True)
    assert str(b.state(key(1))).startswith(held)  # still b's, as it was
    assert phone_codes(a.reserve(lost, phones(1), window_ms=DAY)) == "H"
    assert phone_codes(b.reserve("x|other", phones(1), window_ms=DAY)) == "H"  # b's for anyone else
    if then == "renewed-then-released":
        assert phone_codes(b.reserve("b|copy", phones(1), window_ms=DAY, arming=Arming.ARM, renewal=True)) == "R"
    if then == "lapsed-pending":
        time.sleep(0.15)
    elif then == "accepted":
        b.settle(PhoneFate.ACCEPTED, "b|copy", [key(1)])
        assert phone_codes(a.reserve(lost, phones(1), window_ms=DAY)) == "C"
        return
    else:
        b.settle(PhoneFate.RELEASED, "b|copy", [key(1)])
    assert phone_codes(a.reserve(lost, phones(1), window_ms=DAY)) == "H"  # the late call takes nothing
    assert phone_codes(b.reserve("b|next", phones(1), window_ms=DAY)) == "R"  # free for anyone else
