"""The poll loop reads its group's stamps of the Redis state before it consumes, and stamps every
commit (consumer/state/witness.py), on in-memory Kafka."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.config.resources import default_mapping_file
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.samples import default_schema
from consumer.pipeline import Pipeline
from consumer.state.origins import DEDUP, Buckets, MemoryOrigins, OriginWatch
from consumer.state.witness import CommittedStamps
from tests.support.fake_kafka import FakeConsumer, pipeline
from tests.unit.state.test_origins import DEDUP_TAGS, LAYOUT, Clock
from tests.unit.state.test_witness import numbered_origins  # noqa: F401 (autouse)


class CommittedOffsets(dict[tuple[str, int], int]):
    """The fake's committed offsets (a dict, as the other tests read them), callable as
    `Consumer.committed`, with each commit's metadata."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata: dict[tuple[str, int], str | None] = {}
        self.fail: KafkaException | None = None

    def __call__(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.fail is not None:
            raise self.fail
        found = []
        for p in partitions:
            offset, metadata = self.get((p.topic, p.partition), -1001), self.metadata.get((p.topic, p.partition))
            found.append(TopicPartition(p.topic, p.partition, offset) if metadata is None
                         else TopicPartition(p.topic, p.partition, offset, metadata=metadata))
        return found


class StampingConsumer(FakeConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.committed = CommittedOffsets()

    def list_topics(self, timeout: float) -> Any:
        return SimpleNamespace(topics={"t": SimpleNamespace(partitions={0: None, 1: None}),
                                       "other": SimpleNamespace(partitions={0: None})})

    def commit(self, offsets: list[Any], asynchronous: bool) -> list[Any]:
        for tp in offsets:
            self.committed.metadata[(tp.topic, tp.partition)] = tp.metadata
        return super().commit(offsets, asynchronous)


def stamped(store: MemoryOrigins, clock: Clock) -> tuple[Pipeline, StampingConsumer, OriginWatch]:
    loop, _, _ = pipeline(SchemalessDecoder(default_schema()), DeclarativeMapper.from_file(default_mapping_file()))
    consumer = StampingConsumer()
    loop.consumer = consumer
    watch = OriginWatch(store, [lambda: Buckets(DEDUP, DEDUP_TAGS, LAYOUT)], clock=clock)
    loop.stamps = CommittedStamps(watch)
    return loop, consumer, watch


def commit(loop: Pipeline, offset: int) -> None:
    epoch = loop.tracker.track(("t", 0), offset)
    loop.tracker.finish(("t", 0), offset, epoch)
    loop._commit()


def test_a_loss_while_the_fleet_was_stopped_is_said_by_the_next_replica_through_its_commits() -> None:
    """Before: the commits carried nothing, and a replica starting on new origins said nothing."""
    store, clock = MemoryOrigins(), Clock()
    first, kafka, watch = stamped(store, clock)
    first._read_stamps()  # a new group: nothing to compare
    for _ in range(3):
        assert watch.check() == []
    commit(first, 0)
    assert kafka.committed.metadata[("t", 0)] == watch.stamp is not None
    store.lose()  # the fleet stopped; Redis restarted without its data

    second, _, later = stamped(store, clock)
    second.consumer = kafka
    second._read_stamps()
    losses = later.check()
    assert [(loss.state, loss.lost, loss.witnessed) for loss in losses] == [(DEDUP, 64, True)]


def test_commits_before_the_first_check_keep_the_stamp_they_replace() -> None:
    store, clock = MemoryOrigins(), Clock()
    loop, kafka, watch = stamped(store, clock)
    kafka.committed.metadata[("t", 0)] = "pisano-sms/1 as it was"
    loop._read_stamps()
    commit(loop, 0)
    assert kafka.committed.metadata[("t", 0)] == "pisano-sms/1 as it was"
    watch.check()
    commit(loop, 1)
    assert kafka.committed.metadata[("t", 0)] == watch.stamp != "pisano-sms/1 as it was"


def test_a_group_that_cannot_be_read_is_said_and_consuming_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = MemoryOrigins(), Clock()
    loop, kafka, watch = stamped(store, clock)
    kafka.committed.fail = KafkaException(KafkaError(KafkaError._TIMED_OUT))
    with caplog.at_level(logging.WARNING):
        loop._read_stamps()
    assert "could not read the consumer group's committed offsets" in caplog.text
    assert watch.check() == [] and watch.stamp is not None


@pytest.mark.parametrize("how", ["callback", "partition", "raised"])
def test_a_broker_that_refuses_the_stamp_gets_commits_without_it(how: str, caplog: pytest.LogCaptureFixture) -> None:
    """A broker with a small offset.metadata.max.bytes refuses the whole commit: without this, no
    offset would ever be committed again."""
    store, clock = MemoryOrigins(), Clock()
    loop, kafka, watch = stamped(store, clock)
    loop._read_stamps()
    watch.check()
    too_large = KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE)
    with caplog.at_level(logging.WARNING):
        if how == "raised":
            def refuse(offsets: list[Any], asynchronous: bool) -> list[Any]:
                raise KafkaException(too_large)
            kafka.commit = refuse  # type: ignore[method-assign]
            commit(loop, 0)
        else:
            # (a TopicPartition's error cannot be set from Python)
            refused = SimpleNamespace(topic="t", partition=0, offset=1, error=too_large if how == "partition" else None)
            loop._on_commit(too_large if how == "callback" else None, [refused])  # type: ignore[list-item]
    assert "offset.metadata.max.bytes" in caplog.text
    assert loop.stamps is not None and loop.stamps.metadata(("t", 0)) is None


class Undecodable:
    """A committed partition as confluent-kafka 2.16 gives it when another tool committed metadata
    it cannot decode (seen with one or two bytes, such as b"\\xff" or "é"): reading `metadata`
    raises UnicodeDecodeError."""

    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition, self.offset, self.error = topic, partition, 5, None

    @property
    def metadata(self) -> str:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


def test_metadata_that_cannot_be_decoded_is_passed_over_and_consuming_goes_on() -> None:
    """Before: the UnicodeDecodeError left `run` before it subscribed, at every start: the group
    would never consume again until that commit was replaced."""
    store, clock = MemoryOrigins(), Clock()
    first, kafka, watch = stamped(store, clock)
    first._read_stamps()
    for _ in range(3):
        watch.check()
    commit(first, 0)
    store.lose()
    second, _, later = stamped(store, clock)
    second.consumer = kafka
    read = kafka.committed.__call__

    def with_undecodable(partitions: list[TopicPartition], timeout: float) -> list[Any]:
        return [Undecodable(p.topic, p.partition) if p.partition == 1 else p for p in read(partitions, timeout)]

    kafka.committed = with_undecodable  # type: ignore[assignment,method-assign]
    second._read_stamps()
    assert [(loss.state, loss.witnessed) for loss in later.check()] == [(DEDUP, True)]  # partition 0's stamp
    assert second.stamps is not None and second.stamps.metadata(("t", 1)) == later.stamp


@pytest.mark.parametrize("how", ["raised", "partition"])
def test_a_revocation_commit_refused_for_its_stamp_is_made_again_without_it(how: str) -> None:
    """The commit of a partition given up (and the last one at a stop) is synchronous and not
    sent again: refused for its stamp, the next owner would read the partition's tail again."""
    store, clock = MemoryOrigins(), Clock()
    loop, kafka, watch = stamped(store, clock)
    loop._read_stamps()
    watch.check()
    too_large = KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE)
    real = kafka.commit

    def refuse_stamped(offsets: list[Any], asynchronous: bool) -> list[Any]:
        if any(tp.metadata for tp in offsets):
            if how == "raised":
                raise KafkaException(too_large)
            # (a TopicPartition's error cannot be set from Python)
            return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=tp.offset, error=too_large)
                    for tp in offsets]
        return real(offsets, asynchronous)

    kafka.commit = refuse_stamped  # type: ignore[method-assign]
    epoch = loop.tracker.track(("t", 0), 7)
    loop.tracker.finish(("t", 0), 7, epoch)
    loop._commit(sync=True, tps=[("t", 0)], all_known=True)
    assert kafka.committed[("t", 0)] == 8 and kafka.committed.metadata[("t", 0)] is None


def test_a_pattern_subscription_reads_the_stamps_of_the_topics_it_matches() -> None:
    """Before: `^...` in KAFKA_TOPICS named no topic, so no stamp was read, silently."""
    store, clock = MemoryOrigins(), Clock()
    loop, kafka, _ = stamped(store, clock)
    loop.settings = loop.settings.model_copy(update={"kafka_topics": ["^o.h", "^[unreadable"]})
    kafka.committed.metadata[("other", 0)] = "pisano-sms/1 read"
    kafka.committed.metadata[("t", 0)] = "pisano-sms/1 not subscribed"
    loop._read_stamps()
    assert loop.stamps is not None
    assert loop.stamps.metadata(("other", 0)) == "pisano-sms/1 read"
    assert loop.stamps.metadata(("t", 0)) is None
