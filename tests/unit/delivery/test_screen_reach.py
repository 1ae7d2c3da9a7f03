"""The age screen before a POST (`SlotReserver.ready`'s `screen`) may take long: its release is
retried through a Redis outage (`Claim._record`, up to about a minute). A POST the claims were
taken for, planned with no renewal, must still leave within RENEWAL_REACH_S of a renewal."""

from __future__ import annotations

import threading
import time

import pytest

from consumer.delivery import slots
from consumer.delivery.outage import RedisOutage
from consumer.delivery.slots import Slot, SlotReserver
from consumer.operations.metrics import Metrics
from consumer.state.limiter import NoLimiter


def test_a_slow_age_screen_before_an_unrenewed_post_renews_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # No throttle (no lateness check): the claims were taken for this slot, so no renewal was
    # planned; the screen's release then took longer than the reach (a Redis outage retried).
    monkeypatch.setattr(slots, "RENEWAL_REACH_S", 0.1)
    metrics, stop = Metrics(), threading.Event()
    reserver = SlotReserver(NoLimiter(), metrics, stop, RedisOutage(metrics, stop), 30.0, "default")
    renewals: list[float] = []

    def screen(within_s: float) -> bool:
        time.sleep(0.2)
        return True

    now = time.monotonic()
    ready = reserver.ready(Slot(now), lambda: renewals.append(time.monotonic()) is None, fresh=now, screen=screen)
    assert ready.state == "go"
    assert len(renewals) == 1, "the POST left with no renewal within its reach after a slow screen"


def test_a_slow_age_screen_within_the_lateness_allowed_still_renews(monkeypatch: pytest.MonkeyPatch) -> None:
    # PISANO_RATE_MARGIN_MS=10000: a POST may leave 5 s after its slot, but not 2 s past its claims.
    monkeypatch.setattr(slots, "RENEWAL_REACH_S", 0.1)
    metrics, stop = Metrics(), threading.Event()
    reserver = SlotReserver(NoLimiter(), metrics, stop, RedisOutage(metrics, stop), 30.0, "default",
                            max_lateness_s=5.0)
    renewals: list[float] = []
    now = time.monotonic()
    assert reserver.ready(Slot(now + 0.01), lambda: renewals.append(time.monotonic()) is None, fresh=now,
                          screen=lambda within_s: time.sleep(0.2) is None).state == "go"
    assert len(renewals) == 1
