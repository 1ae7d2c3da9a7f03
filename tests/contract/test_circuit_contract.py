"""The circuit's contract, through CircuitBreaker over each store: open, cool-down, one probe,
close or reopen with a doubled cool-down."""

from __future__ import annotations

import time

from consumer.state.circuit import CircuitBreaker, Trip

TRIP = Trip(13001, 401, "Wrong token")


def breaker(store, name: str = "default") -> CircuitBreaker:  # type: ignore[no-untyped-def]
    return CircuitBreaker(store, cooldown_ms=300, max_cooldown_ms=1000, probe_lease_ms=5_000, name=name)


def fresh_state(circuit: CircuitBreaker):  # type: ignore[no-untyped-def]
    circuit._read_at = -10.0  # skip the once-a-second read cache
    return circuit.state()


def test_closed_until_opened_then_open_for_everyone(circuit_store) -> None:  # type: ignore[no-untyped-def]
    a, b = breaker(circuit_store), breaker(circuit_store)
    assert fresh_state(a) == ("closed", None)
    a.open(TRIP)
    state, trip = fresh_state(b)
    assert state == "open" and trip == TRIP


def test_half_open_after_the_cooldown_and_one_replica_probes(circuit_store) -> None:  # type: ignore[no-untyped-def]
    a, b = breaker(circuit_store), breaker(circuit_store)
    a.open(TRIP)
    time.sleep(0.35)
    assert fresh_state(b)[0] == "half_open"
    assert not circuit_store.probe_held()
    assert a.try_probe() and not b.try_probe()
    assert circuit_store.probe_held()  # seen without taking it


def test_probe_accepted_closes_refused_reopens_longer(circuit_store) -> None:  # type: ignore[no-untyped-def]
    a = breaker(circuit_store)
    a.open(TRIP)
    time.sleep(0.35)
    fresh_state(a)
    a.probe_if_due(lambda: TRIP)  # refused again: reopened with twice the cool-down
    assert circuit_store.previous_cooldown_ms() == 600
    time.sleep(0.35)
    assert fresh_state(a)[0] == "open"  # 600 ms now, not 300
    time.sleep(0.3)
    fresh_state(a)
    a.probe_if_due(lambda: True)
    assert fresh_state(a) == ("closed", None)


def test_no_verdict_frees_the_probe_for_the_next_round(circuit_store) -> None:  # type: ignore[no-untyped-def]
    a, b = breaker(circuit_store), breaker(circuit_store)
    a.open(TRIP)
    time.sleep(0.35)
    fresh_state(a)
    a.probe_if_due(lambda: None)
    assert not circuit_store.probe_held()
    assert fresh_state(b)[0] == "half_open" and b.try_probe()


def test_a_probe_whose_lease_lapsed_does_not_free_the_next_probe(circuit_store) -> None:  # type: ignore[no-untyped-def]
    """A slow probe (longer than its lease) had no verdict: giving its lease back must not free the
    lease another replica took meanwhile, or a third replica would probe at the same time (found
    by review: release deleted the probe key whoever held it)."""
    slow = CircuitBreaker(circuit_store, cooldown_ms=300, max_cooldown_ms=1000, probe_lease_ms=100)
    other = breaker(circuit_store)
    slow.open(TRIP)
    time.sleep(0.35)
    fresh_state(slow)

    def slow_probe() -> None:
        time.sleep(0.15)  # the lease lapses meanwhile
        assert other.try_probe()  # another replica is now the fleet's probe
        return None  # no verdict: the slow one gives its lease back

    slow.probe_if_due(slow_probe)
    assert circuit_store.probe_held()
    assert not breaker(circuit_store).try_probe()
