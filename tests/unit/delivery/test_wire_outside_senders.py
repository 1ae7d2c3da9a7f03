"""Requests that take their throttle slot outside the sender threads are checked at the wire too.

The half-open circuit's token probe (`consumer/state/circuit.py`, run by the health probe),
`check`'s token probe and `check --campaigns`' empty requests each count at Pisano like any
other request. They slept to their slot and then sent with no `leave_by`, so whatever ran between
the wake-up and the write (here a connection set up slowly: a name lookup, TLS to a distant
Pisano) sent them that much after their slot, unseen, and could put them over a window. Now each
sends with its slot's `leave_by` (`slots.send_in_slot`): late at the wire it sends nothing and
takes a new slot, and the connection it set up serves that one. A missed slot is no answer from
Pisano: not a failed check, no verdict on the token, never a circuit opened; the health probe
counts it in `throttle_slots_wasted_total` as the senders do.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import SimpleNamespace
from typing import Any

import pytest

from consumer.config.settings import Settings
from consumer.config.windows import parse_rate_limits
from consumer.delivery import request_deadline
from consumer.delivery.destination import Destination
from consumer.delivery.pisano import PisanoClient
from consumer.delivery.slots import CONNECT_LEAD_S, PREPARE_LEAD_S, sleep_to_slot
from consumer.errors import StateStoreError
from consumer.operations import check, preflight
from consumer.operations.health import Health, HealthProbe
from consumer.operations.metrics import Metrics
from consumer.state import circuit as circuits
from consumer.state.circuit import CircuitBreaker
from consumer.state.limiter import Grant
from consumer.state.memory import MemoryCircuitStore, MemoryLimiter
from tests.support.fakes import FakePisano
from tests.support.local_server import serving

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
MARGIN_MS = 200
ALLOWED_S = MARGIN_MS / 2000  # the lateness allowed: half the margin
SET_UP_S = 0.3  # the first connection takes this long to set up, well past the lateness allowed
# Pisano's answer to an empty request once the token passed and the campaign was found.
VALIDATION = (b'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 47\r\n\r\n'
              b'{"code":13028,"message":"Invalid parameters!!"}')


class Slots:
    """A limiter recording each granted slot's moment (monotonic)."""

    def __init__(self) -> None:
        self.inner = MemoryLimiter(parse_rate_limits("100/1s"), margin_ms=MARGIN_MS, horizon_ms=5000, grace_ms=0)
        self.windows, self.margin_ms = self.inner.windows, self.inner.margin_ms
        self.slots: list[float] = []

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        grant = self.inner.acquire(pace_ms, prepare_ms)
        if grant.granted:
            self.slots.append(grant.received_at + grant.wait_s)
        return grant

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextmanager
def stamping_server() -> Iterator[tuple[int, list[float]]]:
    """A local Pisano answering each request as it answers an empty one for a known campaign;
    yields its port and when each request's first bytes arrived (monotonic)."""
    arrived: list[float] = []

    def serve(connection: socket.socket) -> None:
        with connection, suppress(OSError):
            pending = b""
            while data := connection.recv(65536):
                if not pending:
                    arrived.append(time.monotonic())
                pending += data
                if pending.endswith(b"}"):  # the whole request (its body is JSON)
                    pending = b""
                    connection.sendall(VALIDATION)

    with serving(serve) as port:
        yield port, arrived


@pytest.fixture
def slow_first_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first connection's set-up (its name lookup) takes SET_UP_S; later ones are quick."""
    real_resolve = request_deadline.resolve
    stalls = [SET_UP_S]

    def resolve(host: str, port: int, timeout: float | None) -> list[str]:
        if stalls:
            time.sleep(stalls.pop())
        return real_resolve(host, port, timeout)

    monkeypatch.setattr(request_deadline, "resolve", resolve)


def client_for(port: int) -> PisanoClient:
    return PisanoClient(f"http://127.0.0.1:{port}", "tok-123456789", timeout_s=2, connect_timeout_s=2,
                        max_connections=1)


