"""A token refresh cut short (SIGTERM, or a claim the heartbeat found lost) is no verdict on the
token: the request ends abandoned (stopping) or with its claim lost, never dead-lettered with the
refused token nor opening the destination's circuit for the fleet (before the refresh had a
thread of its own, it finished and the request went on to be abandoned at its next slot)."""

from __future__ import annotations

import threading
import time

import pytest

from consumer.delivery import attempts
from consumer.errors import PisanoApiError
from consumer.state.dedup import ClaimStatus
from tests.support.fakes import FakePisano, Rig, event, intercept_claims, rig
from tests.unit.delivery.test_token_refresh_wait import HangingTokens

REFUSED = PisanoApiError(401, 13001, "Wrong authentication token")


def _refused_while_the_source_hangs(monkeypatch: pytest.MonkeyPatch) -> tuple[Rig, HangingTokens]:
    """A sender whose token Pisano refuses, and whose token source then hangs for 5 s."""
    monkeypatch.setattr(attempts, "TOKEN_REFRESH_WAIT_S", 5.0, raising=False)
    r = rig(FakePisano([REFUSED]))
    tokens = HangingTokens(hang_s=5.0)
    r.sender.attempts.tokens = tokens  # type: ignore[assignment]
    return r, tokens

def test_a_stop_during_the_token_refresh_abandons_the_request_without_a_dead_letter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    r, tokens = _refused_while_the_source_hangs(monkeypatch)
    threading.Timer(0.3, r.sender._stop.set).start()  # SIGTERM while the provider is being read
    try:
        r.process([event(1)])
    finally:
        tokens.close()
    assert "dead_letter" not in r.kinds().get("e1", set()), "a SIGTERM dead-lettered an unanswered event"
    assert r.sender.destination.circuit.state()[0] == "closed", "a SIGTERM opened the fleet's circuit"
    assert r.dedup.state("e1") is None  # released: read again after the restart


def test_a_claim_lost_during_the_token_refresh_is_requeued_not_dead_lettered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    r, tokens = _refused_while_the_source_hangs(monkeypatch)
    r.sender.beat_period_s = 0.05

    def claim(n, requests, real):  # type: ignore[no-untyped-def]
        statuses = real()
        if n >= 2:  # the beats during the refresh find the claim taken elsewhere
            return [ClaimStatus.HELD for _ in statuses]
        return statuses

    intercept_claims(r.dedup, claim)
    started = time.monotonic()
    try:
        r.process([event(1)])
    finally:
        tokens.close()
    assert r.kinds() == {"e1": {"requeue"}}, r.kinds()
    assert r.sender.destination.circuit.state()[0] == "closed"
    assert time.monotonic() - started < 2.0  # ended when the loss was found, not at the bound
