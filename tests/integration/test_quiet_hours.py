"""Issue 13, point 2: quiet hours end to end, with two replicas and the simulator on one clock.

The consumers (SEND_WINDOW_CLOCK=redis) and the simulator (`SharedClock`) read the same shared
clock in Redis (consumer/state/clock.py); the test moves it from 03:00 to 09:00 in Istanbul.
While the window is closed no request reaches the simulator and the replicas hold the events
(`pisano_sms_send_window_held_events`), uncommitted and ready. At the opening the backlog drains
in full batches (each campaign's events share a key, so one replica holds them all: requests of
exactly BATCH_MAX_RECIPIENTS but the last), inside compressed throttle windows the simulator
enforces: no 429. An event that grew older than MAX_EVENT_AGE while held ends as `expired`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from consumer.config.send_window import parse_send_window
from consumer.ingest.samples import encode, phone_for, transaction
from consumer.simulator import SimulatorConfig, SimulatorServer
from consumer.simulator.clock import SharedClock
from consumer.state.clock import RedisWallClock, clock_offset_to
from consumer.state.redis import Keys
from tests.conftest import Stack, unique
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, produce, read_all
from tests.support.runs import RUN_TOKEN
from tests.support.scenario import CAMPAIGNS, delivered_phones

WINDOW = "09:00-21:00 Europe/Istanbul"
ISTANBUL = ZoneInfo("Europe/Istanbul")
RATE_LIMITS = "3/1s,6/4s"
BATCH = 10
PER_CAMPAIGN = 25


def istanbul_ms(hour: int) -> int:
    today = datetime.now(ISTANBUL).date()
    return int(datetime(today.year, today.month, today.day, hour, tzinfo=ISTANBUL).timestamp() * 1000)


@pytest.fixture
def simulator(redis_client: Any, tmp_path: Path) -> Iterator[SimulatorServer]:
    config = SimulatorConfig(tokens=frozenset({RUN_TOKEN}), any_campaign=True, delivery_log_path=tmp_path / "d.jsonl",
                             rate_limits=SimulatorConfig.from_options(rate_limits=RATE_LIMITS).rate_limits)
    wall = RedisWallClock(redis_client, Keys("pisano-sms"), refresh_s=0.05)
    try:
        with SimulatorServer(config, clock=SharedClock(wall)) as server:
            yield server
    finally:
        wall.close()


def test_held_outside_the_window_then_drained_in_full_batches_at_opening(
        stack: Stack, redis_client: Any, simulator: SimulatorServer, new_topic: Callable[..., str],
        processes: list[ConsumerProcess], tmp_path: Path) -> None:
    keys = Keys("pisano-sms")
    clock_offset_to(redis_client, keys, istanbul_ms(3))  # three in the morning: quiet
    topic, dlq, group = new_topic(partitions=4), new_topic("dlq"), unique("g")
    env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                       pisano_url=simulator.url, token=RUN_TOKEN, SEND_WINDOW=WINDOW, SEND_WINDOW_CLOCK="redis",
                       PISANO_RATE_LIMITS=RATE_LIMITS, PISANO_RATE_MARGIN_MS=50, BATCH_MAX_RECIPIENTS=BATCH,
                       MAX_EVENT_AGE="25s", STUCK_RECORD_MS=10_000, PISANO_BACKOFF_BASE_MS=50,
                       PISANO_BACKOFF_MAX_MS=500)
    replicas = [ConsumerProcess(env, tmp_path / f"r{i}.log").start() for i in range(2)]
    processes.extend(replicas)
    for replica in replicas:
        replica.wait_ready()

    prefix = unique("quiet")
    campaigns = CAMPAIGNS[:2]
    # One event paid 12 s ago: fresh when read, older than MAX_EVENT_AGE by the opening. In a
    # campaign of its own: ended at admission, it would leave its batch one short.
    stale_ms = int(time.time() * 1000) - 12_000
    produce(stack.bootstrap, topic, [(CAMPAIGNS[2].encode(), encode(transaction(f"{prefix}-old", phone_for(999),
                                                                                CAMPAIGNS[2], n=999)))],
            timestamp_ms=stale_ms)
    numbers = range(2 * PER_CAMPAIGN)
    produce(stack.bootstrap, topic, [(campaigns[n % 2].encode(),
                                      encode(transaction(f"{prefix}-{n}", phone_for(n), campaigns[n % 2], n=n)))
                                     for n in numbers])
    produced_at = time.monotonic()
    total = 2 * PER_CAMPAIGN + 1

    # Closed: every event held (the gauge, refreshed every 5 s), nothing sent, nothing committed,
    # and, held for longer than STUCK_RECORD_MS, not stuck: both replicas ready.
    wait_until(lambda: sum(r.metric("pisano_sms_send_window_held_events") for r in replicas) == total, 30,
               "every event held by the closed window")
    assert sum(r.metric("pisano_sms_send_window_open") for r in replicas) == 0
    assert simulator.state.stats.as_dict()["requests"]["total"] == 0
    assert not all_committed(stack.bootstrap, group, topic)
    wait_until(lambda: time.monotonic() - produced_at > 14, 30, "held longer than STUCK_RECORD_MS")
    for replica in replicas:
        assert httpx.get(f"{replica.url}/readyz", timeout=5).status_code == 200, replica.log_tail()
        assert replica.metric("pisano_sms_oldest_unfinished_record_age_seconds") < 10
    wait_until(lambda: time.time() * 1000 - stale_ms > 26_000, 30, "the old event past MAX_EVENT_AGE")
    assert simulator.state.stats.as_dict()["requests"]["total"] == 0

    opening = istanbul_ms(9)
    clock_offset_to(redis_client, keys, opening)
    wait_until(lambda: all_committed(stack.bootstrap, group, topic), 60, "every record has an outcome")
    metrics = [r.metrics() for r in replicas]
    for replica in replicas:
        assert replica.terminate() == 0, replica.log_tail()
    assert read_all(stack.bootstrap, dlq, expected=0) == []

    requests = simulator.state.requests.records()
    assert {r["http_status"] for r in requests} == {200}, Counter(r["http_status"] for r in requests)
    assert simulator.state.stats.as_dict()["throttled"]["total"] == 0
    window = parse_send_window(WINDOW)
    assert all(r["time_ms"] >= opening and window.is_open(r["time_ms"]) for r in requests)
    for campaign in campaigns:
        # The sender threads take them at once: in any order, all full but the last.
        sizes = sorted((r["recipients"] for r in requests if r["campaign_id"] == campaign), reverse=True)
        assert sizes == [BATCH, BATCH, PER_CAMPAIGN - 2 * BATCH], (campaign, sizes)
    assert not [r for r in requests if r["campaign_id"] == CAMPAIGNS[2]]
    # A backlog, not a trickle: the four full batches take the earliest slots the windows allow
    # (3/1s: the fourth about a second after the first, whichever campaigns the first slots go
    # to), where pacing (PISANO_PACE_SHARE, on by default) would space them 844 ms apart, the
    # fourth 2.5 s after the first.
    full = sorted(r["clock_ns"] for r in requests if r["recipients"] == BATCH)
    assert len(full) == 4 and full[-1] - full[0] < 1_500_000_000, sorted(
        ((r["clock_ns"] - full[0]) // 1_000_000, r["recipients"], r["campaign_id"][:4]) for r in requests)
    delivered = delivered_phones(simulator.state.config.delivery_log_path)  # type: ignore[arg-type]
    assert set(delivered) == {phone_for(n) for n in numbers} and max(delivered.values()) == 1
    assert sum(m.get("pisano_sms_events_filtered_total{reason=expired}", 0) for m in metrics) >= 1
    assert any(m.get("pisano_sms_send_window_open{destination=default,window=destination}") == 1 for m in metrics)


def test_a_malformed_window_refuses_to_start(stack: Stack, tmp_path: Path) -> None:
    env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic="t", dlq="d", group="g",
                       pisano_url="http://127.0.0.1:9", token=RUN_TOKEN, SEND_WINDOW="Mon-Fri 9-21 Europe/Istanbul")
    process = ConsumerProcess(env, tmp_path / "bad.log").start()
    deadline = time.monotonic() + 30
    while process.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process.alive()
    assert "is not a range HH:MM-HH:MM such as 09:00-21:00" in process.log_tail()
