"""The limiter's contract: exact earliest slots over every window, margin, horizon, pause."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.state.trip import together


def test_slots_are_exactly_the_earliest_allowed(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("3/1s,5/3s")
    g = [rl.acquire().slot_ms for _ in range(8)]
    assert g[2] - g[0] < 50  # three at once (a millisecond may pass between calls)
    # each later slot is exactly when the binding window's oldest counted request leaves it
    assert g[3] == g[0] + 1000  # 3/1s: the third newest was g0
    assert g[4] == g[1] + 1000
    assert g[5] == g[0] + 3000  # 5/3s: the fifth newest was g0
    assert g[6] == g[1] + 3000
    assert g[7] == g[2] + 3000


def test_replicas_share_one_budget(make_limiter) -> None:  # type: ignore[no-untyped-def]
    a, b = make_limiter("2/10s"), make_limiter("2/10s")
    assert a.acquire().wait_s == 0 and b.acquire().wait_s == 0
    assert 9.5 < a.acquire().wait_s <= 10.0


def test_a_grant_says_when_its_answer_came_and_how_long_the_call_took(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # The sender counts a slot from both ends of the call (consumer/delivery/slots.py, Slot): the
    # wait from the answer's arrival, the lateness from the call's sending.
    rl = make_limiter("3/1s")
    before = time.monotonic()
    grant = rl.acquire()
    after = time.monotonic()
    assert before <= grant.received_at <= after
    assert 0 <= grant.round_trip_s <= grant.received_at - before


def test_margin_is_added_to_every_period(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("1/1s", margin_ms=50)
    a, b = rl.acquire(), rl.acquire()
    assert b.slot_ms - a.slot_ms == 1050


def test_far_slot_is_refused_without_reserving(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("2/10s", horizon_ms=1000)
    assert rl.acquire().granted and rl.acquire().granted
    refused = rl.acquire()
    again = rl.acquire()
    assert not refused.granted and 9.0 < refused.wait_s <= 10.0
    assert not again.granted and abs(again.slot_ms - refused.slot_ms) < 50  # nothing was reserved


def test_a_pause_says_how_long_the_fleet_stays_paused(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # A retry's wait (consumer/delivery/attempts.py) counts the fleet's pause against
    # PISANO_RETRY_BUDGET_MS: this one, or a longer one another replica set.
    mine, other = make_limiter("100/1s"), make_limiter("100/1s")
    assert 1.9 <= mine.pause(2.0) <= 2.0
    assert 1.8 <= other.pause(0.5) <= 2.0  # the longer one already set, less the time since
    assert 4.9 <= other.pause(5.0) <= 5.0


def test_pause_holds_every_slot(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("100/1s")
    first = rl.acquire()
    rl.pause(2.0)
    after = rl.acquire()
    assert after.slot_ms - first.slot_ms >= 2000


def test_every_replica_learns_a_pause_from_its_next_reply(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # consumer/delivery/slots.py gives up a slot reserved before a 429 paused the fleet over it: each
    # replica knows the pause's end from its own pause and from any reply, a heartbeat's included.
    mine, other = make_limiter("1/1s"), make_limiter("1/1s")
    assert mine.paused_until_ms() == 0
    mine.acquire()
    ahead = mine.acquire()  # a window ahead, reserved before the pause
    other.pause(3.0)
    assert other.paused_until_ms() > ahead.slot_ms  # the pausing replica knows at once
    mine.heartbeat()
    assert mine.paused_until_ms() == other.paused_until_ms() > ahead.slot_ms
    after = mine.acquire()
    assert after.slot_ms >= mine.paused_until_ms()  # a slot granted after it is never inside it


def test_a_replica_knows_another_replicas_pause_only_from_a_reply(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # What the sender may rely on (consumer/delivery/slots.py): a pause set by another replica is
    # known from this replica's next reply, or the pause read staged in a trip made anyway (the
    # claims' before a POST), not before; the in-memory limiter used to know it at once, so the
    # sender's unit tests could not see a request leave into a pause it had not heard of yet.
    mine, other = make_limiter("1/1s"), make_limiter("1/1s")
    mine.acquire()
    other.pause(3.0)
    assert mine.paused_until_ms() == 0
    together([mine.stage_pause_read()])  # as the claims' trip carries it: no reservation, no heartbeat
    assert mine.paused_until_ms() == other.paused_until_ms() > 0


def test_a_pause_read_of_a_state_never_paused_says_no_pause(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("1/1s")
    together([rl.stage_pause_read()])
    assert rl.paused_until_ms() == 0
    rl.acquire()
    together([rl.stage_pause_read()])
    assert rl.paused_until_ms() == 0


def test_utilisation_counts_the_window_ending_now(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("4/10s")
    rl.acquire(), rl.acquire()
    shares = rl.utilisation()
    assert list(shares.values()) == [0.5]


# --- The fence: exact after any loss of the state, whoever happens to be busy -----------------
#
# Windows are short and the horizon small, so a proven loss holds the fleet for a few seconds
# (horizon + longest period + margin); the grace is 0.3 s. Every test counts the slots granted
# by all replicas, before and after the loss, per window.


def _take(limiter, count: int, timeout_s: float = 15.0) -> list[int]:  # type: ignore[no-untyped-def]
    """Reserve `count` slots as a sender does: on a refusal, ask again after its wait."""
    slots: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(slots) < count:
        assert time.monotonic() < deadline, f"only {len(slots)} of {count} slots in {timeout_s}s"
        grant = limiter.acquire()
        if grant.granted:
            slots.append(grant.slot_ms)
        else:
            time.sleep(min(max(grant.wait_s, 0.01), 0.1))
    return slots


def _over_limit(slots: list[int], windows: str, margin_ms: int = 0) -> list[str]:
    """Every window (N, T) that holds more than N slots: the N-th successor of a slot must come
    at least T + margin after it."""
    ordered = sorted(slots)
    found = []
    for window in parse_rate_limits(windows):
        for j in range(window.limit, len(ordered)):
            if ordered[j] - ordered[j - window.limit] < window.period_ms + margin_ms:
                found.append(f"{window}: {window.limit + 1} slots within {ordered[j] - ordered[j - window.limit]} ms")
    return found


def test_an_idle_replicas_slots_still_count_after_the_state_is_lost(make_limiter) -> None:  # type: ignore[no-untyped-def]
    windows = "2/2s"
    idle = make_limiter(windows, horizon_ms=500, grace_ms=300)
    busy = make_limiter(windows, horizon_ms=500, grace_ms=300)
    before = _take(idle, 2)  # the window is full; then this replica has nothing to send
    make_limiter.flush()  # Redis restarted without its data
    first = busy.acquire()  # the busy replica never saw the lost state: it cannot know
    assert not first.granted and first.held
    idle.heartbeat()  # the idle replica's heartbeat, within the grace, proves the loss
    after = _take(busy, 4)
    assert _over_limit(before + after, windows) == []
    # proven at the heartbeat: held for horizon + longest period from it
    assert min(after) >= max(before) + 2000


def test_a_state_rolled_back_behind_an_idle_replica_holds_the_fleet(make_limiter) -> None:  # type: ignore[no-untyped-def]
    windows = "3/3s"
    busy = make_limiter(windows, horizon_ms=500, grace_ms=300)
    idle = make_limiter(windows, horizon_ms=500, grace_ms=300)
    before = _take(busy, 1)
    snapshot = make_limiter.snapshot()  # the last RDB file
    time.sleep(0.4)  # older than the grace
    before += _take(idle, 2)  # then the idle replica sends its last two requests
    make_limiter.restore(snapshot)  # Redis comes back from that older file
    assert busy.acquire().held  # nobody heartbeat the restored state since the snapshot: doubt
    idle.heartbeat()  # the idle replica was given reservations the state no longer holds
    after = _take(busy, 4)
    assert _over_limit(before + after, windows) == []


def test_a_loss_the_caller_itself_proves_holds_at_once(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("2/2s", horizon_ms=500, grace_ms=300)
    before = _take(rl, 2)
    make_limiter.flush()
    held = rl.acquire()
    assert held.held and 2.3 < held.wait_s <= 2.5  # horizon + longest period, from now
    assert _over_limit(before + _take(rl, 2), "2/2s") == []


def test_a_new_state_holds_the_fleet_for_the_grace_only(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("5/1s", horizon_ms=500, grace_ms=300)
    first = rl.acquire()
    assert first.held and 0.2 < first.wait_s <= 0.3
    make_limiter("5/1s", horizon_ms=500, grace_ms=300).heartbeat()  # a replica that knows nothing proves nothing
    granted = _take(rl, 1)[0]
    assert granted - first.slot_ms < 150  # the first slot after the grace (give or take a poll)


def test_heartbeats_of_a_healthy_fleet_raise_no_fence(make_limiter) -> None:  # type: ignore[no-untyped-def]
    a = make_limiter("100/1s", horizon_ms=500, grace_ms=300)
    b = make_limiter("100/1s", horizon_ms=500, grace_ms=300)
    _take(a, 1), _take(b, 1)
    for _ in range(3):
        a.heartbeat(), b.heartbeat()
        assert a.acquire().granted and b.acquire().granted


def test_a_lone_caller_that_waits_out_the_grace_gets_its_slot(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("5/1s", horizon_ms=500, grace_ms=300)  # e.g. `pisano-sms check`: no heartbeat
    held = rl.acquire()
    time.sleep(held.wait_s + 0.05)
    assert rl.acquire().granted  # the grace's own end is no sign of a lost state


def test_another_server_with_all_the_data_holds_the_fleet_for_the_grace_only(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("5/1s", horizon_ms=500, grace_ms=300)
    _take(rl, 1)
    make_limiter.restart()
    held = rl.acquire()
    assert held.held and held.wait_s <= 0.3  # the last writes may be missing until replicas report
    rl.heartbeat()  # nothing this replica was given is missing: no hold
    granted = _take(rl, 1)[0]
    assert granted - held.slot_ms < 150


def test_a_log_far_ahead_of_the_clock_holds_the_fleet_once_then_grants_again(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # No slot is ever granted further than the horizon ahead, so a log whose newest slot is an hour
    # ahead means Redis's clock stepped back (a failover to a node whose clock is behind, an NTP
    # step) or the log was written by hand. Every slot lay beyond the horizon, refused forever.
    windows = "2/1s"
    rl = make_limiter(windows, horizon_ms=500, grace_ms=300)
    before = _take(rl, 2)
    t0 = int(time.time() * 1000)  # the stack's Redis runs on this machine: the same clock
    make_limiter.fill_log([t0 + 3_600_000, t0 + 3_600_000])
    held = rl.acquire()  # the state is in doubt: held for horizon + longest period, from now
    assert held.held and not held.granted and 1.3 < held.wait_s <= 1.5
    after = _take(rl, 4, timeout_s=5.0)  # then granted again, not held nor refused on a loop
    assert after[0] - held.slot_ms < 150
    assert _over_limit(before + after, windows) == []


def test_a_heartbeat_finds_a_log_far_ahead_of_the_clock(make_limiter) -> None:  # type: ignore[no-untyped-def]
    windows = "3/1s"
    busy = make_limiter(windows, horizon_ms=500, grace_ms=300)
    idle = make_limiter(windows, horizon_ms=500, grace_ms=300)
    before = _take(busy, 3)
    make_limiter.fill_log([int(time.time() * 1000) + 10 * 60_000])
    idle.heartbeat()  # an idle replica's heartbeat raises the fence: nobody needs to be sending
    held = busy.acquire()
    assert held.held and 1.3 < held.wait_s <= 1.5
    after = _take(busy, 6, timeout_s=5.0)
    assert _over_limit(before + after, windows) == []


def test_a_slot_within_another_callers_longer_horizon_is_no_clock_step(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # `pisano-sms check` (or a replica mid-upgrade) may use a longer horizon than the fleet: its
    # slots lie further ahead than the fleet's horizon + longest period, yet they are real.
    far = make_limiter("2/1s", horizon_ms=4000, grace_ms=0)
    near = make_limiter("2/1s,50/2s", horizon_ms=500, grace_ms=0)  # hold: horizon 500 + period 2000, or 4000 + 2000
    slots = _take(far, 8)  # the newest two 3 s ahead
    refused = near.acquire()
    assert not refused.held and not refused.granted  # waited out, not taken for a clock that stepped back
    slots += _take(near, 2)
    assert _over_limit(slots, "2/1s") == []


@contextmanager
def _an_older_version(make_limiter):  # type: ignore[no-untyped-def]
    """The calls made inside run as a replica of the previous version would (mid-upgrade, or an
    older `pisano-sms check`): the same script less the fields it does not know, so its horizon is
    never recorded (`horizon`, `horizon_at`) and its reservations are not marked as this version's
    (`pushed`), nor its fences (`fenced`)."""
    fields = ("horizon", "pushed", "fenced")
    if make_limiter.request.param == "memory":
        state = next(iter(make_limiter.memory.values())).state
        saved = {name: getattr(state.data, name, None) for name in fields}
        yield
        for name, value in saved.items():
            setattr(state.data, name, value)
        return
    meta = make_limiter._keys()[1]
    names = ["horizon", "horizon_at", "pushed", "fenced"]
    before = make_limiter.redis.hmget(meta, names)
    yield
    for name, value in zip(names, before, strict=True):
        if value is None:
            make_limiter.redis.hdel(meta, name)
        else:
            make_limiter.redis.hset(meta, name, value)


def test_slots_an_older_version_granted_at_its_longer_horizon_are_no_clock_step(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # Mid-upgrade, a replica of the previous version with a longer THROTTLE_HORIZON_MS (or an older
    # `pisano-sms check`, 60 s) grants slots further ahead than this version's hold, and never
    # records its horizon. Its slots are real: dropped, they would be granted a second time.
    near = make_limiter("2/1s,50/2s", horizon_ms=500, grace_ms=0)  # hold: 500 + 2000
    slots = _take(near, 1)
    far = make_limiter("2/1s", horizon_ms=4000, grace_ms=0)
    with _an_older_version(make_limiter):
        slots += _take(far, 7)  # the newest 3 s ahead
    refused = near.acquire()
    assert not refused.held and not refused.granted  # waited out: no 'clock' fence, the log kept
    slots += _take(near, 2, timeout_s=6.0)
    assert _over_limit(slots, "2/1s") == []


def test_a_loss_an_older_version_proved_holds_for_its_longer_horizon(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # Mid-upgrade, a replica of the previous version with a longer horizon proves a loss: its fence
    # lasts its horizon + longest period, past this version's hold + grace, and its lost slots
    # count until then. Taken for a clock step, the fence was cut to this version's hold.
    near = make_limiter("2/1s,50/2s", horizon_ms=500, grace_ms=300)  # hold: 500 + 2000
    near.acquire()
    far = make_limiter("2/1s", horizon_ms=4000, grace_ms=300)
    with _an_older_version(make_limiter):
        before = _take(far, 8)  # the newest 3 s ahead
    make_limiter.flush()  # Redis restarted without its data
    with _an_older_version(make_limiter):
        assert far.acquire().held  # the older replica proves the loss: held 4 s + 1 s
    held = near.acquire()
    assert held.held and held.wait_s > 4.0
    after = _take(near, 4, timeout_s=10.0)
    assert _over_limit(before + after, "2/1s") == []


def test_a_pause_pisano_asked_for_outlasts_a_clock_fence(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # A 429's Retry-After longer than the hold: a 'clock' fence (here a log written by hand; Redis's
    # clock did not move) must not cut the pause Pisano asked for.
    rl = make_limiter("2/1s", horizon_ms=500, grace_ms=300)  # hold 1.5 s
    _take(rl, 2)
    asked = int(time.time() * 1000)
    rl.pause(3.0)  # Retry-After: 3
    make_limiter.fill_log([asked + 3_600_000])
    held = rl.acquire()
    assert held.held and held.wait_s <= 1.5
    (after,) = _take(rl, 1, timeout_s=6.0)
    assert after >= asked + 3000


def _unheld(limiter, timeout_s: float = 5.0):  # type: ignore[no-untyped-def]
    """The first answer that is not a fence's (a sender waits a fence out and asks again)."""
    deadline = time.monotonic() + timeout_s
    while (grant := limiter.acquire()).held:
        assert time.monotonic() < deadline, "held for longer than a fence of this test lasts"
        time.sleep(grant.wait_s)
    return grant


