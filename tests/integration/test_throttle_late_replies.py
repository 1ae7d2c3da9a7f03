"""Throttle replies that come back late never make a POST late (found in a CI chaos run).

A slot's wait counts from when the limiter's script ran in Redis. A reply held back on its way
(the replica descheduled while Redis answered, a congested link) used to be timed from its
arrival, so the POST left that much after its slot, past the lateness check, and reached Pisano
among later slots' requests. Here the limiter talks to the real Redis through a TCP proxy
(tests/support/redis_proxy.py) that holds back every other reply of the acquire script by three
times the margin, for replica A; replica B's replies come straight back. Their sender threads reserve
slots and POST as the product does (`SlotReserver.ready`), to the simulator, which enforces the
same windows exactly: A's late POSTs would land among B's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from consumer.config.windows import parse_rate_limits
from consumer.delivery.outage import RedisOutage
from consumer.delivery.slots import SlotReserver
from consumer.operations.metrics import Metrics
from consumer.simulator import SimulatorConfig, SimulatorServer
from consumer.state.limiter import RedisLimiter
from consumer.state.redis import Keys, connect
from tests.conftest import Stack, unique
from tests.support.redis_proxy import RedisProxy

WINDOWS = "3/1s"
MARGIN_MS = 200
HELD_S = 3 * MARGIN_MS / 1000
RUN_S = 6.0
THREADS = {"A": 2, "B": 4}  # B holds the next slots while A's reply is on its way
TOKEN = "late-replies-token"
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


@pytest.fixture
def proxy(stack: Stack, redis_client) -> Iterator[RedisProxy]:  # type: ignore[no-untyped-def]
    url = urlparse(stack.redis_url)
    proxy = RedisProxy(url.hostname or "127.0.0.1", url.port or 6379).start()
    yield proxy
    proxy.close()


def test_replies_held_back_never_make_a_post_late(stack: Stack, proxy: RedisProxy) -> None:
    windows = parse_rate_limits(WINDOWS)
    keys = Keys(unique("late"))
    clients = [connect(proxy.url), connect(stack.redis_url)]  # replica A behind the proxy, B direct
    limiters = [RedisLimiter(c, keys, TOKEN, windows, margin_ms=MARGIN_MS, horizon_ms=5000, grace_ms=0)
                for c in clients]
    proxy.hold_replies(limiters[0]._acquire.sha.encode(), HELD_S, every=2)
    metrics, stop = Metrics(), threading.Event()
    reservers = [SlotReserver(limiter, metrics, stop, RedisOutage(metrics, stop), horizon_s=5.0,
                              destination=name, max_lateness_s=MARGIN_MS / 2000)
                 for limiter, name in zip(limiters, "AB", strict=True)]
    with SimulatorServer(SimulatorConfig(tokens=frozenset({TOKEN}), any_campaign=True,
                                         rate_limits=windows)) as simulator:
        http = httpx.Client(base_url=simulator.url, headers={"Authorization": f"Token token={TOKEN}"})

        def sender(slots: SlotReserver) -> None:  # saturated demand: a slot, a POST, again
            while not stop.is_set():
                if slots.ready(None, lambda: True).state == "go":
                    http.post(f"/v1/sms_campaigns/{CAMPAIGN}/sms_sharings", json={"phone_numbers": ["+905551234567"]})

        threads = [threading.Thread(target=sender, args=(slots,), daemon=True)
                   for slots, name in zip(reservers, "AB", strict=True) for _ in range(THREADS[name])]
        for thread in threads:
            thread.start()
        stop.wait(RUN_S)
        stop.set()
        for thread in threads:
            thread.join(10)
        http.close()
        requests = simulator.state.requests.records()
    for client in clients:
        client.close()

    statuses = [r["http_status"] for r in requests]
    wasted = metrics.registry.get_sample_value("pisano_sms_throttle_slots_wasted_total", {"destination": "A"})
    assert proxy.held >= 3, "no reply was held back: the test did not test"
    assert statuses.count(429) == 0, f"{statuses.count(429)} requests over a window of {WINDOWS}"
    assert wasted and wasted >= proxy.held - 1, (wasted, proxy.held)  # a late reply's slot is given up
    # Still sending: a held reply costs its slot, and A's limiter takes the reply's delay for a step
    # of Redis's clock (lua/acquire.lua, 'step': a false step sets the fleet's clock back, safely).
    assert statuses.count(200) >= RUN_S / 1.2, statuses
