"""The limiter when Redis's clock steps back (lua/acquire.lua's 'clock' fence), on the memory
limiter with a clock of its own; the Redis script passes the same contract tests
(tests/contract/test_limiter_contract.py). And the log line the event gives."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.state.limiter import RedisLimiter
from consumer.state.memory import MemoryLimiter
from consumer.state.redis import Keys

WINDOWS = "2/1s"  # hold = horizon 500 + longest period 1000 = 1500 ms


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


def _limiter(clock: Clock, grace_ms: int = 300) -> MemoryLimiter:
    rl = MemoryLimiter(parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500, grace_ms=grace_ms, clock=clock)
    assert rl.acquire().held  # a new state: held for the grace
    clock.now += grace_ms
    assert rl.acquire().granted
    return rl


def test_a_clock_stepped_back_an_hour_holds_for_hold_then_grants() -> None:
    clock = Clock()
    rl = _limiter(clock)
    rl.acquire()  # the window is full
    clock.now -= 3_600_000  # a failover to a node an hour behind
    held = rl.acquire()
    assert held.held and held.wait_s == 1.5
    assert rl.acquire().held  # raised once: the same fence, not a new one
    clock.now += 1500
    first, second, third = rl.acquire(), rl.acquire(), rl.acquire()
    assert first.granted and first.wait_s == 0 and second.granted and second.wait_s == 0
    assert not third.granted and not third.held and third.slot_ms == first.slot_ms + 1000  # the windows again
    clock.now += 250
    rl.heartbeat()  # the fleet's heartbeat, each second (the grace here is 300 ms)
    clock.now += 250
    fourth = rl.acquire()
    assert fourth.granted and fourth.slot_ms == first.slot_ms + 1000
    assert rl.state.data.last == fourth.slot_ms  # no 'lost' after the dropped log
    rl.heartbeat()
    assert rl.state.data.fence_until == held.slot_ms  # and no other fence


def test_a_fence_left_far_ahead_by_the_step_lasts_hold_not_the_step() -> None:
    clock = Clock()
    rl = _limiter(clock)
    rl.state.flush()
    assert rl.acquire().held  # a proven loss: held for 1.5 s
    clock.now -= 600_000  # then the clock steps back ten minutes, with an empty log
    held = rl.acquire()
    assert held.held and held.wait_s == 1.5  # not 601.5 s
    clock.now += 1500
    assert rl.acquire().granted


def test_a_pause_left_far_ahead_by_the_step_lasts_what_pisano_asked_not_the_step_nor_the_hold() -> None:
    clock = Clock()
    rl = _limiter(clock, grace_ms=100_000)  # no heartbeat needed while the pause lasts
    rl.pause(60)  # Retry-After: 60, from the last beat
    clock.now -= 3_600_000
    assert rl.acquire().held
    clock.now += 1500
    refused = rl.acquire()  # the fence is over, the pause is not: Pisano asked for 60 s
    assert not refused.granted and not refused.held and refused.wait_s == 58.5
    clock.now += 58_500
    assert rl.acquire().granted  # not an hour later


def test_a_pause_is_kept_whole_when_the_clock_did_not_step() -> None:
    # the 'clock' fence raised by a log written by hand: no beat lies ahead of the clock, so
    # nothing says the pause is too long
    clock = Clock()
    rl = _limiter(clock)
    rl.pause(60)
    rl.state.data.slots.append(clock.now + 3_600_000)
    assert rl.acquire().held
    clock.now += 1500
    assert rl.acquire().wait_s == 58.5


def _as_older_version(rl: MemoryLimiter) -> None:
    """What the previous version leaves after its reservations: no horizon, nothing marked as ours."""
    rl.state.data.horizon = rl.state.data.pushed = None


def test_a_step_with_an_older_versions_slots_in_the_log_holds_for_the_longest_horizon_of_any_version() -> None:
    # an older replica's horizon is unknown, up to THROTTLE_HORIZON_MS's bound (an hour): its slots
    # may lie that far ahead of the true now, so only after that is none of them in any window
    clock = Clock()
    rl = _limiter(clock)
    _as_older_version(rl)
    clock.now -= 2 * 3_600_000
    held = rl.acquire()
    assert held.held and held.wait_s == 3_601.0
    clock.now += 3_601_000
    assert rl.acquire().granted


def test_a_fence_an_older_version_raised_for_its_longer_horizon_is_not_cut_short() -> None:
    # an older replica with a 600 s horizon proved a loss: its lost slots may lie 600 s ahead
    clock = Clock()
    rl = _limiter(clock)
    rl.state.data.fence_until = clock.now + 601_000  # its hold; `fenced` is not this version's
    held = rl.acquire()
    assert held.held and held.wait_s == 601.0
    assert rl.state.data.slots  # no 'clock' fence: the log is kept


def test_an_older_versions_slot_within_its_horizon_is_waited_out_not_dropped() -> None:
    clock = Clock()
    rl = _limiter(clock)
    rl.state.data.slots.append(clock.now + 600_000)  # granted by an older `check`-like caller ...
    rl.state.data.seq += 1  # ... which counted it, as every version does
    clock.now += 1
    refused = rl.acquire()
    assert not refused.held and not refused.granted and refused.wait_s == 599.999
    assert rl.state.data.slots[-1] == clock.now + 599_999  # kept: it stands for a request that will leave


def test_a_slot_beyond_the_horizon_but_within_hold_is_waited_out_without_a_fence() -> None:
    # a few hundred ms between two nodes' clocks is no reason to hold the fleet
    clock = Clock()
    rl = MemoryLimiter(parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500, grace_ms=0, clock=clock)
    assert rl.acquire(prepare_ms=500).granted  # a slot the horizon ahead
    clock.now -= 300  # the newest slot now lies 800 ms ahead: beyond the horizon, within hold
    refused = rl.acquire()
    assert not refused.held and not refused.granted and refused.wait_s == 0.8
    assert rl.state.data.fence_until <= clock.now
    clock.now += 300
    assert rl.acquire().granted


class _Script:
    def __init__(self, reply: list[Any]) -> None:
        self.reply = reply

    def __call__(self, keys: list[str], args: list[Any]) -> list[Any]:
        return self.reply


class _Client:
    def register_script(self, source: str) -> _Script:
        return _Script([3, 1500, b"1", 1_800_000_001_500, 0, b"clock"])


def test_the_clock_event_says_what_happened_and_what_to_check(caplog: pytest.LogCaptureFixture) -> None:
    rl = RedisLimiter(_Client(), Keys("t"), "tok", parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500)
    with caplog.at_level(logging.WARNING, logger="consumer.state.limiter"):
        grant = rl.acquire()
    assert grant.held and grant.wait_s == 1.5
    (record,) = caplog.records
    assert record.reason == "clock" and record.wait_ms == 1500  # type: ignore[attr-defined]
    assert "stepped back" in record.getMessage() and "NTP" in record.getMessage()
    assert "1.5s" in record.getMessage()
