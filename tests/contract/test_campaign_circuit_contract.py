"""The per-campaign circuits' contract over each store: one campaign's circuit never touches
another's or the token's, the fleet shares each, and a real batch probes a half-open one."""

from __future__ import annotations

import time

import pytest

from consumer.state.campaigns import CampaignCircuits
from consumer.state.circuit import Trip

TRIP = Trip(13002, 404, "Requested resource not found!")
BROKEN, FINE = "00000000-0000-4000-8000-000000013002", "ae51458c-9e82-417f-8f1d-e074891ea5c1"


@pytest.fixture(autouse=True)
def no_read_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("consumer.state.circuit.REFRESH_S", 0.0)


def circuits(stores) -> CampaignCircuits:  # type: ignore[no-untyped-def]
    return CampaignCircuits(stores, cooldown_ms=300, max_cooldown_ms=1000, probe_lease_ms=5_000)


def test_a_campaign_opens_for_the_fleet_and_only_itself(campaign_stores) -> None:  # type: ignore[no-untyped-def]
    a, b = circuits(campaign_stores), circuits(campaign_stores)
    assert a.admit(BROKEN) == "send"
    a.record(BROKEN, "send", TRIP)
    assert b.admit(BROKEN) == TRIP and b.trip_if_refused(BROKEN) == TRIP
    assert b.admit(FINE) == "send" and b.trip_if_refused(FINE) is None
    assert b.blocked() == {BROKEN} and b.open_count() == 1


def test_one_replica_probes_with_a_real_batch_then_closes_for_all(campaign_stores) -> None:  # type: ignore[no-untyped-def]
    a, b = circuits(campaign_stores), circuits(campaign_stores)
    a.record(BROKEN, "send", TRIP)
    time.sleep(0.35)
    assert b.trip_if_refused(BROKEN) is None  # half-open, no one probes: a batch may
    assert a.admit(BROKEN) == "probe"
    assert b.trip_if_refused(BROKEN) == TRIP  # known before any slot is spent on it
    assert b.admit(BROKEN) == TRIP  # the others keep dead-lettering while one probes
    a.record(BROKEN, "probe", True)
    assert b.admit(BROKEN) == "send" and b.blocked() == frozenset()


def test_a_refused_probe_reopens_longer_and_no_verdict_frees_the_probe(campaign_stores) -> None:  # type: ignore[no-untyped-def]
    a, b = circuits(campaign_stores), circuits(campaign_stores)
    a.record(BROKEN, "send", TRIP)
    time.sleep(0.35)
    assert a.admit(BROKEN) == "probe"
    a.record(BROKEN, "probe", TRIP)
    assert campaign_stores(BROKEN).previous_cooldown_ms() == 600
    time.sleep(0.35)
    assert b.admit(BROKEN) == TRIP  # still open: 600 ms now
    time.sleep(0.3)
    probe = b.admit(BROKEN)
    assert probe == "probe"
    b.record(BROKEN, probe, None)  # a 503: no verdict
    assert a.admit(BROKEN) == "probe"


def test_a_replica_that_had_not_heard_yet_does_not_lengthen_the_cool_down(campaign_stores) -> None:  # type: ignore[no-untyped-def]
    a, b = circuits(campaign_stores), circuits(campaign_stores)
    assert b.admit(BROKEN) == "send"  # b read "closed" and keeps it for a while
    a.record(BROKEN, "send", TRIP)
    b.record(BROKEN, "send", TRIP)  # b's batch got the same answer
    assert campaign_stores(BROKEN).previous_cooldown_ms() == 300  # not doubled
    assert b.blocked() == {BROKEN}


def test_a_slow_probe_gives_back_only_its_own_lease(campaign_stores) -> None:  # type: ignore[no-untyped-def]
    """A probe batch slower than its lease ends without a verdict (a 503): its lease is given back
    only if it is still its own, never the lease of the replica that probes since (found by
    review: release deleted the probe key whoever held it, and a third replica probed too)."""
    slow = CampaignCircuits(campaign_stores, cooldown_ms=300, max_cooldown_ms=1000, probe_lease_ms=100)
    b, c = circuits(campaign_stores), circuits(campaign_stores)
    slow.record(BROKEN, "send", TRIP)
    time.sleep(0.35)
    admission = slow.admit(BROKEN)
    assert admission == "probe"
    time.sleep(0.15)  # the slow probe's lease lapses
    assert b.admit(BROKEN) == "probe"
    slow.record(BROKEN, admission, None)
    assert c.admit(BROKEN) == TRIP  # b still probes