def assert_sent_once_in_its_slot(limiter: Slots, arrived: list[float]) -> None:
    assert len(arrived) == 1, f"{len(arrived)} requests reached Pisano"
    # The slot it was sent in: the last one taken no later than its arrival.
    slot = max(at for at in limiter.slots if at <= arrived[0] + 0.005)
    late = arrived[0] - slot
    assert late <= ALLOWED_S + 0.03, f"the request reached Pisano {late * 1000:.0f} ms after its slot"
    assert len(limiter.slots) >= 2, "the slot it could not use on time was not given up for a new one"


@pytest.mark.usefixtures("slow_first_connection")
def test_the_circuits_probe_late_at_the_wire_takes_a_new_slot_and_closes_the_circuit() -> None:
    limiter = Slots()
    store = MemoryCircuitStore()
    store.write_open({"code": "13001", "status": "401", "message": "Wrong authentication token"}, cooldown_ms=0)
    circuit = CircuitBreaker(store, cooldown_ms=60_000, max_cooldown_ms=120_000, probe_lease_ms=10_000)
    metrics = Metrics()
    with stamping_server() as (port, arrived):
        client = client_for(port)
        destination = Destination("default", client, limiter, circuit)  # type: ignore[arg-type]
        health = HealthProbe(Health(), metrics, redis_client=None, producer=None, dlq_topic="dlq",
                             destinations=[destination])
        try:
            health._check_circuit()  # the health probe's round, as in production
        finally:
            client.close()
    assert_sent_once_in_its_slot(limiter, arrived)
    assert circuit.known_state() == "closed", "a missed slot was taken for an answer"
    assert metrics.throttle_wasted.labels("default")._value.get() == 1


@pytest.mark.usefixtures("slow_first_connection")
def test_checks_token_probe_late_at_the_wire_takes_a_new_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = Slots()
    with stamping_server() as (port, arrived):
        client = client_for(port)
        destination = SimpleNamespace(limiter=limiter, client=client)
        monkeypatch.setattr(check, "build_state", lambda settings: None)
        monkeypatch.setattr(check, "destination_configs", lambda settings: {
            "default": SimpleNamespace(name="default", url=f"http://127.0.0.1:{port}")})
        monkeypatch.setattr(check, "build_destination", lambda *args, **kwargs: destination)
        settings = Settings(kafka_topics=["t"], pisano_url="https://api.pisano.co")  # the configs above serve
        result = check._guard("pisano", lambda: check._pisano(settings, CAMPAIGN))
    assert result.status == "ok", result
    assert "token accepted" in result.detail
    assert_sent_once_in_its_slot(limiter, arrived)


