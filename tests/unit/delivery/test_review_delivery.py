"""Delivery seams found by review (2026-12-03): each test failed before its fix."""

from __future__ import annotations

import time

from consumer.errors import PisanoApiError
from consumer.state.circuit import CircuitBreaker, Trip
from consumer.state.dedup import ClaimRequest, Settlement
from consumer.state.memory import MemoryCircuitStore
from tests.support.fakes import CAMPAIGN, FakePisano, event, rig

OTHER = "0f5b1c2e-1111-4222-8333-944455556666"


def test_a_replay_that_certainly_failed_leaves_the_unknown_mark_it_overrode() -> None:
    """A signed replay overrides attempt X's unknown mark. Its request failing for sure (503 three
    times; likewise a claim lost, a send window closed, a phone in cooldown) released its claim,
    which deleted the mark: a plain copy of the event (a producer's duplicate) was then sent, though
    X may have reached Pisano."""
    unavailable = PisanoApiError(503, None, "Service Unavailable")
    r = rig(FakePisano([unavailable, unavailable, unavailable]), max_attempts=3)
    other = r.dedup.replica()
    x = other.new_tag()
    other.claim(x, [ClaimRequest("e1")])
    other.settle(Settlement.UNKNOWN, x, ["e1"])  # attempt X timed out: dead-lettered as ambiguous
    r.process([event(1, replay_of=x)])  # the SRE's signed replay of X
    assert r.reasons() == {"e1": "retries_exhausted"}
    assert r.dedup.state("e1") == f"u|{x}"

    copy = rig(dedup=r.dedup)
    copy.process([event(1)])
    assert copy.kinds() == {"e1": {"dead_letter"}} and not copy.pisano.requests


def test_a_replay_that_certainly_failed_writes_no_mark_it_did_not_override() -> None:
    """Found in review: the release above wrote `u|X` whether or not the replay's claim had
    overridden X's mark. X released (or never claimed) the id, or its mark lapsed: the failed
    replay then left an unknown mark that was never there, and a plain copy (a producer's
    duplicate, a replay without a signature) was dead-lettered as ambiguous instead of sent."""
    unavailable = PisanoApiError(503, None, "Service Unavailable")
    r = rig(FakePisano([unavailable, unavailable, unavailable]), max_attempts=3)
    other = r.dedup.replica()
    x = other.new_tag()
    other.claim(x, [ClaimRequest("e1")])
    other.settle(Settlement.RELEASED, x, ["e1"])  # attempt X certainly failed: the id is free
    r.process([event(1, replay_of=x), event(2, replay_of=x)])  # e2: never claimed by X at all
    assert r.reasons() == {"e1": "retries_exhausted", "e2": "retries_exhausted"}
    assert r.dedup.state("e1") is None and r.dedup.state("e2") is None

    copy = rig(dedup=r.dedup)
    copy.process([event(1), event(2)])
    assert copy.kinds() == {"e1": {"delivered"}, "e2": {"delivered"}}


def test_a_malformed_campaign_circuit_ends_its_events_and_does_not_stall_the_destination() -> None:
    """A campaign circuit's hash with a code that is not a number (written by hand, or by another
    version) raised ValueError in every sender turn, before the handler meant for it: that
    campaign kept the turn, and no event of any campaign of the destination got an outcome."""
    r = rig()
    store = r.sender.destination.campaigns.stores(CAMPAIGN)
    store.write_open({"code": "13002-x", "status": "404", "message": "m"}, 60_000)
    r.batcher.max_wait_s = 0.0
    r.batcher.add([event(1)])
    time.sleep(0.01)
    r.batcher.add([event(2, campaign=OTHER)])
    r.sender.start()
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and len(r.kinds()) < 2:
            time.sleep(0.05)
    finally:
        r.sender.stop(2)
    assert r.kinds() == {"e1": {"dead_letter"}, "e2": {"delivered"}}


def test_a_circuit_hash_with_malformed_numbers_reads_as_open_without_them() -> None:
    store = MemoryCircuitStore()
    store.write_open({"code": "x", "status": "4O4", "message": "m"}, 60_000)
    store._fields["cooldown_ms"] = "soon"
    breaker = CircuitBreaker(store, cooldown_ms=1000, max_cooldown_ms=8000, probe_lease_ms=1000)
    assert breaker.state() == ("open", Trip(None, None, "m"))
    breaker.open(Trip(13002, 404, "again"))  # a malformed previous cool-down counts as none
    assert store.previous_cooldown_ms() == 1000
