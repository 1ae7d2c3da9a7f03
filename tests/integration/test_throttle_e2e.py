"""Three consumer replicas, a backlog far larger than Pisano's budget, Redis restarted midway.

The simulator enforces the same (scaled-down) windows exactly. The fleet must send no request
without a slot (no 429, no window violated in the simulator's own request log), pack requests
full while they wait for their slots, deliver every event exactly once, and resume by itself
after Redis comes back.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.ingest.samples import transactions
from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack, localstack, unique
from tests.integration.test_throttle_fleet import violations
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, produce
from tests.support.scenario import CAMPAIGNS, delivered_phones

WINDOWS = "4/1s,8/5s"
TOKEN = "throttle-e2e-token"
EVENTS = 150_000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fleet_stays_inside_the_windows_through_a_redis_restart(
        local_stack: Stack, new_topic: Callable[..., str], tmp_path: Path, redis_client,  # type: ignore[no-untyped-def]
        processes) -> None:  # type: ignore[no-untyped-def]
    stack = local_stack
    topic, dlq, group = new_topic(partitions=6), new_topic("dlq"), unique("g")
    produce(stack.bootstrap, topic, transactions(EVENTS, CAMPAIGNS, prefix=unique("t")))
    windows = parse_rate_limits(WINDOWS)
    log = tmp_path / "deliveries.jsonl"
    config = SimulatorConfig(tokens=frozenset({TOKEN}), campaigns=frozenset(CAMPAIGNS), rate_limits=windows,
                             delivery_log_path=log, memory_log_recipients=0)
    with SimulatorServer(config) as simulator:
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                           pisano_url=simulator.url, token=TOKEN, PISANO_RATE_LIMITS=WINDOWS,
                           BATCH_MAX_WAIT_MS=1000, THROTTLE_HORIZON_MS=3000,
                           # Below the default 500 ms to keep the run short, but not so low that a
                           # POST held up on a loaded 2-core runner after its lateness check (up to
                           # half the margin is allowed before the check) arrives inside a later
                           # slot's window: at 150 ms a run beside a unit suite saw 2 simulator 429s.
                           PISANO_RATE_MARGIN_MS=250)
        replicas = [ConsumerProcess(env, tmp_path / f"replica-{i}.log").start() for i in range(3)]
        processes.extend(replicas)

        wait_until(lambda: sum(delivered_phones(log).values()) >= EVENTS * 0.3, 120, "30% delivered")
        localstack.stop_redis()  # graceful: Redis writes its append-only file, as a restart would
        outage_started = len(simulator.state.requests.records())
        wait_until(lambda: any(r.metric("pisano_sms_redis_errors_total") > 0 for r in replicas), 30,
                   "replicas noticed Redis is gone")
        sent_during_outage = len(simulator.state.requests.records()) - outage_started
        localstack.start_redis()

        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 180, "everything committed")
        for replica in replicas:
            assert replica.terminate() == 0, replica.log_tail()
        requests = simulator.state.requests.records()
        throttled = simulator.state.stats_dict()["throttled"]["total"]

    assert throttled == 0
    accepted = [r for r in requests if r["http_status"] == 200]
    times = sorted(r["clock_ns"] for r in accepted)
    for window in windows:
        assert violations(times, window.limit, window.period_ms * 1_000_000) == 0, window
    # A request in flight when Redis went away may finish; nothing new may start without a slot.
    assert sent_during_outage <= 3 * 4

    phones = delivered_phones(log)
    assert len(phones) == EVENTS and max(phones.values()) == 1

    sizes = sorted(r["recipients"] for r in accepted)
    # The backlog waits for slots, so requests leave full. Partial ones are each replica's
    # remainder of each campaign, and the odd one at the start or around the Redis outage.
    assert statistics.median(sizes) == 5000, sizes
    assert len(sizes) <= math.ceil(EVENTS / 5000) + 3 * len(CAMPAIGNS) + 3, sizes
    print(json.dumps({"requests": len(accepted), "mean": round(statistics.mean(sizes)),
                      "partial": [s for s in sizes if s < 4500], "sent_during_outage": sent_during_outage}))
