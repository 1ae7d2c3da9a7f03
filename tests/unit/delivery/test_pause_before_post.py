"""A pause another replica set is learnt in the claims' round trip before the POST (h-pause).

Found by review: a replica learnt another replica's 429 pause only from its next limiter reply or
heartbeat (up to a second later), so a request already holding a slot inside the pause still left
into it, heard 429 and paused the fleet again. The last round trip before a POST is the claims'
(the first claim, at the slot's lead time; or the renewal that arms them, `SlotReserver.ready`'s
gate): it now reads the fleet's pause too (`Limiter.stage_pause_read`), in the same pipeline, so the
request gives its slot up for one after the pause, with no round trip of its own.
"""

from __future__ import annotations

import time

from consumer.delivery.batching import Batch
from consumer.delivery.slots import Slot
from consumer.errors import PisanoApiError
from tests.support.fakes import CAMPAIGN, FakePisano, event, rig, windows_limiter


def _posts(pisano: FakePisano) -> list[float]:
    times: list[float] = []
    pisano.on_wire = lambda: times.append(time.monotonic())
    return times


def test_a_first_claim_learns_another_replicas_pause_before_its_post() -> None:
    limiter = windows_limiter("1/1s")
    r = rig(FakePisano(), limiter=limiter)
    posts = _posts(r.pisano)
    limiter.acquire()  # the window is full: the next slot lies a second ahead
    ahead = Slot.of(limiter.acquire())
    limiter.replica().pause(1.5)  # another replica heard 429; this one has had no reply since
    pause_ends = time.monotonic() + 1.5
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=ahead)
    assert r.kinds() == {"e1": {"delivered"}}
    assert posts and posts[0] >= pause_ends - 0.05, "the request left into the pause"
    assert limiter.state.data.slots[-1] >= limiter.state.data.pause_until  # in a slot after it
    assert r.sender.metrics.registry.get_sample_value("pisano_sms_throttle_slots_wasted_total",
                                                      {"destination": "default"}) == 1


def test_the_renewal_before_a_retry_learns_another_replicas_pause() -> None:
    # A retry's slot is reserved after its backoff; another replica's 429 comes after that, before
    # the renewal that arms the claims for the retry's POST (the gate, 200 ms before the slot).
    limiter = windows_limiter("1/1s")
    other = limiter.replica()
    r = rig(FakePisano([PisanoApiError(503, None, "busy")]), limiter=limiter)
    posts = _posts(r.pisano)
    reserve = r.sender.attempts.slots.reserve
    reserved: list[object] = []
    paused: list[float] = []

    def reserve_then_another_429(*args, **kwargs):  # type: ignore[no-untyped-def]
        slot = reserve(*args, **kwargs)
        reserved.append(slot)
        if len(reserved) == 2:  # the retry's slot, a second ahead (the first POST filled the window)
            other.pause(1.5)
            paused.append(time.monotonic() + 1.5)
        return slot

    r.sender.attempts.slots.reserve = reserve_then_another_429  # type: ignore[method-assign]
    r.process([event(1)])
    assert r.kinds() == {"e1": {"delivered"}}
    assert len(posts) == 2 and posts[1] >= paused[0] - 0.05, "the retry left into the pause"
