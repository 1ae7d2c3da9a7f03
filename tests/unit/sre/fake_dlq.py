"""A dead-letter topic in memory, as much of confluent_kafka's Consumer and Producer as
consumer.sre.replay uses: `run_replay` end to end without Kafka."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition

from consumer.sre.replay_lock import MemoryLockStore, ReplayLock, lock_key
from tests.unit.sre.test_dlq_filters import FakeMessage

DLQ = "pisano-sms.dlq"


class DlqMessage(FakeMessage):
    def error(self) -> None:
        return None


@dataclass
class Cluster:
    """Topics with one partition each; a group's committed offset of the DLQ."""

    records: list[FakeMessage]  # the DLQ's, partition 0
    topics: set[str] = field(default_factory=lambda: {DLQ, "transactions"})
    committed: dict[str, int] = field(default_factory=dict)  # group -> offset
    committed_metadata: dict[str, str] = field(default_factory=dict)  # group -> the commit's metadata
    topic_id: str | None = None  # the DLQ's id; None: the broker does not say
    published: list[tuple[str, Any, Any, list[tuple[str, bytes | None]]]] = field(default_factory=list)
    # Called with the position at each consume() (an operator's Ctrl-C, say).
    on_read: Callable[[int], None] = lambda offset: None
    batch: int = 2  # records a consume() returns at most
    locks: MemoryLockStore = field(default_factory=MemoryLockStore)  # the replay locks (Redis, for the CLI)
    lock_renew_s: float = 10.0  # how often a run renews its lock

    def consumer(self, group: str) -> FakeDlqConsumer:
        return FakeDlqConsumer(self, group)


class FakeDlqConsumer:
    def __init__(self, cluster: Cluster, group: str) -> None:
        self.cluster, self.group, self.position = cluster, group, 0

    def list_topics(self, topic: str, timeout: float = 0) -> Any:
        known = {topic: SimpleNamespace(error=None, partitions={0: None})} if topic in self.cluster.topics else {}
        return SimpleNamespace(topics=known)

    def committed(self, tps: list[TopicPartition], timeout: float = 0) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.cluster.committed.get(self.group, -1001),
                               metadata=self.cluster.committed_metadata.get(self.group, "")) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0) -> tuple[int, int]:
        return 0, len(self.cluster.records)

    def assign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.position = tp.offset

    def consume(self, count: int, timeout: float = 0) -> list[FakeMessage]:
        self.cluster.on_read(self.position)
        out = []
        while self.position < len(self.cluster.records) and len(out) < min(count, self.cluster.batch):
            out.append(self.cluster.records[self.position])
            self.position += 1
        return out

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        for tp in offsets:
            self.cluster.committed[self.group] = tp.offset
            self.cluster.committed_metadata[self.group] = tp.metadata or ""

    def close(self) -> None:
        pass


class FakeProducer:
    """Acknowledges everything at flush."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pending: list[Callable[[], None]] = []

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        def deliver() -> None:
            self.cluster.published.append((topic, key, value, list(headers or [])))
            on_delivery(None, None)

        self.pending.append(deliver)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        pending, self.pending = self.pending, []
        for deliver in pending:
            deliver()
        return 0


def install(monkeypatch: Any, cluster: Cluster) -> None:
    """Make consumer.sre.replay build its clients on `cluster`."""
    import consumer.sre.replay as replay

    monkeypatch.setattr(replay, "make_consumer", lambda settings, **extra: cluster.consumer(extra["group.id"]))
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: FakeProducer(cluster))
    monkeypatch.setattr(replay, "topic_id_of", lambda settings, topic, note=None: cluster.topic_id)
    import consumer.sre.commands as commands

    monkeypatch.setattr(commands, "open_replay_lock", lambda settings, plan: ReplayLock(
        cluster.locks, lock_key("pisano-sms", plan.source_topic, plan.group), f"{plan.source_topic} with group "
        f"{plan.group}", renew_every_s=cluster.lock_renew_s))


def replay_env(monkeypatch: Any, topics: str = "transactions") -> None:
    """The environment of a `replay` run here: none of this machine's Kafka, DLQ, receipt, horizon
    or signing settings, and these KAFKA_TOPICS."""
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REPLAY_SIGNING_KEY", "REPLAY_SIGNING_KEY_FILE", "DLQ_TOPIC",
                 "OUTCOME_TOPIC", "DEDUP_HORIZON_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_TOPICS", topics)
