"""Adversarial review of the poll loop's commit path, rebalances and backlog (h-offsets).

Each test failed on the code before its fix; the docstring says what it did."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition

from consumer.delivery.outcome import Outcome
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.samples import default_schema
from consumer.pipeline import Pipeline
from tests.support.fake_kafka import FakeConsumer, FakeMessage, pipeline
from tests.unit.test_pipeline import MAPPER, FailingRegistry, good


def recorded_timeouts(consumer: FakeConsumer) -> list[float]:
    """The timeout of each of `consumer`'s polls from now on."""
    timeouts: list[float] = []
    consume = consumer.consume

    def recording(num_messages: int, timeout: float) -> list:  # type: ignore[type-arg]
        timeouts.append(timeout)
        return consume(num_messages, timeout)

    consumer.consume = recording
    return timeouts


def test_a_poll_loop_waiting_for_the_schema_registry_waits_in_its_poll_instead_of_spinning() -> None:
    """Records waiting for the registry's retry keep the backlog non-empty, and a non-empty backlog
    made every turn poll with a zero timeout: nothing to decode before the retry, nothing fetched
    (paused), so the loop spun. Measured: 126,721 turns and a whole core for one second, for as
    long as the registry is away (its backoff reaches 60 s), holding the GIL against the senders.
    While nothing can be decoded, a turn waits in its poll as an idle one does."""
    registry = FailingRegistry()
    loop, consumer, _ = pipeline(registry, MAPPER)
    consumer.queue = [good(n) for n in range(3)]
    timeouts = recorded_timeouts(consumer)
    loop._step()  # fetches the records; the registry refuses the first: all wait
    assert loop.backlog.waiting_for_registry and len(loop.backlog) == 3
    timeouts.clear()
    for _ in range(5):
        loop._step()
    assert min(timeouts) > 0, f"turns polled with {timeouts} while nothing could be decoded"
    # Once the retry is due, the turn decodes at once again (and the backlog is served first).
    registry.kind = None
    loop.backlog._retry_at = time.monotonic()
    timeouts.clear()
    loop._step()
    assert timeouts == [0.0] and len(loop.backlog) == 0 and loop.delivery.buffered == 3


def test_our_own_registry_request_bound_waits_in_the_poll_too() -> None:
    """`busy` (our bound on registry requests per second) asks again ~50 ms later: meanwhile the
    turns spun the same way."""
    registry = FailingRegistry()
    registry.kind = "busy"
    loop, consumer, _ = pipeline(registry, MAPPER)
    consumer.queue = [good(0)]
    loop._step()
    assert len(loop.backlog) == 1 and loop.backlog._retry_at > time.monotonic()
    timeouts = recorded_timeouts(consumer)
    loop._step()
    assert timeouts and timeouts[0] > 0


def _rebalance_in_consume(loop: Pipeline, consumer: FakeConsumer, *, lost: bool = False) -> None:
    """The next consume call serves a rebalance that takes partition 0 away and one that gives it
    back, then returns what the client collected (the test's queue), as librdkafka's batch consume
    can: the callbacks run inside it."""
    consume = consumer.consume

    def once(num_messages: int, timeout: float) -> list[FakeMessage]:
        consumer.consume = consume  # type: ignore[method-assign]
        (loop._on_lost if lost else loop._on_revoke)(consumer, [TopicPartition("t", 0)])
        loop._on_assign(consumer, [TopicPartition("t", 0)])
        return consume(num_messages, timeout)

    consumer.consume = once  # type: ignore[method-assign]


def _deliver_all(loop: Pipeline) -> None:
    events = loop.delivery.drop(lambda e: True)
    loop.outcomes.put(Outcome("delivered", events, accepted_at_ms=int(time.time() * 1000)))
    loop._step()
    loop._commit(all_known=True)


def _owner_committed_at_3() -> tuple[Pipeline, FakeConsumer]:
    loop, consumer, _ = pipeline(SchemalessDecoder(default_schema()), MAPPER, revoke_grace_ms=0)
    consumer.incremental_unassign = lambda partitions: None  # type: ignore[attr-defined]
    consumer.incremental_assign = lambda partitions: None  # type: ignore[attr-defined]
    consumer.queue = [good(n) for n in range(3)]
    loop._step()
    _deliver_all(loop)
    assert consumer.committed[("t", 0)] == 3
    return loop, consumer


@pytest.mark.parametrize("lost", [False, True])
def test_a_late_record_of_the_previous_assignment_does_not_move_the_commit_past_records_not_read_yet(
        lost: bool) -> None:
    """The records `_take` leaves as strays (their partition given up; confluent-kafka-python#1013)
    passed its ownership test once the partition was assigned back within the same consume call:
    tracked as the first record of the new epoch, record 5 (fetched by the earlier assignment)
    finished and the commit point went to 6, past records 3 and 4, which the new fetch had not
    delivered yet: a replica that died then left them to no one. Now the commit point of a
    partition assigned back within a call waits for the fetch to go on."""
    loop, consumer = _owner_committed_at_3()
    _rebalance_in_consume(loop, consumer, lost=lost)
    consumer.queue = [good(5)]  # collected before the rebalance, handed back after it
    loop._step()
    _deliver_all(loop)
    assert consumer.committed[("t", 0)] == 3, "committed past records 3 and 4, which no one has read"
    # The new assignment's fetch starts at the committed offset: 5's copy is superseded, and the
    # partition commits as its records get their outcomes.
    consumer.queue = [good(3), good(4), good(5)]
    loop._step()
    _deliver_all(loop)
    assert consumer.committed[("t", 0)] == 6


def test_a_partition_assigned_back_commits_again_once_its_fetch_goes_on() -> None:
    """The hold ends with the next call's records: here the records handed back with the
    rebalance were the new fetch's own (3, 4), and 5 follows in the next call."""
    loop, consumer = _owner_committed_at_3()
    _rebalance_in_consume(loop, consumer)
    consumer.queue = [good(3), good(4)]
    loop._step()
    _deliver_all(loop)
    assert consumer.committed[("t", 0)] == 3  # held: 3 and 4 might have been the earlier fetch's
    consumer.queue = [good(5)]
    loop._step()
    _deliver_all(loop)
    assert consumer.committed[("t", 0)] == 6


def test_a_replica_whose_records_waiting_for_the_registry_were_revoked_is_ready_again() -> None:
    """The registry refused the record of a partition that was then revoked: nothing waited any
    more, but /readyz said `schema_registry: false` until another record was decoded; on an idle
    topic, for good (a rollout waiting for the pod to be ready waited with it)."""
    registry = FailingRegistry()
    loop, consumer, _ = pipeline(registry, MAPPER, revoke_grace_ms=0)
    consumer.incremental_unassign = lambda partitions: None  # type: ignore[attr-defined]
    consumer.queue = [good(0)]
    loop._step()
    assert not loop.health.ready() and loop.backlog.waiting_for_registry
    retry_at = loop.backlog._retry_at
    loop._on_revoke(consumer, [TopicPartition("t", 0)])
    for _ in range(3):
        loop._step()
    assert len(loop.backlog) == 0
    assert loop.health.ready(), loop.health.report()
    assert loop.backlog._retry_at == retry_at  # the backoff still holds the next record until it ends
