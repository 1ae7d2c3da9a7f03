"""Kafka helpers for tests: topics, producing events, reading topics and committed offsets."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.ingest.kafka import produce_waiting


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config={"max.message.bytes": "16777216"})])
    for future in futures.values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # metadata reaches the broker's cache a moment later
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if topic and topic.error is None and len(topic.partitions) == partitions:
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} not visible")


Headers = list[tuple[str, bytes]]


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
            headers: Headers | None = None, partition: int | None = None,
            timestamp_ms: int | None = None) -> int:
    return produce_each(bootstrap, topic, ((key, value, headers) for key, value in records),
                        partition=partition, timestamp_ms=timestamp_ms)


def produce_each(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None, Headers | None]],
                 partition: int | None = None, timestamp_ms: int | None = None) -> int:
    """`produce`, each record with headers of its own (signed replays), all through one producer.
    Not one producer per record: an idempotent producer's first flush waits about 0.5 s for its
    producer id, so 260 replays one by one took 130 s (test_fleet.py)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         "message.max.bytes": 16 * 1024 * 1024, "batch.num.messages": 10000})
    count = 0
    where: dict[str, Any] = {} if partition is None else {"partition": partition}
    if timestamp_ms is not None:  # CreateTime as the producer says, e.g. a record from last week
        where["timestamp"] = timestamp_ms
    for key, value, headers in records:
        produce_waiting(producer, topic, key=key, value=value, headers=headers, **where)
        count += 1
    if producer.flush(60) != 0:
        raise RuntimeError("records not acknowledged")
    return count


def read_all(bootstrap: str, topic: str, expected: int | None = None, timeout: float = 60.0) -> list[Any]:
    """Every record of `topic` (until `expected` were read, or the end of every partition)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    admin_topic = consumer.list_topics(topic, timeout=10).topics[topic]
    partitions = [TopicPartition(topic, p, 0) for p in admin_topic.partitions]
    consumer.assign(partitions)
    ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
    records: list[Any] = []
    done: set[int] = {p for p, end in ends.items() if end == 0}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if expected is not None and len(records) >= expected:
                break
            if expected is None and len(done) == len(partitions):
                break
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == message.error()._PARTITION_EOF:
                    done.add(message.partition())
                    continue
                raise KafkaException(message.error())
            records.append(message)
    finally:
        consumer.close()
    return records


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    return {tp.partition: tp.offset for tp in _committed(bootstrap, group, topic)}


def committed_metadata(bootstrap: str, group: str, topic: str) -> dict[int, str | None]:
    """Each partition's committed metadata (the consumer's stamp of the Redis state, or None)."""
    return {tp.partition: tp.metadata for tp in _committed(bootstrap, group, topic)}


def _committed(bootstrap: str, group: str, topic: str) -> list[TopicPartition]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return list(consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10))
    finally:
        consumer.close()


def all_committed(bootstrap: str, group: str, topic: str, ends: dict[int, int] | None = None) -> bool:
    """Every record of the topic (up to `ends`, default the end offsets now) has its offset
    committed by the group. A partition without records has nothing to commit: the consumer
    commits no offset for it (-1001, none), and the producer's sticky partitioner may well
    leave a partition of a small test topic empty."""
    ends = end_offsets(bootstrap, topic) if ends is None else ends
    positions = committed(bootstrap, group, topic)
    return all(positions.get(p) == end or (end == 0 and positions.get(p) == OFFSET_INVALID)
               for p, end in ends.items())


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def headers_of(message: Any) -> dict[str, str]:
    """Header values as text. Spring Kafka's `kafka_dlt-original-partition` / `-offset` /
    `-timestamp` on a dead letter are binary (DLQ_COMPAT_HEADERS): read them from the raw headers."""
    return {k: (v or b"").decode(errors="replace") for k, v in (message.headers() or [])}
