"""A replay group's position on a DLQ deleted and recreated, on the real local Kafka: the replay
stores the topic's id with its commits and, finding another id at start, reads the new topic from
its beginning, even once it grew past the old position (consumer/sre/topic_identity.py)."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from consumer.config.settings import Settings
from consumer.sre.dlq_read import Filters
from consumer.sre.replay import default_group
from consumer.sre.topic_identity import decoded, encoded
from tests.conftest import Stack
from tests.integration.test_replay import (  # noqa: F401 (settings: the fixture)
    TOKEN_13001,
    Spec,
    build_dlq,
    recreate_topic,
    replay,
    settings,
)
from tests.support.kafka import read_all


def committed_with_metadata(stack: Stack, group: str, topic: str) -> tuple[int, str]:
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset, tp.metadata
    finally:
        consumer.close()


def test_a_dlq_recreated_and_grown_past_the_groups_position_is_read_from_its_beginning(
        stack: Stack, new_topic: Callable[..., str], settings: Callable[[str], Settings]) -> None:  # noqa: F811
    # Found in review: purged (deleted, recreated) and grown to 5 records, the DLQ looked like the
    # old one at position 3 to the next run: its first 3 records were skipped, silently.
    first_source, dlq = new_topic("source"), new_topic("dlq")
    build_dlq(stack, first_source, dlq, [Spec(TOKEN_13001)] * 3)
    assert replay(settings(dlq)).replayed == 3
    group = default_group(Filters())
    position, metadata = committed_with_metadata(stack, group, dlq)
    old_id = decoded(metadata)
    assert position == 3 and old_id

    recreate_topic(stack, dlq)
    # Kafka 4.1 drops an empty group's offsets with the topic; a replay still running during the
    # purge commits its position, with the id it read at its start, onto the new topic: made here.
    late = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        late.commit(offsets=[TopicPartition(dlq, 0, 3, metadata=encoded(old_id))], asynchronous=False)
    finally:
        late.close()
    second_source = new_topic("source")
    build_dlq(stack, second_source, dlq, [Spec(TOKEN_13001)] * 5)  # past the old position
    again = replay(settings(dlq))
    assert (again.read, again.replayed) == (5, 5)
    assert again.recreated == [(0, 3, 5, True)] and again.truncated == []
    assert len(read_all(stack.bootstrap, second_source)) == 5 + 5
    position, metadata = committed_with_metadata(stack, group, dlq)
    assert position == 5 and decoded(metadata) not in (None, old_id)  # the new topic's id from now on
