"""The contact cooldown store's contract (issue 13, point 1): a phone is reserved by one attempt at
a time, a reservation becomes a contact only when its request was accepted (or may have been), a
contact refuses the phone for the asking campaign's window, and a release frees only one's own."""

from __future__ import annotations

import hashlib
import time

from consumer.state.cooldown import BUCKETS, PhoneFate, PhoneRequest, PhoneStatus, phone_key
from consumer.state.redis import Keys

DAY = 86_400_000


def key(n: int) -> str:
    """The key of phone n: a 128-bit digest, as the keyed hash of a phone is."""
    return phone_key(Keys("t"), hashlib.sha256(str(n).encode()).hexdigest()[:32])


def phones(*numbers: int, replay_of: str | None = None) -> list[PhoneRequest]:
    return [PhoneRequest(key(n), replay_of) for n in numbers]


def codes(statuses: list[PhoneStatus]) -> str:
    return "".join(s.value for s in statuses)


def test_one_attempt_holds_a_phone_and_its_acceptance_starts_the_cooldown(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    a, b = make_cooldown(2)
    assert codes(a.reserve("a|1", phones(1, 2), window_ms=DAY)) == "RR"
    assert codes(b.reserve("b|1", phones(1, 3), window_ms=DAY)) == "HR"  # a has it: held back, not refused
    a.settle(PhoneFate.ACCEPTED, "a|1", [key(1), key(2)])
    assert codes(b.reserve("b|2", phones(1, 2), window_ms=DAY)) == "CC"
    assert a.state(key(1)).startswith("c|")


def test_a_failed_request_leaves_the_phone_free_and_only_its_own_release_counts(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    a, b = make_cooldown(2)
    a.reserve("a|1", phones(1), window_ms=DAY)
    b.settle(PhoneFate.RELEASED, "b|1", [key(1)])  # someone else's release does nothing
    assert codes(b.reserve("b|1", phones(1), window_ms=DAY)) == "H"
    a.settle(PhoneFate.RELEASED, "a|1", [key(1)])
    assert a.state(key(1)) is None
    assert codes(b.reserve("b|1", phones(1), window_ms=DAY)) == "R"


def test_a_release_never_removes_a_contact(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_cooldown()
    a.reserve("a|1", phones(1), window_ms=DAY)
    a.settle(PhoneFate.ACCEPTED, "a|1", [key(1)])
    a.settle(PhoneFate.RELEASED, "a|1", [key(1)])  # a late release of the same attempt
    assert codes(a.reserve("a|2", phones(1), window_ms=DAY)) == "C"


def test_a_retried_reservation_is_idempotent(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_cooldown()
    assert codes(a.reserve("a|1", phones(1), window_ms=DAY)) == "R"
    assert codes(a.reserve("a|1", phones(1), window_ms=DAY)) == "R"  # the first reply was lost
    assert codes(a.reserve("a|2", phones(1), window_ms=DAY)) == "H"  # another request of the same replica


def test_an_unknown_fate_counts_as_a_contact_and_only_a_replay_of_that_attempt_overrides_it(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    a, b = make_cooldown(2)
    a.reserve("a|1", phones(1), window_ms=DAY)
    a.settle(PhoneFate.UNKNOWN, "a|1", [key(1)])
    assert codes(b.reserve("b|1", phones(1), window_ms=DAY)) == "C"
    assert codes(b.reserve("b|2", phones(1, replay_of="other|x"), window_ms=DAY)) == "C"
    assert codes(b.reserve("b|3", phones(1, replay_of="a|1"), window_ms=DAY)) == "R"


def test_a_reservation_past_its_lease_counts_as_a_contact(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    crashed, survivor = make_cooldown(2, lease_ms=300)
    crashed.reserve("a|1", phones(1), window_ms=DAY)  # then the replica died between POST and settling
    time.sleep(0.4)
    assert codes(survivor.reserve("b|1", phones(1), window_ms=DAY)) == "C"
    assert codes(crashed.reserve("a|1", phones(1), window_ms=DAY)) == "C"  # nor may its late owner renew it


def test_the_window_is_the_asking_campaigns_and_the_cooldown_ends(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_cooldown(1, ttl_ms=10_000)
    a.reserve("a|1", phones(1), window_ms=10_000)
    a.settle(PhoneFate.ACCEPTED, "a|1", [key(1)])
    time.sleep(0.5)
    assert codes(a.reserve("a|2", phones(1), window_ms=10_000)) == "C"  # a 10 s campaign: still cooling
    assert codes(a.reserve("a|3", phones(1), window_ms=300)) == "R"  # a 300 ms campaign: free again


def test_contacts_are_kept_for_the_ttl_only(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_cooldown(1, ttl_ms=300)
    a.reserve("a|1", phones(1), window_ms=DAY)
    a.settle(PhoneFate.ACCEPTED, "a|1", [key(1)])
    time.sleep(0.5)
    assert a.state(key(1)) is None
    assert codes(a.reserve("a|2", phones(1), window_ms=DAY)) == "R"


def test_a_batch_over_every_bucket_answers_in_order(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    a, b = make_cooldown(2)
    numbers = list(range(20 * BUCKETS))
    assert len({key(n).split("}")[0] for n in numbers}) == BUCKETS
    taken = numbers[::3]
    assert codes(a.reserve("a|1", phones(*taken), window_ms=DAY)) == "R" * len(taken)
    a.settle(PhoneFate.ACCEPTED, "a|1", [key(n) for n in taken])
    expected = "".join("C" if n in set(taken) else "R" for n in numbers)
    assert codes(b.reserve("b|1", phones(*numbers), window_ms=DAY)) == expected


def test_keys_hold_no_phone_and_their_buckets_spread_evenly_over_the_slots() -> None:
    from redis.crc import key_slot

    k = phone_key(Keys("pfx"), "ab" * 16)
    assert k.startswith(f"{{pfx:p:{0xabab % BUCKETS}:") and k.endswith(f"}}:cd:{'ab' * 16}")
    slots = sorted(key_slot(phone_key(Keys("pfx"), f"{b:04x}" + "0" * 28).encode()) for b in range(BUCKETS))
    assert [s * BUCKETS // 16384 for s in slots] == list(range(BUCKETS))  # one bucket in each 64th


def test_a_released_reservation_puts_back_the_contact_it_covered(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    """A 300 ms campaign reserves a phone whose contact a 1-day campaign still counts; the request is
    not sent (or the reservation was optimistic and its event skipped): the contact is back, with
    its expiry, and the 1-day campaign still finds the phone cooling."""
    a, b = make_cooldown(2, ttl_ms=5_000)
    a.reserve("a|1", phones(1), window_ms=DAY)
    a.settle(PhoneFate.ACCEPTED, "a|1", [key(1)])
    contact = a.state(key(1))
    time.sleep(0.4)
    assert codes(b.reserve("b|1", phones(1), window_ms=300)) == "R"
    assert codes(b.reserve("b|1", phones(1), window_ms=300)) == "R"  # renewed: still covering it
    assert codes(a.reserve("a|2", phones(1), window_ms=DAY)) == "H"
    b.settle(PhoneFate.RELEASED, "b|1", [key(1)])
    assert a.state(key(1)) == contact
    assert codes(a.reserve("a|2", phones(1), window_ms=DAY)) == "C"
    # An accepted request replaces what it covered: its own contact is the last one.
    assert codes(b.reserve("b|2", phones(1), window_ms=300)) == "R"
    b.settle(PhoneFate.ACCEPTED, "b|2", [key(1)])
    assert (a.state(key(1)) or "").startswith("c|") and "#" not in (a.state(key(1)) or "")
    assert a.state(key(1)) != contact


def test_a_released_replay_puts_back_the_unknown_contact_it_overrode(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    a, b = make_cooldown(2)
    a.reserve("a|1", phones(1), window_ms=DAY)
    a.settle(PhoneFate.UNKNOWN, "a|1", [key(1)])
    assert codes(b.reserve("b|1", phones(1, replay_of="a|1"), window_ms=DAY)) == "R"
    b.settle(PhoneFate.RELEASED, "b|1", [key(1)])  # the replay was not sent after all
    assert (a.state(key(1)) or "").startswith("u|")
    assert codes(b.reserve("b|2", phones(1), window_ms=DAY)) == "C"
    assert codes(b.reserve("b|3", phones(1, replay_of="a|1"), window_ms=DAY)) == "R"


def test_a_covered_contact_past_its_ttl_is_not_put_back(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_cooldown(1, ttl_ms=600, lease_ms=60_000)
    a.reserve("a|1", phones(1), window_ms=DAY)
    a.settle(PhoneFate.ACCEPTED, "a|1", [key(1)])
    time.sleep(0.3)
    assert codes(a.reserve("a|2", phones(1), window_ms=100)) == "R"
    time.sleep(0.5)  # the covered contact's own expiry passed meanwhile
    a.settle(PhoneFate.RELEASED, "a|2", [key(1)])
    assert a.state(key(1)) is None


def test_a_replay_of_the_attempt_whose_reservation_lapsed_may_override_it(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    """A lapsed reservation is the contact of an attempt of unknown fate (its replica died between
    the POST and settling), as an unknown mark is: the signed replay of that attempt's ambiguous
    dead-letter may send over it, and a release puts it back; nothing else may."""
    crashed, survivor = make_cooldown(2, lease_ms=300)
    crashed.reserve("a|1", phones(1), window_ms=DAY)
    time.sleep(0.4)
    assert codes(survivor.reserve("b|1", phones(1, replay_of="other|x"), window_ms=DAY)) == "C"
    assert codes(survivor.reserve("b|2", phones(1, replay_of="a|1"), window_ms=DAY)) == "R"
    survivor.settle(PhoneFate.RELEASED, "b|2", [key(1)])  # the replay was not sent after all
    assert (survivor.state(key(1)) or "").startswith("r|")
    assert codes(survivor.reserve("b|3", phones(1), window_ms=DAY)) == "C"
    assert codes(survivor.reserve("b|4", phones(1, replay_of="a|1"), window_ms=DAY)) == "R"


def test_a_reservation_given_up_unsent_is_taken_over_with_the_contact_it_covers(make_cooldown) -> None:  # type: ignore[no-untyped-def]
    """A reservation whose reply was lost, or whose release never landed, is this replica's own
    attempt that gave the phone up unsent (`PhoneRequest.abandoned_by`): taken over, live or lapsed,
    neither waited for nor counted as a contact. A contact is never taken over."""
    a, b = make_cooldown(2, lease_ms=300)
    a.reserve("a|1", phones(1), window_ms=1)
    a.settle(PhoneFate.ACCEPTED, "a|1", [key(1)])  # a contact outside the window of the next campaign
    time.sleep(0.01)
    assert codes(a.reserve("a|lost", phones(1, 2, 3), window_ms=1)) == "RRR"  # the reply never arrived
    assert codes(b.reserve("b|1", phones(4), window_ms=DAY)) == "R"
    asked = [PhoneRequest(key(1), None, ("a|lost",)), PhoneRequest(key(2)),
             PhoneRequest(key(4), None, ("a|lost",))]
    assert codes(a.reserve("a|2", asked, window_ms=1)) == "RHH"
    a.settle(PhoneFate.RELEASED, "a|lost", [key(1)])  # the lost attempt's release, landing late: nothing
    a.settle(PhoneFate.RELEASED, "a|2", [key(1)])
    assert a.state(key(1)).startswith("c|")  # the contact it covered is back
    time.sleep(0.4)  # key 3's reservation lapses: a contact for anyone else
    assert codes(b.reserve("b|2", phones(3), window_ms=DAY)) == "C"
    assert codes(a.reserve("a|3", [PhoneRequest(key(3), None, ("x|y", "a|lost"))], window_ms=DAY)) == "R"
    a.settle(PhoneFate.ACCEPTED, "a|3", [key(3)])
    assert codes(a.reserve("a|4", [PhoneRequest(key(3), None, ("a|3",))], window_ms=DAY)) == "C"
