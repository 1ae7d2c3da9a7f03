"""The token source read again after Pisano refused a request's token (`Attempts`, a 401 with a
rotation under way): a provider that hangs must neither let the request's claims lapse (the wait is
the heartbeat's, like every other wait of a request holding claims) nor hold the request, and
its partition, for good (the wait is bounded: a hang counts as the token unchanged, the attempt
refused, with a log saying what to fix)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from consumer.delivery import attempts
from consumer.errors import PisanoApiError
from consumer.state.dedup import ClaimRequest, ClaimStatus
from consumer.state.memory import MemoryDedup
from tests.support.fakes import FakePisano, event, rig

LEASE_MS = 400  # beats every 0.1 s


class HangingTokens:
    """A token provider stuck in `refresh` (a secret store that never answers), for `hang_s`."""

    source = "PISANO_TOKEN_PROVIDER"

    def __init__(self, hang_s: float) -> None:
        self.hang_s = hang_s
        self.released = threading.Event()
        self.calls = 0

    def current(self) -> str:
        return "old-token"

    def refresh(self) -> bool:
        self.calls += 1
        self.released.wait(self.hang_s)
        return False

    def close(self) -> None:
        self.released.set()


def test_a_hanging_token_refresh_keeps_the_claims_alive_and_ends_bounded(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(attempts, "TOKEN_REFRESH_WAIT_S", 1.0, raising=False)
    r = rig(FakePisano([PisanoApiError(401, 13001, "Wrong authentication token")]),
            dedup=MemoryDedup(lease_ms=LEASE_MS, horizon_s=3600))
    tokens = HangingTokens(hang_s=3.0)
    r.sender.attempts.tokens = tokens  # type: ignore[assignment]
    seen: dict[str, ClaimStatus] = {}
    other = r.dedup.replica()

    def claim_elsewhere() -> None:  # another replica, while the refresh hangs, past the lease
        time.sleep(0.7)
        seen["e1"] = other.claim(other.new_tag(), [ClaimRequest("e1")])[0]

    threading.Thread(target=claim_elsewhere, daemon=True).start()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING):
            r.process([event(1)])
    finally:
        tokens.close()
    assert seen == {"e1": ClaimStatus.HELD}, "the claims lapsed while the token refresh hung"
    assert time.monotonic() - started < 2.5, "the request waited for the hanging provider past the bound"
    assert len(r.pisano.requests) == 1
    assert r.kinds() == {"e1": {"dead_letter"}}  # refused token, no new one: as without a rotation
    assert any("did not answer" in m and "PISANO_TOKEN_PROVIDER" in m for m in caplog.messages)


def test_a_second_refusal_while_a_refresh_still_hangs_starts_no_second_refresh(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempts, "TOKEN_REFRESH_WAIT_S", 0.3, raising=False)
    r = rig(FakePisano([PisanoApiError(401, 13001, "Wrong authentication token")] * 2))
    tokens = HangingTokens(hang_s=5.0)
    r.sender.attempts.tokens = tokens  # type: ignore[assignment]
    try:
        r.process([event(1)])
        r.process([event(2)])
    finally:
        tokens.close()
    assert tokens.calls == 1, "each refusal left another thread stuck in the provider"
