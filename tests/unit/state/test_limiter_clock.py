"""The limiter when Redis's clock steps back (lua/acquire.lua's 'clock' fence) or forward (its
'step'), on the memory limiter with a clock of its own (and a monotonic clock per replica); the
Redis script passes the same contract tests (tests/contract/test_limiter_contract.py). And the log
lines the events give."""

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
    sha = "0" * 40

    def __init__(self, reply: list[Any]) -> None:
        self.reply = reply

    def __call__(self, keys: list[str], args: list[Any]) -> list[Any]:
        return self.reply


class _Client:
    """A Redis whose acquire.lua (the first script a RedisLimiter registers) answers `reply`; the
    arguments of each EVALSHA are kept in `sent`."""

    def __init__(self, reply: list[Any] | None = None) -> None:
        self.reply = reply or [3, 1500, b"1", 1_800_000_001_500, 0, b"clock", 1_800_000_000_000, 0]
        self.scripts: list[_Script] = []
        self.sent: list[list[Any]] = []

    def register_script(self, source: str) -> _Script:
        self.scripts.append(_Script(self.reply))
        return self.scripts[-1]

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> list[Any]:
        self.sent.append(list(keys_and_args[numkeys:]))
        return self.scripts[0](list(keys_and_args[:numkeys]), list(keys_and_args[numkeys:]))


def test_the_clock_event_says_what_happened_and_what_to_check(caplog: pytest.LogCaptureFixture) -> None:
    rl = RedisLimiter(_Client(), Keys("t"), "tok", parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500)
    with caplog.at_level(logging.WARNING, logger="consumer.state.limiter"):
        grant = rl.acquire()
    assert grant.held and grant.wait_s == 1.5
    (record,) = caplog.records
    assert record.reason == "clock" and record.wait_ms == 1500  # type: ignore[attr-defined]
    assert "stepped back" in record.getMessage() and "NTP" in record.getMessage()
    assert "1.5s" in record.getMessage()


# --- Forward: Redis's clock jumps ahead of the replicas' monotonic clocks ('step' in acquire.lua) --


