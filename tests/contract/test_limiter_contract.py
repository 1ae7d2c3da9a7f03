"""The limiter's contract: exact earliest slots over every window, margin, horizon, pause."""

from __future__ import annotations


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


def test_pause_holds_every_slot(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("100/1s")
    first = rl.acquire()
    rl.pause(2.0)
    after = rl.acquire()
    assert after.slot_ms - first.slot_ms >= 2000


def test_utilisation_counts_the_window_ending_now(make_limiter) -> None:  # type: ignore[no-untyped-def]
    rl = make_limiter("4/10s")
    rl.acquire(), rl.acquire()
    shares = rl.utilisation()
    assert list(shares.values()) == [0.5]
