"""The local stack is the real thing: partitions, a rebalancing group, Lua in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer

from tests.conftest import Stack, unique
from tests.support.kafka import headers_of, produce, produce_each, read_all


def test_multi_partition_topic_spreads_keys(stack: Stack, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=6)
    produce(stack.bootstrap, topic, ((f"k{i}".encode(), b"v") for i in range(600)))
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": unique("g"),
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    partitions: set[int] = set()
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 600 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            partitions.add(message.partition())
            seen += 1
    consumer.close()
    assert seen == 600
    assert partitions == set(range(6))


def test_group_rebalances_between_two_consumers(stack: Stack, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=6)
    group = unique("g")
    assigned: dict[str, set[int]] = {"a": set(), "b": set()}

    def make(name: str) -> Consumer:
        def on_assign(consumer: Consumer, partitions: list) -> None:  # type: ignore[type-arg]
            assigned[name] |= {p.partition for p in partitions}

        def on_revoke(consumer: Consumer, partitions: list) -> None:  # type: ignore[type-arg]
            assigned[name] -= {p.partition for p in partitions}

        consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": group,
                             "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 10000})
        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        return consumer

    first = make("a")
    deadline = time.monotonic() + 60
    while len(assigned["a"]) < 6 and time.monotonic() < deadline:
        first.poll(0.2)
    assert assigned["a"] == set(range(6))
    second = make("b")
    while (not assigned["b"] or assigned["a"] & assigned["b"] or len(assigned["a"] | assigned["b"]) < 6) \
            and time.monotonic() < deadline:
        first.poll(0.1)
        second.poll(0.1)
    assert assigned["a"] and assigned["b"]
    assert assigned["a"].isdisjoint(assigned["b"])
    assert assigned["a"] | assigned["b"] == set(range(6))
    second.close()
    while len(assigned["a"]) < 6 and time.monotonic() < deadline:
        first.poll(0.2)
    assert assigned["a"] == set(range(6))
    first.close()


def test_records_with_headers_of_their_own_go_through_one_producer(stack: Stack,
                                                                     new_topic: Callable[..., str]) -> None:
    # test_fleet.py's replays, one producer each, took 0.5 s a record (an idempotent producer's
    # first flush waits for its producer id): 260 of them stalled the test for 130 s.
    topic = new_topic()
    records = [(f"k{i}".encode(), b"v", [("n", str(i).encode())]) for i in range(200)]
    started = time.monotonic()
    assert produce_each(stack.bootstrap, topic, records) == 200
    assert time.monotonic() - started < 20  # one producer per record: 100 s
    assert sorted((m.key(), headers_of(m)["n"]) for m in read_all(stack.bootstrap, topic)) == \
        sorted((k, h[0][1].decode()) for k, _, h in records)


def test_redis_runs_lua(redis_client) -> None:  # type: ignore[no-untyped-def]
    script = redis_client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1]) * 2")
    assert script(keys=["{t}:n"], args=[21]) == 42
