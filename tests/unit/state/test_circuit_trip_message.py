"""A circuit's trip message is Pisano's or a proxy's error text: it is stored in Redis (the
circuit hash, read by every replica and repeated on their dead-letters) and logged. Found in
review (2026-12-04): only phone numbers were redacted there, so a credential the body echoed (a
proxy quoting the URL it refused, a header) reached Redis and the log line in clear."""

from __future__ import annotations

import logging

import pytest

from consumer.state.circuit import CircuitBreaker, Trip
from consumer.state.memory import MemoryCircuitStore

MESSAGE = ("proxy refused https://gw-user:Sx-pw-1@gw.bank.test/v1 (Authorization: Bearer Sx-tok-2) "
           "for +90 532 123 45 67")


def test_the_stored_and_logged_trip_message_holds_no_secret_and_no_phone(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryCircuitStore()
    breaker = CircuitBreaker(store, cooldown_ms=1000, max_cooldown_ms=8000, probe_lease_ms=1000)
    with caplog.at_level(logging.ERROR, logger="consumer.state.circuit"):
        breaker.open(Trip(13001, 401, MESSAGE))
    fields, _ = store.read()
    logged = [record.getMessage() for record in caplog.records]  # as built, before any formatter
    for shown in [fields["message"], *logged]:
        assert "Sx-" not in shown and "123 45" not in shown, shown
        assert "gw.bank.test/v1" in shown  # the diagnostics stay
    assert len(logged) == 1
