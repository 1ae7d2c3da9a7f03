"""Fetching pauses per partition, and librdkafka keeps a partition's pause across an unassign and
an assign (only a resume clears it; seen on librdkafka 2.16 through a cooperative rebalance). A
partition revoked while the replica was paused and assigned back after the buffers drained was
never fetched again: nothing tracked, so no lag and no stuck alarm either."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import TopicPartition

from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.delivery.batching import Batcher
from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.outcome import Outcome
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.samples import default_schema, encode, phone_for, transaction
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.pipeline import Pipeline
from tests.support.fake_kafka import CAMPAIGN, FakeConsumer, FakeMessage, FakeProducer, IdleSender

MAPPER = DeclarativeMapper.from_file(default_mapping_file())


def good(partition: int, offset: int) -> FakeMessage:
    record = transaction(f"e-{partition}-{offset}", phone_for(offset), CAMPAIGN, n=offset)
    return FakeMessage("t", partition, offset, encode(record), key=f"e-{partition}-{offset}".encode())


class PerPartitionConsumer(FakeConsumer):
    """librdkafka's pause: per partition, kept across unassign and assign."""

    def __init__(self) -> None:
        super().__init__()
        self.assigned: set[tuple[str, int]] = set()
        self.paused_tps: set[tuple[str, int]] = set()  # the pause flag of each partition object

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        out, rest = [], []
        for m in self.queue:
            tp = (m.topic(), m.partition())
            if tp in self.assigned and tp not in self.paused_tps and len(out) < num_messages:
                out.append(m)
            else:
                rest.append(m)
        self.queue = rest
        return out

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def pause(self, partitions: list[Any]) -> None:
        self.paused_tps |= {(p.topic, p.partition) for p in partitions}

    def resume(self, partitions: list[Any]) -> None:
        self.paused_tps -= {(p.topic, p.partition) for p in partitions}

    def incremental_assign(self, partitions: list[Any]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in partitions}

    def incremental_unassign(self, partitions: list[Any]) -> None:
        self.assigned -= {(p.topic, p.partition) for p in partitions}


def test_a_partition_revoked_while_paused_and_assigned_back_is_fetched_again() -> None:
    consumer, producer = PerPartitionConsumer(), FakeProducer()
    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", max_buffered_events=4,
                      revoke_grace_ms=0)
    lanes = Lanes({"default": Lane(Batcher(5000, 60.0), IdleSender())}, route=lambda c: "default")  # type: ignore[arg-type]
    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=producer,
                    decoder=SchemalessDecoder(default_schema()), mapper=MAPPER,
                    delivery_factory=lambda report: lanes, metrics=Metrics(), health=Health(joined=True))
    loop._on_assign(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])
    consumer.queue = [good(0, 0), good(0, 1), good(1, 0), good(1, 1)]
    for _ in range(3):
        loop._step()
    assert loop._paused and consumer.paused_tps == {("t", 0), ("t", 1)}  # buffers full: both paused

    # A cooperative rebalance takes partition 1 away while the replica is paused.
    loop._on_revoke(consumer, [TopicPartition("t", 1)])

    # Partition 0's events are delivered: the buffers drain and fetching resumes.
    events = loop.delivery.drop(lambda e: True)
    loop.outcomes.put(Outcome("delivered", events, accepted_at_ms=int(time.time() * 1000)))
    loop._step()
    assert not loop._paused

    # A later rebalance gives partition 1 back (its other owner left).
    loop._on_assign(consumer, [TopicPartition("t", 1)])
    consumer.queue = [good(1, 0), good(1, 1), good(0, 2)]
    for _ in range(5):
        loop._step()
    fetched = {(e.tp, e.offset) for e in loop.delivery.drop(lambda e: True)}
    assert (("t", 0), 2) in fetched
    assert (("t", 1), 0) in fetched, f"partition 1 stays paused: {consumer.paused_tps}; fetched {sorted(fetched)}"
