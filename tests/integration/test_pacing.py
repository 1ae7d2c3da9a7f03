"""A steady trickle is paced, not burnt (issue 14; consumer/delivery/pacing.py).

Pisano's cloud windows compressed tenfold (20/500ms, ..., 160/62.5s), enforced exactly by the
simulator; one replica with the default PISANO_PACE_SHARE. A trickle of 40 events/s for 6 s,
each batch due after 100 ms: without the pace a request would leave at about every linger (some
sixty requests of a few recipients, the start of the burn that exhausts the long window); paced,
requests keep (62.5 s + 50 ms) / (160 x 0.8) = 489 ms apart, each carrying what arrived since the
last. Every event is delivered once, no window is exceeded. (The figures before and after, at the
real loads: benchmarks/latency.py.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumer.config.windows import parse_rate_limits
from consumer.ingest.samples import encode, phone_for, transaction
from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack, unique
from tests.integration.test_throttle_fleet import violations
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.scenario import CAMPAIGNS, delivered_phones

WINDOWS = "20/500ms,40/2500ms,80/12500ms,160/62500ms"
TOKEN = "pacing-token"
RATE, SECONDS = 40, 6.0
PACE_MS = 489


@pytest.mark.timeout(120)
def test_a_steady_trickle_is_paced_not_burnt(stack: Stack, new_topic: Callable[..., str], tmp_path: Path,
                                              redis_client, processes) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = new_topic(), new_topic("dlq"), unique("g")
    windows = parse_rate_limits(WINDOWS)
    log = tmp_path / "deliveries.jsonl"
    config = SimulatorConfig(tokens=frozenset({TOKEN}), campaigns=frozenset(CAMPAIGNS), rate_limits=windows,
                             delivery_log_path=log, memory_log_recipients=0)
    with SimulatorServer(config) as simulator:
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                           pisano_url=simulator.url, token=TOKEN, PISANO_RATE_LIMITS=WINDOWS,
                           PISANO_RATE_MARGIN_MS=50, BATCH_MAX_WAIT_MS=100, THROTTLE_HORIZON_MS=3000,
                           THROTTLE_GRACE_MS=2000, PISANO_PACE_SHARE=0.8)
        replica = ConsumerProcess(env, tmp_path / "replica.log").start()
        processes.append(replica)
        replica.wait_ready()
        time.sleep(3)  # the new throttle state's grace (2 s from the first heartbeat) is over
        producer = Producer({"bootstrap.servers": stack.bootstrap, "linger.ms": 2})
        prefix, count = unique("p"), int(RATE * SECONDS)
        started = time.monotonic()
        for n in range(count):
            time.sleep(max(0.0, started + n / RATE - time.monotonic()))
            producer.produce(topic, key=f"{prefix}-{n}".encode(),
                             value=encode(transaction(f"{prefix}-{n}", phone_for(n), CAMPAIGNS[0], n=n)))
            producer.poll(0)
        producer.flush(30)
        wait_until(lambda: sum(delivered_phones(log).values()) >= count, 60, "every event delivered")
        assert replica.terminate() == 0, replica.log_tail()
        requests = simulator.state.requests.records()

    phones = delivered_phones(log)
    assert len(phones) == count and max(phones.values()) == 1
    accepted = [r for r in requests if r["http_status"] == 200]
    assert len(accepted) == len(requests)  # no 429: the limiter guards every window
    times = sorted(r["clock_ns"] for r in accepted)
    for window in windows:
        assert violations(times, window.limit, window.period_ms * 1_000_000) == 0, window
    # Paced: about one request per pace over the trickle (plus the first, and the last that
    # carries the tail), not one per linger; so each carries several recipients.
    assert len(accepted) <= SECONDS * 1000 / PACE_MS + 3, [r["recipients"] for r in accepted]
    assert count / len(accepted) >= 10

