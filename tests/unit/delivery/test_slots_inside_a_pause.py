"""A slot reserved before a 429 paused the fleet is not used inside the pause (h-sender).

Slots are reserved up to THROTTLE_HORIZON_MS ahead. A 429 (this replica's or another's) pauses the
token's limiter for the fleet (`lua/pause.lua`), which stops new grants only: every request that
already held a slot inside the pause still left in it, heard 429 in turn, and paused the fleet again.
Such a request now gives its slot up and takes a new one, which the limiter grants after the pause
(its old slot stays counted: no window can be exceeded by a slot never used), its claims renewed
before the POST as for any slot beyond their reach.
"""

from __future__ import annotations

import threading
import time

from consumer.delivery.outage import RedisOutage
from consumer.delivery.slots import RENEWAL_REACH_S, Slot, SlotReserver
from consumer.operations.metrics import Metrics
from tests.support.fakes import windows_limiter


def _reserver(limiter):  # type: ignore[no-untyped-def]
    metrics, stop = Metrics(), threading.Event()
    return SlotReserver(limiter, metrics, stop, RedisOutage(metrics, stop), horizon_s=60.0,
                        destination="default"), metrics


def test_a_slot_reserved_before_another_replicas_429_waits_for_the_pause_end() -> None:
    mine = windows_limiter("1/1s")
    other = mine.replica()  # another replica on the same token
    slots, metrics = _reserver(mine)
    first, ahead = slots.reserve(), slots.reserve()  # the second lies a window (1 s) ahead
    assert first is not None and ahead is not None and 0.8 < ahead.at - time.monotonic() <= 1.0
    other.pause(RENEWAL_REACH_S + 0.5)  # the other replica heard 429: the fleet pauses
    paused_until = mine.state.data.pause_until
    mine.heartbeat()  # what this replica learns within a second, busy or idle
    renewals: list[float] = []
    fresh = time.monotonic()  # the claims were just taken for `ahead`

    def renew() -> bool:
        renewals.append(time.monotonic())
        return True

    ready = slots.ready(ahead, renew, fresh=fresh)
    left_at = time.monotonic()
    assert ready.state == "go"
    assert mine.state.data.slots[-1] >= paused_until, "the request left in a slot inside the pause"
    assert left_at - fresh >= RENEWAL_REACH_S + 0.3, "it left before the pause ended"
    # the wait took the POST beyond the claims' reach: renewed once, after the pause was seen
    assert len(renewals) == 1 and renewals[0] - fresh > 1.0
    assert metrics.registry.get_sample_value("pisano_sms_throttle_slots_wasted_total",
                                             {"destination": "default"}) == 1


def test_a_slot_granted_after_the_pause_is_used_as_granted() -> None:
    limiter = windows_limiter("10/1s")
    limiter.pause(0.5)
    slots, _metrics = _reserver(limiter)
    slot = slots.reserve()
    assert slot is not None
    started = time.monotonic()
    assert slots.ready(slot, lambda: True).state == "go"
    assert time.monotonic() - started < 0.8  # at its slot, not pushed back a second time
    assert len(limiter.state.data.slots) == 1


def test_a_request_waiting_for_the_pause_end_holds_its_claims_pending_then_arms_them() -> None:
    # A replica killed while it waits out the pause (up to 625 s) must leave its events free, not
    # `ambiguous`: the request's claims are made pending (`on_pause`, Attempts' disarm) when its slot
    # is given up, and the renewal before the POST arms them again, however near the claims were taken.
    slots, ahead = _a_slot_ahead_then_a_pause()
    calls: list[str] = []
    fresh = time.monotonic()
    ready = slots.ready(ahead, lambda: calls.append("renew") is None, fresh=fresh,
                        on_pause=lambda: calls.append("disarm") is None)
    assert ready.state == "go" and calls == ["disarm", "renew"]


def test_a_disarm_without_reply_ends_the_request_unsent() -> None:
    slots, ahead = _a_slot_ahead_then_a_pause()
    assert slots.ready(ahead, lambda: True, on_pause=lambda: False).state == "refused"


def _a_slot_ahead_then_a_pause() -> tuple[SlotReserver, Slot]:
    """A slot reserved a second ahead, then another replica's 429 pauses the fleet over it."""
    mine = windows_limiter("1/1s")
    slots, _metrics = _reserver(mine)
    slots.reserve()
    ahead = slots.reserve()
    assert ahead is not None
    mine.replica().pause(1.5)
    mine.heartbeat()  # what this replica learns within a second (or from its claims' trip)
    return slots, ahead
