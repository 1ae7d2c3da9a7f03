"""The pipeline end to end on real Kafka, Redis and the simulator, one replica."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack, unique
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, headers_of, produce, read_all
from tests.support.scenario import delivered_phones, mixed_traffic

TOKEN = "test-token-5f2a9c"


@pytest.fixture
def simulator(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = SimulatorConfig(tokens=frozenset({TOKEN}), any_campaign=True, rate_limits=(),
                             delivery_log_path=tmp_path / "deliveries.jsonl")
    with SimulatorServer(config) as server:
        yield server


def test_one_replica_delivers_each_event_once_and_dead_letters_the_rest(
        stack: Stack, new_topic: Callable[..., str], simulator: SimulatorServer, tmp_path: Path,
        redis_client) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = new_topic(partitions=3), new_topic("dlq"), unique("g")
    traffic = mixed_traffic(3000)
    produce(stack.bootstrap, topic, traffic.records)
    env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                       pisano_url=simulator.url, token=TOKEN)
    replica = ConsumerProcess(env, tmp_path / "consumer.log").start()
    ends = end_offsets(stack.bootstrap, topic)
    wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 120,
               "offsets committed to the end of every partition")
    assert replica.metric("pisano_sms_duplicates_skipped_total") == traffic.duplicates
    assert replica.terminate() == 0

    phones = delivered_phones(tmp_path / "deliveries.jsonl")
    assert set(phones) == traffic.valid_phones
    assert max(phones.values()) == 1
    dead = read_all(stack.bootstrap, dlq, expected=sum(traffic.invalid.values()))
    assert Counter(headers_of(m)["dlq.reason"] for m in dead) == traffic.invalid
    for message in dead:
        headers = headers_of(message)
        assert headers["dlq.original.topic"] == topic
        assert int(headers["dlq.original.offset"]) >= 0
        assert headers["dlq.replays"] == "0"
