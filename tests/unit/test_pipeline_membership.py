"""A Kafka consumer that stays outside its group is replaced (consumer/ingest/membership.py).

Seen in CI after a broker restart: the session timed out, the assignment was lost, and the
client never joined again (no coordinator found, no assignment for 80 s) while the broker served
the group to other clients. The replica consumed nothing and reported nothing."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.delivery.batching import Batcher
from consumer.delivery.lanes import Lane, Lanes
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.membership import GroupWatch, rejoin_limit_s
from consumer.ingest.samples import default_schema
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.pipeline import Pipeline
from tests.support.fake_kafka import FakeConsumer, FakeProducer, IdleSender

KAFKA = {"session.timeout.ms": "10000", "max.poll.interval.ms": "20000"}
LIMIT_S = 40.0  # 20 s + 2 x 10 s


class GroupConsumer(FakeConsumer):
    """Subscribes, closes, and calls back as confluent-kafka does (the consumer as first argument)."""

    def __init__(self, on_commit: Any) -> None:
        super().__init__()
        self.on_commit = on_commit
        self.callbacks: dict[str, Any] = {}
        self.closed = threading.Event()
        self.member: str | None = "m-1"

    def memberid(self) -> str | None:
        return self.member

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        raise AssertionError("asked the client outside its group: it may be the one that hangs")

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def incremental_assign(self, partitions: list[Any]) -> None: ...

    def incremental_unassign(self, partitions: list[Any]) -> None: ...

    def close(self) -> None:
        self.closed.set()


class TopicsProducer(FakeProducer):
    """Answers metadata requests with `topics` (the producer: a client that works)."""

    def __init__(self) -> None:
        super().__init__()
        self.topics = {"t"}

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        partitions = {0: object()}
        return SimpleNamespace(topics={name: SimpleNamespace(partitions=partitions, error=None)
                                       for name in self.topics})


def make_loop() -> tuple[Pipeline, list[GroupConsumer], Metrics, Health]:
    made: list[GroupConsumer] = []

    def factory(on_commit: Any) -> GroupConsumer:
        made.append(GroupConsumer(on_commit))
        return made[-1]

    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", kafka=KAFKA)
    lanes = Lanes({"default": Lane(Batcher(5000, 1.0), IdleSender())}, route=lambda campaign: "default")  # type: ignore[arg-type]
    metrics, health = Metrics(), Health()
    health.kafka_ok = True
    loop = Pipeline(config, consumer_factory=factory, producer=TopicsProducer(),
                    decoder=SchemalessDecoder(default_schema()),
                    mapper=DeclarativeMapper.from_file(default_mapping_file()),
                    delivery_factory=lambda report: lanes, metrics=metrics, health=health)
    return loop, made, metrics, health


def joined_then_lost(loop: Pipeline, consumer: GroupConsumer) -> float:
    loop._subscribe()
    consumer.callbacks["assign"](consumer, [TopicPartition("t", 0)])
    consumer.callbacks["lost"](consumer, [TopicPartition("t", 0)])
    return time.monotonic()


def test_a_consumer_outside_its_group_past_any_rebalance_is_replaced_once_and_the_old_one_closed(
        caplog: pytest.LogCaptureFixture) -> None:
    loop, made, metrics, health = make_loop()
    lost_at = joined_then_lost(loop, made[0])
    assert not health.joined  # out of the group: not ready until the next assignment

    loop._check_membership(lost_at + LIMIT_S - 1)
    assert len(made) == 1, "replaced before a legitimate rebalance could have ended"

    with caplog.at_level(logging.ERROR, logger="consumer.pipeline"):
        loop._check_membership(lost_at + LIMIT_S + 1)
    assert len(made) == 2 and loop.consumer is made[1]
    assert made[1].callbacks, "the new consumer is subscribed"
    assert made[0].closed.wait(5), "the replaced consumer is closed"
    assert metrics.consumer_replaced._value.get() == 1
    assert "not in consumer group" in caplog.text and "replacing the Kafka consumer" in caplog.text

    # The new consumer has the same time to join: not replaced again right away.
    loop._check_membership(time.monotonic() + 1)
    assert len(made) == 2
    made[1].callbacks["assign"](made[1], [])  # joined, with an empty assignment
    assert health.joined
    loop._check_membership(time.monotonic() + 10 * LIMIT_S)
    assert len(made) == 2


def test_nothing_is_replaced_while_kafka_is_unreachable_or_the_consumer_is_in_its_group() -> None:
    loop, made, _, health = make_loop()
    lost_at = joined_then_lost(loop, made[0])
    health.kafka_ok = False  # a new client would not join either
    loop._check_membership(lost_at + 10 * LIMIT_S)
    assert len(made) == 1

    health.kafka_ok = True
    made[0].callbacks["assign"](made[0], [TopicPartition("t", 1)])
    loop._check_membership(lost_at + 10 * LIMIT_S)
    assert len(made) == 1


def test_a_replaced_consumers_late_callbacks_touch_nothing() -> None:
    """Its close() serves its callbacks in another thread: the loop's state is the new one's."""
    loop, made, _, _ = make_loop()
    lost_at = joined_then_lost(loop, made[0])
    loop._check_membership(lost_at + LIMIT_S + 1)
    old = made[0]
    old.callbacks["assign"](old, [TopicPartition("t", 5)])
    assert ("t", 5) not in loop.tracker.assigned()
    loop.tracker.assign(("t", 5))
    old.on_commit(None, [TopicPartition("t", 5, 7)])
    assert loop.tracker._partitions[("t", 5)].committed is None  # the confirmation was not counted
    old.callbacks["lost"](old, [TopicPartition("t", 5)])
    assert ("t", 5) in loop.tracker.assigned()


def test_the_limit_is_the_longest_rebalance_from_the_clients_settings() -> None:
    assert rejoin_limit_s(KAFKA) == LIMIT_S
    assert rejoin_limit_s({}) == 300 + 2 * 45  # the consumer's defaults
    watch = GroupWatch(10)
    assert not watch.overdue(100.0)  # never subscribed
    watch.left(100.0)
    watch.left(105.0)  # still outside since the first
    assert watch.overdue(110.0) and watch.outside_for(110.0) == 10
    watch.joined()
    assert not watch.overdue(1000.0)


def test_the_time_kafka_was_unreachable_does_not_count() -> None:
    """A Kafka outage longer than the limit: the client rejoins once Kafka answers, as after any
    broker restart. Replaced the moment Kafka answers again, it would be given no time at all."""
    loop, made, _, health = make_loop()
    lost_at = joined_then_lost(loop, made[0])  # the session timed out during the outage
    health.kafka_ok = False
    for t in range(0, int(3 * LIMIT_S), 5):
        loop._check_membership(lost_at + t)
    health.kafka_ok = True  # the broker is back
    back_at = lost_at + 3 * LIMIT_S
    loop._check_membership(back_at)
    loop._check_membership(back_at + LIMIT_S - 6)
    assert len(made) == 1, "replaced before it had the time of a rebalance with Kafka answering"
    loop._check_membership(back_at + LIMIT_S + 6)
    assert len(made) == 2


def test_a_client_whose_topics_do_not_exist_is_not_replaced(caplog: pytest.LogCaptureFixture) -> None:
    """Subscribed to topics none of which exists (not created yet, a typo in KAFKA_TOPICS, not
    authorized), librdkafka joins no group: a new client would not either. Said, not replaced."""
    loop, made, metrics, _ = make_loop()
    loop.producer.topics = {"other"}
    loop._subscribe()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="consumer.pipeline"):
        loop._check_membership(start + LIMIT_S + 1)
        loop._check_membership(start + 3 * LIMIT_S)
    assert len(made) == 1 and metrics.consumer_replaced._value.get() == 0
    assert "replacing" not in caplog.text and "t" in caplog.text and "no such topic" in caplog.text
    loop.producer.topics = {"t", "other"}  # created: the client now has the time of a rebalance to join
    created_at = start + 3 * LIMIT_S + 5
    loop._check_membership(created_at)
    loop._check_membership(created_at + LIMIT_S - 6)
    assert len(made) == 1
    loop._check_membership(created_at + LIMIT_S + 6)
    assert len(made) == 2


def test_a_regular_expression_subscription_counts_its_matching_topics() -> None:
    loop, made, _, _ = make_loop()
    loop.settings.kafka_topics = ["^sms-.*"]
    loop.producer.topics = {"sms-a"}
    loop._subscribe()
    loop._check_membership(time.monotonic() + LIMIT_S + 1)
    assert len(made) == 2


def test_a_regular_expression_python_cannot_read_is_not_counted_missing() -> None:
    """librdkafka's regex dialect is not Python's: a pattern `re` refuses must not end the loop."""
    loop, made, _, _ = make_loop()
    loop.settings.kafka_topics = ["^sms-(?<x>a)"]  # an error to Python's re
    loop.producer.topics = {"sms-a"}
    loop._subscribe()
    loop._check_membership(time.monotonic() + LIMIT_S + 1)
    assert len(made) == 2


def test_an_empty_assignments_lost_session_is_seen_through_the_member_id(caplog: pytest.LogCaptureFixture) -> None:
    """A replica beyond the partition count gets no on_lost when its session times out (nothing to
    lose): only its member id, reset by librdkafka, says it is out of the group."""
    loop, made, _, health = make_loop()
    loop._subscribe()
    made[0].callbacks["assign"](made[0], [])
    assert health.joined
    made[0].member = None  # the session timed out; no callback
    left_at = time.monotonic()
    loop._check_membership(left_at)
    assert not health.joined
    loop._check_membership(left_at + LIMIT_S - 1)
    assert len(made) == 1
    loop._check_membership(left_at + LIMIT_S + 1)
    assert len(made) == 2 and loop.consumer is made[1]


def test_nothing_is_replaced_once_stopping() -> None:
    """A SIGTERM: the loop's last turns must not start a new client the shutdown then closes."""
    loop, made, _, _ = make_loop()
    lost_at = joined_then_lost(loop, made[0])
    loop.request_stop()
    loop._check_membership(lost_at + 10 * LIMIT_S)
    assert len(made) == 1


