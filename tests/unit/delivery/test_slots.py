"""A sender's slot reservation while the throttle is fenced (the state was lost or is in doubt)."""

from __future__ import annotations

import threading
import time

from consumer.delivery.outage import RedisOutage
from consumer.delivery.slots import SlotReserver
from consumer.operations.metrics import Metrics
from tests.support.fakes import windows_limiter


def test_a_fenced_fleet_waits_out_the_fence_and_says_so() -> None:
    limiter = windows_limiter("10/1s", horizon_ms=60_000, grace_ms=300)  # a new state: held for the grace
    metrics, stop = Metrics(), threading.Event()
    slots = SlotReserver(limiter, metrics, stop, RedisOutage(metrics, stop), horizon_s=60.0, destination="default")
    fenced_at_call = []  # the gauge as each call to the limiter begins
    original = limiter.acquire

    def watched(pace_ms=0, prepare_ms=0):  # type: ignore[no-untyped-def]
        fenced_at_call.append(metrics.registry.get_sample_value("pisano_sms_throttle_fenced",
                                                                {"destination": "default"}))
        return original(pace_ms, prepare_ms)

    limiter.acquire = watched  # type: ignore[method-assign]
    started = time.monotonic()
    assert slots.reserve() is not None
    # Held within the horizon, yet no slot was reserved until the fence ended, and no polling meanwhile.
    assert 0.25 < time.monotonic() - started < 1.0
    assert fenced_at_call == [0.0, 1.0]  # one refusal (the fence), then the grant
    assert metrics.registry.get_sample_value("pisano_sms_throttle_fenced", {"destination": "default"}) == 0


def test_a_horizon_shorter_than_the_preparation_lead_still_grants_slots() -> None:
    # THROTTLE_HORIZON_MS may be 0 (settings: ge=0), but every throttled slot is at least the
    # preparation's lead (200 ms) away: a slot must not be refused as "beyond the horizon" forever.
    limiter = windows_limiter("10/1s", horizon_ms=0)
    metrics, stop = Metrics(), threading.Event()
    slots = SlotReserver(limiter, metrics, stop, RedisOutage(metrics, stop), horizon_s=0.0, destination="default",
                         max_lateness_s=0.25)
    timer = threading.Timer(3.0, stop.set)  # without a slot, reserve() would only end at the stop
    timer.start()
    try:
        started = time.monotonic()
        assert slots.reserve() is not None
        assert time.monotonic() - started < 1.0
    finally:
        timer.cancel()
