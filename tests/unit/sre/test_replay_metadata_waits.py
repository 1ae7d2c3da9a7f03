"""`replay`'s metadata requests show progress (found by review, sre): the DLQ's partitions, its id,
the group's positions, the end offsets and a target's partitions each waited up to 10 s with
nothing said (one line before some of them, none during): on a slow broker, a silent run an SRE
kills. Each now says what it waits for every METADATA_NOTE_S while it has no answer."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import consumer.sre.dlq_read as dlq_read
from consumer.config.settings import Settings
from consumer.sre.dlq_read import Filters, TopicError
from consumer.sre.replay import ReplayPlan, run_replay
from tests.unit.sre.fake_dlq import DLQ, Cluster, FakeDlqConsumer, install
from tests.unit.sre.test_replay_run import dlq_records


class _SlowMetadata(FakeDlqConsumer):
    """Answers each metadata request only after `slow_s`, as a slow broker: a request given less
    time times out as librdkafka's do."""

    slow_s = 0.5

    def _wait(self, timeout: float) -> None:
        if timeout < self.slow_s:
            time.sleep(timeout)
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        time.sleep(self.slow_s)

    def list_topics(self, topic: str, timeout: float = 0) -> Any:
        self._wait(timeout)
        return super().list_topics(topic, timeout)

    def committed(self, tps: list[TopicPartition], timeout: float = 0) -> list[TopicPartition]:
        self._wait(timeout)
        return super().committed(tps, timeout)

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0) -> tuple[int, int]:
        self._wait(timeout)
        return super().get_watermark_offsets(tp, timeout)


def test_each_slow_metadata_request_says_what_it_waits_for_every_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.replay as replay

    cluster = Cluster(dlq_records(1))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_consumer", lambda settings, **extra: _SlowMetadata(cluster, extra["group.id"]))
    monkeypatch.setattr(dlq_read, "METADATA_NOTE_S", 0.1)
    notes: list[str] = []
    summary = run_replay(Settings(kafka_topics=["transactions"]), ReplayPlan(DLQ, "g", Filters(),
                                                                             to_topic="transactions"),
                         waiting=notes.append)
    assert summary.replayed == 1
    for what in (f"partitions of topic {DLQ}", "committed positions of the group", "end offsets of partition 0",
                 "partitions of topic transactions"):
        said = [note for note in notes if what in note]
        assert len(said) >= 3, (what, notes)  # 0.5 s in slices of 0.1 s: one a slice, not one for the whole wait


def test_a_metadata_request_still_gives_up_after_its_whole_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(dlq_records(1))
    consumer = _SlowMetadata(cluster, "g")
    consumer.slow_s = 60.0
    monkeypatch.setattr(dlq_read, "METADATA_NOTE_S", 0.1)
    monkeypatch.setattr(dlq_read, "METADATA_TIMEOUT_S", 0.45)
    notes: list[str] = []
    started = time.monotonic()
    with pytest.raises(TopicError, match="cannot reach Kafka"):
        dlq_read.describe_topic(consumer, DLQ, "kafka:9092", "hint", note=notes.append)
    assert time.monotonic() - started < 1.0
    assert len(notes) >= 3, notes
    assert all("partitions of topic" in note and "waiting for Kafka" in note for note in notes), notes




def test_reading_the_dlqs_id_says_what_it_waits_for_and_gives_up_after_its_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import Future

    from consumer.sre import topic_identity

    class NeverAnswers:
        def describe_topics(self, topics: object, request_timeout: float = 0) -> dict[str, Future[Any]]:
            return {DLQ: Future()}

    monkeypatch.setattr(topic_identity, "make_admin", lambda settings: NeverAnswers())
    monkeypatch.setattr(topic_identity, "NOTE_EVERY_S", 0.1)
    monkeypatch.setattr(topic_identity, "DESCRIBE_TIMEOUT_S", 0.45)
    notes: list[str] = []
    started = time.monotonic()
    assert topic_identity.topic_id_of(Settings(), DLQ, notes.append) is None  # offsets alone, as before
    assert time.monotonic() - started < 1.0
    assert len(notes) >= 3 and all(f"the id of topic {DLQ}: waiting for Kafka" in note for note in notes), notes