def test_a_clock_stepped_forward_mid_window_grants_no_more_than_the_window(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # Redis's clock jumps 30 s forward mid-window (a failover to a node whose clock is ahead, an NTP
    # step): every slot in the log looks 30 s older than it is, and the window, full, looked empty.
    windows = "2/30s"
    rl = make_limiter(windows, horizon_ms=500, grace_ms=300)
    before = _take(rl, 2)
    make_limiter.step_clock(30_000)
    after = _unheld(rl)
    assert _over_limit([*before, after.slot_ms] if after.granted else before, windows) == []
    assert not after.granted and 29.0 < after.wait_s <= 30.2  # the window, as before the step


def test_an_idle_replica_finds_a_clock_stepped_forward_before_anyone_sends(make_limiter) -> None:  # type: ignore[no-untyped-def]
    windows = "3/20s"
    busy = make_limiter(windows, horizon_ms=500, grace_ms=300)
    idle = make_limiter(windows, horizon_ms=500, grace_ms=300)
    idle.heartbeat()
    before = _take(busy, 3)
    idle.heartbeat()
    make_limiter.step_clock(25_000)
    idle.heartbeat()  # the step is measured by the idle replica's heartbeat, and corrected once
    busy.heartbeat()  # the busy replica measures the same step: already corrected, not again
    refused = _unheld(busy)
    assert _over_limit(before + ([refused.slot_ms] if refused.granted else []), windows) == []
    assert not refused.granted and 19.0 < refused.wait_s <= 20.2


def test_a_pause_pisano_asked_for_lasts_through_a_clock_stepped_forward(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("100/1s", horizon_ms=500, grace_ms=300)
    _take(rl, 1)
    rl.pause(3.0)  # Retry-After: 3
    make_limiter.step_clock(30_000)
    refused = _unheld(rl)
    assert not refused.granted and 2.5 < refused.wait_s <= 3.2  # not over because the clock jumped
    rl.pause(1.0)  # a pause asked for after the step counts on the same clock: the longer one stays
    assert 2.5 < _unheld(rl).wait_s <= 3.2


def test_a_pause_asked_for_before_anyone_measured_a_forward_step_lasts_what_pisano_asked(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # Found by review (h-rsend): the pause (lua/pause.lua) read the clock without taking a forward
    # step out, so a 429 that was the first call after the step paused the fleet for the step too.
    rl = make_limiter("100/1s", horizon_ms=500, grace_ms=300)
    _take(rl, 1)
    make_limiter.step_clock(30_000)
    rl.pause(3.0)  # Retry-After: 3, before any acquire or heartbeat measured the step
    refused = _unheld(rl)
    assert not refused.granted and 2.5 < refused.wait_s <= 3.2  # not 33 s
    assert refused.slot_ms - rl.paused_until_ms() < 50  # the pause's end the replica knows, on the same clock


def test_a_call_sent_again_after_a_script_reload_measures_no_step(make_limiter) -> None:  # type: ignore[no-untyped-def]
    """Found by review: a call answered NOSCRIPT (after a restart, a failover to a node that never ran
    the script, SCRIPT FLUSH) was sent again by redis-py after SCRIPT LOAD with the same arguments:
    the monotonic time since the previous reply, read before the first sending, was stale by the
    reload's round trips, so the reload's time was taken for a forward step of Redis's clock and
    added to meta `skew` for good (the fleet then waited it out once). A reload that took 300 ms
    (a script of 12 KB over a slow link, to every master of a cluster) is no step."""
    if make_limiter.request.param == "memory":
        pytest.skip("no transport: the memory limiter has nothing to send again")
    rl = make_limiter("100/1s", horizon_ms=500)
    rl.heartbeat()
    rl.heartbeat()
    client = rl.client
    client.script_flush()  # every master of a cluster
    load = client.script_load

    def slow_load(script: str) -> str:
        time.sleep(0.3)
        return load(script)

    client.script_load = slow_load
    rl.heartbeat()  # NOSCRIPT, reloaded, sent again
    assert int(make_limiter.redis.hget(make_limiter._keys()[1], "skew") or 0) == 0
    assert rl.acquire().granted


# --- The pace (consumer/delivery/pacing.py): a paced request keeps `pace_ms` after the newest --
# reservation, is refused (nothing reserved) while its turn is further than the lead, and never
# takes a slot the windows would not allow. Requests that are not paced are unaffected.


def test_a_paced_request_waits_its_turn_without_reserving(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("100/1s")
    first = rl.acquire(pace_ms=2000)  # nothing reserved before: no turn to keep
    assert first.granted and first.wait_s < 0.05
    refused = rl.acquire(pace_ms=2000)
    assert not refused.granted and refused.paced and not refused.held
    assert abs(refused.slot_ms - (first.slot_ms + 2000)) <= 1 and 1.9 < refused.wait_s <= 2.0
    again = rl.acquire(pace_ms=2000)  # the refusal reserved nothing: the same turn
    assert again.paced and again.slot_ms == refused.slot_ms
    urgent = rl.acquire()  # a full batch is not queued behind the paced turn
    assert urgent.granted and urgent.slot_ms - first.slot_ms < 50


def test_a_paced_turn_within_the_lead_is_reserved_at_the_turn(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("100/1s")
    first = rl.acquire(pace_ms=200)
    time.sleep(0.19)  # the turn is 10 ms away: within the lead (an eighth of the pace)
    paced = rl.acquire(pace_ms=200)
    assert paced.granted and paced.slot_ms == first.slot_ms + 200


def test_the_pace_counts_from_any_reservation_of_the_fleet(make_limiter) -> None:  # type: ignore[no-untyped-def]
    a, b = make_limiter("100/1s"), make_limiter("100/1s")
    urgent = a.acquire()  # another replica's full batch
    paced = b.acquire(pace_ms=1000)
    assert paced.paced and abs(paced.slot_ms - (urgent.slot_ms + 1000)) <= 1


def test_a_paced_slot_still_keeps_every_window(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("2/1s", margin_ms=20)
    slots = [rl.acquire().slot_ms, rl.acquire().slot_ms]
    time.sleep(0.1)
    paced = rl.acquire(pace_ms=80)  # its turn is past, but the window allows no slot before g0 + 1020
    assert paced.granted and paced.slot_ms == slots[0] + 1020
    assert _over_limit([*slots, paced.slot_ms], "2/1s", margin_ms=20) == []


def test_a_fence_holds_paced_requests_too(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("5/1s", grace_ms=300)
    held = rl.acquire(pace_ms=100)
    assert held.held and not held.granted and not held.paced


def test_no_slot_sooner_than_the_callers_preparation(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("100/1s")
    first = rl.acquire(prepare_ms=200)  # an idle limiter: the slot is the preparation's lead away
    assert first.granted and 0.15 < first.wait_s <= 0.2
    later = rl.acquire(prepare_ms=200)  # never before an existing reservation either
    assert later.granted and later.slot_ms >= first.slot_ms
    paced = rl.acquire(pace_ms=1000, prepare_ms=200)  # the turn counts from that (future) slot
    assert paced.paced and paced.slot_ms == later.slot_ms + 1000


# --- One key lost or rolled back alone, and replicas with other windows on the same token -------


def test_the_log_deleted_alone_holds_the_fleet(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("2/2s", horizon_ms=500, grace_ms=300)
    before = _take(rl, 2)
    make_limiter.flush_log()  # the meta hash still says nothing was lost
    after = _take(rl, 2)
    assert _over_limit(before + after, "2/2s") == []


def test_the_log_restored_alone_from_an_older_snapshot_holds_the_fleet(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("3/2s", horizon_ms=500, grace_ms=300)
    before = _take(rl, 1)
    snapshot = make_limiter.snapshot()
    before += _take(rl, 2)
    make_limiter.restore_log(snapshot)
    after = _take(rl, 3)
    assert _over_limit(before + after, "3/2s") == []


def test_a_replica_with_fewer_windows_keeps_the_others_slots(make_limiter) -> None:  # type: ignore[no-untyped-def]
    wide = make_limiter("2/1s,4/4s", horizon_ms=500, grace_ms=0)  # the new setting, mid-upgrade
    narrow = make_limiter("2/1s", horizon_ms=500, grace_ms=0)  # a replica still on the old one
    slots = _take(wide, 2) + _take(narrow, 2)  # the narrow replica trims the log to its 2 newest
    slots += _take(wide, 1)
    assert _over_limit(slots, "4/4s") == []  # the wide replica's own window, over the fleet's slots


def test_utilisation_of_a_huge_window_does_not_read_the_whole_log(make_limiter) -> None:  # type: ignore[no-untyped-def]
    # N up to 1,000,000: the log keeps that many slots, and the metrics read utilisation every few
    # seconds on every replica; returning the whole log blocked Redis for 0.7 s per read. Counted
    # in entries read, not timed: a binary search per window bound reads about 19 of 299,990.
    windows = "300000/1440m,10/1s,400000/500s"
    rl = make_limiter(windows)
    t0 = int(time.time() * 1000)  # the stack's Redis runs on this machine: the same clock
    make_limiter.fill_log([t0 - 400_000 + i for i in range(299_990)])  # ascending, the newest 100 s ago
    reads = make_limiter.log_reads()
    shares = rl.utilisation()
    short, mid, long = parse_rate_limits(windows)
    assert shares == {long: 299_990 / 300_000, short: 0.0, mid: 299_990 / 400_000}
    assert reads() <= 4 * 20, f"utilisation read {reads()} of the log's 299,990 entries"
