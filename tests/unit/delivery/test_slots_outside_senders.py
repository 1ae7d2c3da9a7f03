"""Requests that take a throttle slot outside the sender threads: the half-open circuit's token
probe (`consumer/state/circuit.py`, in production), `check`'s token probe and `check --campaigns`'
empty requests. Each counts at Pisano like any other request, so each must leave within the
lateness allowed of its slot, counted as the senders count it (`slots.Slot`): its reply may
have come back late. Found by review: each slept the grant's wait from the reply's arrival, with no
lateness check at all, so a reply held up (the replica starved of CPU while Redis answered) sent it
that much after its slot, unseen, as the senders did before 0.3.0."""

from __future__ import annotations

import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from consumer.config.settings import Settings
from consumer.config.windows import parse_rate_limits
from consumer.errors import PisanoApiError
from consumer.operations import check, preflight
from consumer.state.circuit import token_probe
from consumer.state.limiter import Grant
from consumer.state.memory import MemoryLimiter

MARGIN_MS = 200  # half of it, 100 ms, is the lateness allowed
HELD_S = 0.3
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
VALIDATION = PisanoApiError(http_status=400, code=13028, message="Invalid parameters")


class HeldReplies:
    """A limiter whose first `held` answers come back `HELD_S` after the state was read; each
    grant's true slot recorded on the monotonic clock, from the moment the state was read."""

    def __init__(self, held: int) -> None:
        self.inner = MemoryLimiter(parse_rate_limits("100/1s"), margin_ms=MARGIN_MS, horizon_ms=5000, grace_ms=0)
        self.windows, self.margin_ms = self.inner.windows, self.inner.margin_ms
        self.held = held
        self.true_slots: list[float] = []

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        read_at = time.monotonic()
        grant = self.inner.acquire(pace_ms, prepare_ms)
        self.true_slots.append(read_at + grant.wait_s)
        if self.held > 0:
            self.held -= 1
            time.sleep(HELD_S)
            received = time.monotonic()
            return replace(grant, received_at=received, round_trip_s=received - read_at)
        return grant


class Posts:
    def __init__(self) -> None:
        self.at: list[float] = []

    def probe_token(self, campaign_id: str = "", leave_by: float | None = None) -> Any:
        self.at.append(time.monotonic())
        return VALIDATION

    def warm(self, within_s: float) -> None:
        pass

    def send(self, campaign: str, body: bytes, leave_by: float | None = None) -> Any:
        self.at.append(time.monotonic())
        raise VALIDATION

    def close(self) -> None:
        pass


def assert_on_time(limiter: HeldReplies, posts: Posts) -> None:
    assert len(posts.at) == 1, posts.at
    late = posts.at[0] - limiter.true_slots[-1]
    assert -0.005 <= late <= MARGIN_MS / 2000 + 0.03, f"the request left {late * 1000:.0f} ms after its slot"


def test_the_circuits_token_probe_never_leaves_late_for_its_slot() -> None:
    limiter, posts = HeldReplies(held=1), Posts()
    probe = token_probe(posts, limiter)  # type: ignore[arg-type]
    verdict = None
    for _ in range(3):  # the health loop's rounds: a round without a verdict is tried again
        verdict = probe()
        if verdict is not None:
            break
    assert verdict is True
    assert_on_time(limiter, posts)


def test_checks_campaign_requests_never_leave_late_for_their_slot() -> None:
    limiter, posts = HeldReplies(held=1), Posts()
    destination = SimpleNamespace(name="default", limiter=limiter, client=posts)
    result = preflight._check_one(destination, CAMPAIGN, "https://api.pisano.co")  # type: ignore[arg-type]
    assert result.status == "ok", result
    assert_on_time(limiter, posts)


def test_checks_token_probe_never_leaves_late_for_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter, posts = HeldReplies(held=1), Posts()
    destination = SimpleNamespace(limiter=limiter, client=posts)
    monkeypatch.setattr(check, "build_state", lambda settings: None)
    monkeypatch.setattr(check, "destination_configs",
                        lambda settings: {"default": SimpleNamespace(name="default", url="https://api.pisano.co")})
    monkeypatch.setattr(check, "build_destination", lambda *args, **kwargs: destination)
    settings = Settings(kafka_topics=["t"], pisano_url="https://api.pisano.co")
    result = check._guard("pisano", lambda: check._pisano(settings, CAMPAIGN))
    assert result.status == "ok", result
    assert_on_time(limiter, posts)


class LateReplies:
    """A limiter whose every reply comes back later than the lateness allowed (a Redis slow for
    this replica): each grant reserves a slot of the fleet's budget that cannot be used on time."""

    def __init__(self) -> None:
        self.inner = MemoryLimiter(parse_rate_limits("100/1s"), margin_ms=MARGIN_MS, horizon_ms=5000, grace_ms=0)
        self.windows, self.margin_ms = self.inner.windows, self.inner.margin_ms
        self.granted = 0

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        self.granted += 1
        return Grant(True, wait_s=0.0, slot_ms=0, round_trip_s=MARGIN_MS / 1000)


def test_a_request_outside_the_senders_does_not_take_slot_after_slot_while_replies_come_back_late() -> None:
    """Found by review: `send_in_slot` took a new slot at once for one given up, with no wait, so
    while Redis's replies came back late the circuit's probe (5 s a round, where it used to take
    one slot) and `check` (60 s) reserved slots as fast as Redis answered, each one a slot of the
    fleet's budget taken from the senders for nothing. Like a sender (`SlotReserver._late_reply`),
    it now waits before the next, longer each time."""
    from consumer.delivery.slots import NoSlot, send_in_slot

    limiter = LateReplies()
    started = time.monotonic()
    result = send_in_slot(limiter, 1.0, lambda leave_by: "sent")  # type: ignore[arg-type]
    assert isinstance(result, NoSlot)
    assert limiter.granted <= 4, f"{limiter.granted} slots taken in 1 s"
    assert time.monotonic() - started < 1.5