@pytest.mark.usefixtures("slow_first_connection")
def test_checks_campaign_request_late_at_the_wire_takes_a_new_slot() -> None:
    limiter = Slots()
    with stamping_server() as (port, arrived):
        client = client_for(port)
        destination = SimpleNamespace(name="default", limiter=limiter, client=client)
        try:
            result = preflight._check_one(destination, CAMPAIGN, f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
        finally:
            client.close()
    assert result.status == "ok", result
    assert_sent_once_in_its_slot(limiter, arrived)


def test_a_probe_that_never_leaves_on_time_gives_no_verdict_and_no_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slot missed at the wire within the probe's time: nothing reached Pisano, so no verdict
    (the circuit neither closes nor reopens, and its lease is given back for the next round), each
    slot counted as wasted."""
    monkeypatch.setattr(circuits, "PROBE_SLOT_WITHIN_S", 0.3)
    pisano = FakePisano(on_wire=lambda: time.sleep(ALLOWED_S + 0.05))
    store = MemoryCircuitStore()
    store.write_open({"code": "13001", "status": "401", "message": "Wrong authentication token"}, cooldown_ms=0)
    circuit = CircuitBreaker(store, cooldown_ms=60_000, max_cooldown_ms=120_000, probe_lease_ms=10_000)
    wasted: list[int] = []
    destination = Destination("default", pisano, Slots(), circuit)  # type: ignore[arg-type]
    circuit.probe_if_due(destination.probe(lambda: wasted.append(1)))
    assert pisano.probes == 0 and pisano.missed >= 2 and len(wasted) == pisano.missed
    assert circuit.state()[0] == "half_open" and not store.probe_held()
    assert store.previous_cooldown_ms() == 0, "a missed slot reopened the circuit"


def test_a_far_slot_has_its_connection_set_up_before_it_as_a_senders_has() -> None:
    """Without it, a slot beyond the pooled connection's keep-alive (a busy fleet's next slot) is
    met by a connection set up at the slot, late at the wire, slot after slot."""
    limiter = Slots()
    calls: list[tuple[str, float]] = []
    grant = Grant(True, wait_s=3.0, slot_ms=0)
    ready = sleep_to_slot(grant, limiter, sleep=lambda s: calls.append(("sleep", s)),  # type: ignore[arg-type]
                          warm=lambda within: calls.append(("warm", within)))
    assert ready.state == "go" and ready.leave_by == pytest.approx(grant.received_at + 3.0 + ALLOWED_S)
    assert [what for what, _ in calls] == ["sleep", "warm", "sleep"]
    assert calls[0][1] == pytest.approx(3.0 - CONNECT_LEAD_S, abs=0.05)
    # Until the request's own lead before the slot (counted from now: the sleeps here take no time).
    assert calls[1][1] == pytest.approx(3.0 - PREPARE_LEAD_S, abs=0.05)


def test_the_probes_lease_outlasts_the_longest_probe() -> None:
    """Found by review: a probe takes slots for PROBE_SLOT_WITHIN_S (`send_in_slot`), its last slot
    up to the throttle horizon away, and its request then takes up to its connect and read timeouts
    (PisanoClient's deadline). The lease covered one slot's wait, the read timeout and 10 s: with
    the default 5 s connect timeout the 10 s were spent before a single Redis round trip, and a
    longer connect timeout let a probe outlive its lease by the difference, another replica
    probing meanwhile (two token probes at once)."""
    import redis

    from consumer.app import build_destination
    from consumer.config.destinations import destination_configs
    from consumer.state.circuit import PROBE_SLOT_WITHIN_S
    from consumer.state.redis import Keys

    settings = Settings(kafka_topics=["t"], pisano_url="https://api.pisano.co", pisano_api_token="tok-123456789abc",
                        pisano_rate_limits="10/1s")
    config = destination_configs(settings)["default"]
    nowhere = redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2)  # its account falls back to the token
    destination = build_destination(config, settings, SimpleNamespace(client=nowhere, keys=Keys("p")), connections=1)
    destination.client.close()
    longest_ms = (PROBE_SLOT_WITHIN_S * 1000 + settings.throttle_horizon_ms + config.margin_ms / 2
                  + config.connect_timeout_ms + config.timeout_ms)
    # With room for the Redis calls around it (the throttle's reply, the circuit's writes).
    assert destination.circuit.probe_lease_ms >= longest_ms + settings.redis_timeout_ms


def test_a_probe_that_raises_gives_its_lease_back() -> None:
    """A probe whose throttle call fails (Redis refusing the limiter's script) or that raises
    anything else gave no verdict, as one that found no slot; its lease used to stay until it
    expired (the probe's slot time, the throttle horizon and the connect timeout), and no replica
    could probe meanwhile."""
    store = MemoryCircuitStore()
    store.write_open({"code": "13001", "status": "401", "message": "Wrong authentication token"}, cooldown_ms=0)
    circuit = CircuitBreaker(store, cooldown_ms=60_000, max_cooldown_ms=120_000, probe_lease_ms=60_000)

    def failing() -> bool:
        raise StateStoreError("Redis refused the throttle script")

    with pytest.raises(StateStoreError):
        circuit.probe_if_due(failing)
    assert circuit.state()[0] == "half_open" and not store.probe_held()