def test_a_replaced_client_that_never_closes_is_not_followed_by_more() -> None:
    """Its close() may hang (never waited for): each replacement that follows would leave one more
    librdkafka client, its threads and connections, behind. One at a time."""
    loop, made, metrics, _ = make_loop()
    release = threading.Event()
    made[0].close = lambda: release.wait(10)  # type: ignore[method-assign]
    lost_at = joined_then_lost(loop, made[0])
    loop._check_membership(lost_at + LIMIT_S + 1)
    assert len(made) == 2
    made[1].close = lambda: release.wait(10)  # type: ignore[method-assign]
    loop._check_membership(time.monotonic() + LIMIT_S + 1)
    assert len(made) == 2 and metrics.consumer_replaced._value.get() == 1, "replaced while the last one closes"
    release.set()
    deadline = time.monotonic() + 5
    while loop._closing is not None and loop._closing.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    loop._check_membership(time.monotonic() + 3 * LIMIT_S)
    assert len(made) == 3


def test_a_new_client_that_cannot_be_created_leaves_the_old_one_in_place(caplog: pytest.LogCaptureFixture) -> None:
    """Creating a librdkafka client can fail where the first one did not (a TLS file unreadable
    mid-rotation: KafkaException "Failed to create consumer"): the poll loop goes on with the old
    client, its callbacks still its own, and tries again after another limit."""
    from confluent_kafka import KafkaError, KafkaException

    loop, made, metrics, _ = make_loop()
    first = made[0]
    lost_at = joined_then_lost(loop, first)
    factory = loop._consumer_factory

    def failing(on_commit: Any) -> Any:
        raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "Failed to create consumer: ssl.ca.location failed"))

    loop._consumer_factory = failing
    with caplog.at_level(logging.ERROR, logger="consumer.pipeline"):
        loop._check_membership(lost_at + LIMIT_S + 1)  # raised out of the poll loop, ending it
    assert loop.consumer is first and not first.closed.is_set() and metrics.consumer_replaced._value.get() == 0
    assert "could not create" in caplog.text
    confirmed: list[Any] = []
    loop._on_commit = lambda error, partitions: confirmed.append(partitions)  # type: ignore[method-assign]
    first.on_commit(None, [TopicPartition("t", 0, 3)])
    assert confirmed, "the client still in use had its commit confirmations dropped"

    loop._consumer_factory = factory
    loop._check_membership(lost_at + LIMIT_S + 5)
    assert len(made) == 1, "tried again before another limit"
    loop._check_membership(lost_at + 2 * LIMIT_S + 2)
    assert len(made) == 2 and loop.consumer is made[1] and first.closed.wait(5)
