"""Delivery seams found by review (2026-12-03): each test failed before its fix."""

from __future__ import annotations

from consumer.errors import PisanoApiError
from consumer.state.dedup import ClaimRequest, Settlement
from tests.support.fakes import FakePisano, event, rig


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
