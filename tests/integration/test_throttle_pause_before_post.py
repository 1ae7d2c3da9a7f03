"""Another replica's pause is learnt in the claims' round trip before the POST, on real Redis (h-pause).

README, "The shared throttle", *Slots reserved before a pause*. A sender on the real dedup store and
limiter (a single Redis, and a Redis Cluster, where the limiter's meta key and the claims' buckets
live on different masters); the other replica's 429 pauses the fleet after this replica's last
limiter reply: the request learns it from its claims' trip (one pipeline, no round trip of its own)
and takes a slot after the pause. And the round trips a request costs with the throttle on: the
slot, the claim (with the pause read), the settlement, three.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.delivery.batching import Batch
from consumer.delivery.slots import Slot
from consumer.state.dedup import RedisDedup
from consumer.state.limiter import RedisLimiter
from consumer.state.redis import Keys
from tests.conftest import flushed_client
from tests.support.fakes import CAMPAIGN, FakePisano, event, rig
from tests.support.redis_trips import count_round_trips


@pytest.fixture(params=["redis", "cluster"])
def client(request: pytest.FixtureRequest) -> Any:
    return flushed_client(request, request.param)


def _sender(client: Any, windows: str) -> tuple[Any, RedisLimiter]:
    limiter = RedisLimiter(client, Keys("t"), "tok", parse_rate_limits(windows), margin_ms=0, horizon_ms=60_000,
                           grace_ms=0)
    dedup = RedisDedup(client, Keys("t"), lease_ms=60_000, horizon_s=3600)
    r = rig(FakePisano(), limiter=limiter, dedup=dedup)  # type: ignore[arg-type]
    return r, limiter


def test_a_request_learns_another_replicas_pause_in_its_claims_trip(client: Any) -> None:
    r, mine = _sender(client, "1/1s")
    other = RedisLimiter(client, Keys("t"), "tok", parse_rate_limits("1/1s"), margin_ms=0, horizon_ms=60_000,
                         grace_ms=0)
    posts: list[float] = []
    r.pisano.on_wire = lambda: posts.append(time.monotonic())
    r.sender.process(Batch(CAMPAIGN, [event(0)]), slot=Slot.of(mine.acquire()))  # fills the window
    ahead = Slot.of(mine.acquire())  # a second ahead
    other.pause(1.5)  # the other replica's 429, after this replica's last limiter reply
    pause_ends = time.monotonic() + 1.5
    assert mine.paused_until_ms() < other.paused_until_ms()  # not known here yet
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=ahead)
    assert r.kinds() == {"e0": {"delivered"}, "e1": {"delivered"}}
    assert len(posts) == 2 and posts[1] >= pause_ends - 0.05, "the request left into the pause"
    assert r.sender.metrics.registry.get_sample_value("pisano_sms_throttle_slots_wasted_total",
                                                      {"destination": "default"}) == 1


def test_a_request_costs_three_round_trips_with_the_throttle_on(client: Any) -> None:
    # The pause read travels in the claim's pipeline: on a single Redis in its one packet; on a
    # cluster in the packet to the limiter's master, which a batch of a few hundred ids touches
    # anyway (one packet per master, all sent before any reply is read: one round trip).
    cluster = hasattr(client, "get_nodes")
    r, _limiter = _sender(client, "1000/1s")
    reserver = r.sender.attempts.slots
    size = 300 if cluster else 1
    batches = [[event(n * size + i) for i in range(size)] for n in range(21)]
    r.sender.process(Batch(CAMPAIGN, batches[0]), slot=reserver.reserve())  # scripts loaded, layout read
    if cluster:  # a connection to every master, so none is opened while counting
        for node in client.get_primaries():
            client.get_redis_connection(node).ping()
    with count_round_trips() as trips:
        for batch in batches[1:]:
            slot = reserver.reserve()
            assert slot is not None
            r.sender.process(Batch(CAMPAIGN, batch), slot=slot)
    requests = len(batches) - 1
    assert len(r.pisano.requests) == requests + 1
    print(f"packets per request: {trips.operations / requests:.2f} ({dict(trips)})")
    assert trips["HGET"] == 0, "the pause read went alone"
    masters = len(client.get_primaries()) if cluster else 1
    assert trips.operations == requests * (1 + 2 * masters), dict(trips)  # the slot; the claim, the settlement
