"""The dedup store's contract: claim, settle, hold back, unknown fate, replays."""

from __future__ import annotations

import time

from consumer.state.dedup import ClaimRequest, ClaimStatus, Settlement


def ids(*names: str, replay: bool = False) -> list[ClaimRequest]:
    return [ClaimRequest(n, replay) for n in names]


def codes(statuses: list[ClaimStatus]) -> str:
    return "".join(s.value for s in statuses)


def test_delivered_ids_are_skipped_fleet_wide(make_dedup) -> None:  # type: ignore[no-untyped-def]
    a, b = make_dedup(2)
    tag = a.new_tag()
    assert codes(a.claim(tag, ids("e1", "e2"))) == "CC"
    assert codes(b.claim(b.new_tag(), ids("e1", "e3"))) == "HC"  # in flight on a: held back, not skipped
    a.settle(Settlement.DELIVERED, tag, ["e1", "e2"])
    assert codes(b.claim(b.new_tag(), ids("e1", "e2"))) == "DD"


def test_released_ids_can_be_sent_again(make_dedup) -> None:  # type: ignore[no-untyped-def]
    a, b = make_dedup(2)
    tag = a.new_tag()
    a.claim(tag, ids("e1"))
    b.settle(Settlement.RELEASED, b.new_tag(), ["e1"])  # someone else's release does nothing
    assert codes(b.claim(b.new_tag(), ids("e1"))) == "H"
    a.settle(Settlement.RELEASED, tag, ["e1"])
    assert codes(b.claim(b.new_tag(), ids("e1"))) == "C"


def test_a_retried_claim_is_idempotent(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    tag = a.new_tag()
    assert codes(a.claim(tag, ids("e1"))) == "C"
    assert codes(a.claim(tag, ids("e1"))) == "C"  # the first reply was lost; the retry must not hold itself
    assert codes(a.claim(a.new_tag(), ids("e1"))) == "H"  # another request of the same replica: held


def test_expired_claim_is_unknown_and_only_a_replay_may_send_it(make_dedup) -> None:  # type: ignore[no-untyped-def]
    crashed, survivor = make_dedup(2, lease_ms=300)
    crashed.claim(crashed.new_tag(), ids("e1"))  # then the process died before settling
    time.sleep(0.4)
    assert codes(survivor.claim(survivor.new_tag(), ids("e1"))) == "U"
    assert codes(survivor.claim(survivor.new_tag(), ids("e1", replay=True))) == "C"


def test_a_replay_never_sends_a_delivered_event(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    tag = a.new_tag()
    a.claim(tag, ids("e1"))
    a.settle(Settlement.DELIVERED, tag, ["e1"])
    assert codes(a.claim(a.new_tag(), ids("e1", replay=True))) == "D"


def test_unknown_fate_is_kept_and_never_downgrades_delivered(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup()
    tag = a.new_tag()
    a.claim(tag, ids("e1", "e2"))
    a.settle(Settlement.UNKNOWN, tag, ["e1"])
    a.settle(Settlement.DELIVERED, tag, ["e2"])
    a.settle(Settlement.UNKNOWN, tag, ["e2"])
    assert a.state("e1") == "u" and a.state("e2") == "d"
    assert codes(a.claim(a.new_tag(), ids("e1", "e2"))) == "UD"


def test_marks_are_forgotten_after_the_horizon(make_dedup) -> None:  # type: ignore[no-untyped-def]
    (a,) = make_dedup(horizon_s=1)
    tag = a.new_tag()
    a.claim(tag, ids("e1"))
    a.settle(Settlement.DELIVERED, tag, ["e1"])
    assert a.state("e1") == "d"
    time.sleep(1.1)
    assert a.state("e1") is None