class Monotonic:
    """A replica's monotonic clock (s), moved by the test with the true time, not with Redis's steps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stepping(grace_ms: int = 300) -> tuple[Clock, Monotonic, MemoryLimiter]:
    clock, mono = Clock(), Monotonic()
    rl = MemoryLimiter(parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500, grace_ms=grace_ms, clock=clock,
                       monotonic=mono)
    assert rl.acquire().held
    _advance(clock, mono, grace_ms)
    assert rl.acquire().granted
    return clock, mono, rl


def _advance(clock: Clock, mono: Monotonic, ms: int) -> None:
    clock.now += ms
    mono.now += ms / 1000


def test_a_clock_stepped_forward_keeps_every_window_and_every_pause() -> None:
    clock, mono, rl = _stepping(grace_ms=10_000)  # no heartbeat needed while the pause lasts
    first = rl.acquire()  # the window is full: two slots
    rl.pause(5)
    clock.now += 30_000  # a failover to a node 30 s ahead
    refused = rl.acquire()  # the pause as Pisano asked, measured on the true time
    assert not refused.granted and not refused.held and refused.wait_s == 5.0
    assert rl.stepped == 30_000 and rl.state.data.skew == 30_000
    _advance(clock, mono, 5000)
    third = rl.acquire()
    assert third.granted and third.slot_ms >= first.slot_ms + 1000  # then the window, not before


def test_a_pause_asked_for_before_anyone_measured_a_forward_step_lasts_what_pisano_asked() -> None:
    # Found by review (h-rsend): the step is measured by acquire and the heartbeat, not by the pause.
    # A 429's pause that was the first call to reach a clock stepped forward (a failover to a node an
    # hour ahead) ended an hour late once the next call took the step out: the fleet was held for the
    # step, and every slot reserved ahead was given up as inside the pause (consumer/delivery/slots.py).
    clock, mono, rl = _stepping(grace_ms=10_000)
    rl.acquire()  # the window is full: two slots
    clock.now += 3_600_000
    rl.pause(5)  # Retry-After: 5, the first call after the step
    refused = rl.acquire()
    assert rl.state.data.skew == 3_600_000  # measured once, by the pause
    assert not refused.granted and not refused.held and refused.wait_s == 5.0
    _advance(clock, mono, 5000)
    assert rl.acquire().granted


def test_a_step_many_replicas_measure_is_taken_out_once() -> None:
    clock, _mono, rl = _stepping()
    other = rl.replica()
    other.heartbeat()
    rl.acquire()  # the window is full
    clock.now += 30_000
    other.heartbeat()  # an idle replica's heartbeat measures the step first
    assert rl.state.data.skew == 30_000
    refused = rl.acquire()  # the busy one measures the same step: already out of the clock
    assert rl.state.data.skew == 30_000 and rl.stepped == 0
    assert not refused.granted and refused.wait_s == 1.0


def test_two_steps_within_one_interval_are_both_taken_out() -> None:
    clock, _mono, rl = _stepping()
    other = rl.replica()
    other.heartbeat()
    rl.acquire()
    clock.now += 10_000
    rl.heartbeat()  # the first step, measured by the busy replica
    clock.now += 20_000
    other.heartbeat()  # the idle one's interval holds both: only the second is left to take out
    assert rl.state.data.skew == 30_000
    assert not rl.acquire().granted


def test_a_gain_within_the_tolerance_is_no_step_and_one_beyond_is_taken_out_whole() -> None:
    clock, _mono, rl = _stepping()
    clock.now += 100  # a round trip's worth: not measured as a step
    rl.heartbeat()
    assert rl.state.data.skew == 0
    clock.now += 101  # a latency spike, or a small step: taken out, the fleet loses that long once
    rl.heartbeat()
    assert rl.state.data.skew == 101  # each interval's own gain: the 100 ms before stay (the margin's)


def test_a_clock_stepped_back_then_forward_again_does_not_hold_past_the_hold() -> None:
    clock, mono, rl = _stepping()
    clock.now -= 3_600_000
    held = rl.acquire()  # the 'clock' fence, as before
    assert held.held and held.wait_s == 1.5
    clock.now += 3_600_000  # NTP puts it right again: a forward step, taken out
    still = rl.acquire()
    assert still.held and still.wait_s == 1.5
    _advance(clock, mono, 1500)
    assert rl.acquire().granted


def test_the_step_event_says_what_happened_and_what_to_check(caplog: pytest.LogCaptureFixture) -> None:
    client = _Client([1, 0, b"1", 1_800_000_000_000, 3, b"", 1_800_000_000_000, 30_000])
    rl = RedisLimiter(client, Keys("t"), "tok", parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500)
    with caplog.at_level(logging.WARNING, logger="consumer.state.limiter"):
        assert rl.acquire().granted
    (record,) = caplog.records
    assert record.reason == "clock_step"  # type: ignore[attr-defined]
    message = record.getMessage()
    assert "ran 30.000s ahead" in message and "NTP" in message and "held up" in message


def test_each_call_sends_its_previous_replys_clock_and_the_time_since() -> None:
    client = _Client([2, 0, b"1", 0, 3, b"", 1_800_000_000_000, 0])
    rl = RedisLimiter(client, Keys("t"), "tok", parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500)
    rl.heartbeat()
    rl.heartbeat()
    sent = client.sent
    assert sent[0][9:13] == [3_600_000, "", "", 100]  # the legacy horizon; no evidence on the first call
    assert sent[1][10] == 1_800_000_000_000 and 0 <= sent[1][11] < 1000


def test_the_legacy_horizon_is_the_bound_of_throttle_horizon_ms() -> None:
    from consumer.config.settings import Settings
    from consumer.state.limiter import LEGACY_HORIZON_MS

    bounds = [getattr(m, "le", None) for m in Settings.model_fields["throttle_horizon_ms"].metadata]
    assert LEGACY_HORIZON_MS in bounds


class _PauseClient(_Client):
    """acquire.lua's heartbeat reply as `_Client`'s; pause.lua (four arguments) answers PAUSE_END (and now),
    running `during_pause` first (what happens while the call is out)."""

    PAUSE_END = 1_800_000_005_000

    def __init__(self) -> None:
        super().__init__([2, 0, b"1", 0, 3, b"", 1_800_000_000_000, 0, 0])
        self.during_pause: Any = None

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        if len(keys_and_args) - numkeys != 4:
            return super().evalsha(sha, numkeys, *keys_and_args)
        self.sent.append(list(keys_and_args[numkeys:]))
        if self.during_pause is not None:
            self.during_pause()
        return [self.PAUSE_END, 1_800_000_000_000]


def test_a_pause_sends_the_step_evidence_of_the_previous_reply() -> None:
    # lua/pause.lua takes a forward step out before it reads the clock, as acquire.lua does.
    client = _PauseClient()
    rl = RedisLimiter(client, Keys("t"), "tok", parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500)
    rl.pause(5)  # no reply yet: no evidence
    assert client.sent[-1] == [5000, "", "", 100]
    rl.heartbeat()
    rl.pause(5)
    ms, prev, elapsed, tolerance = client.sent[-1]
    assert ms == 5000 and prev == 1_800_000_000_000 and 0 <= elapsed < 1000 and tolerance == 100
    assert rl.paused_until_ms() == _PauseClient.PAUSE_END


def test_a_pause_of_the_keys_just_left_is_not_taken_for_the_new_keys_pause_but_sent_to_them() -> None:
    # The destination's record moved the limiter to other keys while the pause was out: its end is
    # on the old keys' clock, not noted for the new keys. The fleet counts on the new keys now, so
    # the pause is sent there too (h-pause: it used to pause only the keys just left), and its end
    # there is noted.
    client = _PauseClient()
    rl = RedisLimiter(client, Keys("t"), "tok", parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500)
    rl.heartbeat()
    noted: list[int] = []

    def moved() -> None:  # what `_follow_account` does, once
        with rl._lock:
            rl._keys, rl._reply, rl._paused_until = ["x:log", "x:meta"], None, (0, 0.0)
        client.during_pause = lambda: noted.append(rl.paused_until_ms())

    client.during_pause = moved
    rl.pause(5)
    assert noted == [0]  # the old keys' end was not noted for the new keys
    assert [args[0] for args in client.sent if len(args) == 4] == [5000, 5000]
    assert rl.paused_until_ms() == _PauseClient.PAUSE_END


def test_a_pause_goes_after_the_keys_a_few_times_at_most() -> None:
    client = _PauseClient()
    rl = RedisLimiter(client, Keys("t"), "tok", parse_rate_limits(WINDOWS), margin_ms=0, horizon_ms=500)
    moves = iter(range(100))

    def moved() -> None:  # keys moving at every pause: never so in a fleet, yet no endless loop
        with rl._lock:
            rl._keys, rl._paused_until = [f"x{next(moves)}:log", "m"], (0, 0.0)

    client.during_pause = moved
    rl.pause(5)
    assert len([args for args in client.sent if len(args) == 4]) == 3
