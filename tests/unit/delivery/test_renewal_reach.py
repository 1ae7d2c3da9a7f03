"""A renewal (or the claim) covers a POST only if the POST leaves within RENEWAL_REACH_S of it.

`SlotReserver.ready` skips the renewal for a slot near the claim. A POST may still leave up to
`max_lateness_s` after its slot (PISANO_RATE_MARGIN_MS / 2), and the claim's lease only has
Settings.claim_lease_margin_ms to spare beyond the request: the reach must count from when the
POST leaves, not from when its slot was."""

from __future__ import annotations

import threading
import time

import pytest

from consumer.delivery.outage import RedisOutage
from consumer.delivery.slots import RENEWAL_REACH_S, Slot, SlotReserver
from consumer.operations.metrics import Metrics
from consumer.state.limiter import NoLimiter


def reserver(max_lateness_s: float) -> SlotReserver:
    metrics, stop = Metrics(), threading.Event()
    return SlotReserver(NoLimiter(), metrics, stop, RedisOutage(metrics, stop), 30.0, "default",
                        max_lateness_s=max_lateness_s)


def test_a_post_leaving_late_after_a_slot_near_the_claim_renews_first() -> None:
    # PISANO_RATE_MARGIN_MS=10000: a POST may leave 5 s after its slot. The claims were taken
    # 4 s ago, the slot was 1.5 s after them: preparing (a slow Redis) overran it by 2.5 s.
    slots = reserver(5.0)
    renewals: list[float] = []

    def renew() -> bool:
        renewals.append(time.monotonic())
        return True

    now = time.monotonic()
    assert slots.ready(Slot(now - 2.5), renew, fresh=now - 4.0).state == "go"
    assert len(renewals) == 1  # the POST would leave 4 s after the claims: beyond their reach


def test_a_post_within_reach_of_the_claim_does_not_renew() -> None:
    slots = reserver(5.0)
    renewals: list[float] = []
    now = time.monotonic()
    assert slots.ready(Slot(now + 0.05), lambda: renewals.append(now) is None,
                       fresh=now - RENEWAL_REACH_S / 2).state == "go"
    assert not renewals


class _OversleepsOnce(threading.Event):
    """A stop event whose first timed wait returns `by` seconds late: the thread got the CPU back
    late, as on a busy machine."""

    def __init__(self, by: float) -> None:
        super().__init__()
        self.by = by

    def wait(self, timeout: float | None = None) -> bool:
        stopped = super().wait(timeout)
        if timeout and self.by:
            time.sleep(self.by)
            self.by = 0.0
        return stopped


def test_a_post_woken_late_past_its_slot_takes_a_new_slot(caplog: pytest.LogCaptureFixture) -> None:
    # The check before the last sleep passed; the sleep itself ended 0.2 s after the slot. Sent
    # now, the request could reach Pisano after a later slot's request: it must take a new slot.
    metrics, stop = Metrics(), _OversleepsOnce(0.2)
    slots = SlotReserver(NoLimiter(), metrics, stop, RedisOutage(metrics, stop), 30.0, "default",
                         max_lateness_s=0.05)
    now = time.monotonic()
    assert slots.ready(Slot(now + 0.01), lambda: True, fresh=now).state == "go"
    assert metrics.throttle_wasted.labels("default")._value.get() == 1
    assert metrics.throttle_slots.labels("default")._value.get() == 1  # the new slot
    assert "raise PISANO_RATE_MARGIN_MS" in caplog.text  # what to do if it keeps happening
