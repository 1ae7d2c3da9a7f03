"""The poll loop's own bounds (issue 10, items 1, 3, 5, 6, 7), turn by turn on in-memory Kafka."""

import time
from collections.abc import Mapping
from typing import Any

from consumer.config.resources import default_mapping_file
from consumer.errors import RegistryError
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper, Mapper, Recipient
from consumer.ingest.samples import default_schema, encode, phone_for, transaction
from tests.support.fake_kafka import CAMPAIGN, FakeMessage, pipeline

MAPPER = DeclarativeMapper.from_file(default_mapping_file())


def good(offset: int, **extra: Any) -> FakeMessage:
    record = transaction(f"e-{offset}", phone_for(offset), CAMPAIGN, n=offset)
    record["attributes"].update(extra)
    return FakeMessage("t", 0, offset, encode(record), key=f"e-{offset}".encode())


def test_a_header_name_that_is_not_utf8_dead_letters_that_record_and_the_partition_moves_on() -> None:
    """Before: `Message.headers()` raised SystemError out of `Pipeline.run()` (no commit, restart,
    same record: every replica taking the partition died in turn)."""
    loop, consumer, producer = pipeline(SchemalessDecoder(default_schema()), MAPPER)
    hostile = good(1)
    hostile.header_names_invalid = True
    consumer.queue = [good(0), hostile, good(2)]
    for _ in range(3):
        loop._step()
    assert hostile.header_calls == 1
    assert len(producer.produced) == 1
    dead = producer.produced[0]
    assert dead["headers"]["dlq.reason"] == b"decode_error" and dead["value"] == hostile.value()
    assert loop.delivery.buffered == 2
    loop.tracker.finish(("t", 0), 0, loop.tracker.epoch(("t", 0)) or 0)
    loop.tracker.finish(("t", 0), 2, loop.tracker.epoch(("t", 0)) or 0)
    loop._commit()
    assert consumer.committed == {("t", 0): 3}


class SlowMapper(Mapper):
    """1.8 µs/byte through a JMESPath filter on 1 MiB records, in miniature: 50 ms per record."""

    def map(self, record: Mapping[str, Any]) -> Recipient:
        time.sleep(0.05)
        return MAPPER.map(record)


def test_a_turn_decodes_for_a_bounded_time_and_keeps_the_rest_for_the_next_turns() -> None:
    """Before: one turn decoded the whole fetch (120 s for a 64 MiB fetch of such records, past
    the 60 s liveness window)."""
    loop, consumer, _ = pipeline(SchemalessDecoder(default_schema()), SlowMapper())
    consumer.queue = [good(n) for n in range(40)]
    started = time.monotonic()
    loop._step()
    first_turn = time.monotonic() - started
    assert first_turn < 0.5, first_turn  # TURN_BUDGET_S (0.2 s) plus one record
    assert loop.delivery.buffered < 10 and consumer.paused  # the rest waits; fetching paused meanwhile
    turns = 1
    while loop.delivery.buffered < 40:
        before = time.monotonic()
        loop._step()
        assert time.monotonic() - before < 0.5
        assert loop.health.loop_at >= before  # the liveness clock moves every turn
        turns += 1
    assert turns >= 8
    loop._step()
    assert not consumer.paused


def test_fetching_pauses_on_bytes_not_only_events() -> None:
    """Before: 100,000 buffered events of 9 KB or more were an out-of-memory kill under 1 GiB."""
    loop, consumer, _ = pipeline(SchemalessDecoder(default_schema()), MAPPER,
                                 max_buffered_bytes=4 * 1_048_576, max_message_bytes=2 * 1_048_576)
    consumer.per_consume = 3
    consumer.queue = [good(n, blob="x" * 600_000) for n in range(20)]
    for _ in range(20):
        loop._step()
    assert consumer.paused
    assert loop.tracker.unfinished_bytes >= 4 * 1_048_576
    assert loop.delivery.buffered < 10  # stopped near the bound, not at MAX_BUFFERED_EVENTS
    assert consumer.queue  # the rest stays in Kafka


def test_a_record_that_can_never_be_dead_lettered_makes_the_replica_not_ready() -> None:
    """Before: the partition was blocked for ever while /healthz and /readyz stayed green."""
    loop, consumer, producer = pipeline(SchemalessDecoder(default_schema()), MAPPER, stuck_record_ms=10_000)
    producer.refuse = True
    consumer.queue = [FakeMessage("t", 0, 0, b"not avro")]
    loop._step()
    assert loop.dlq.in_flight == 1
    loop._check_stuck(time.monotonic())
    assert loop.health.ready()
    loop._check_stuck(time.monotonic() + 11)
    assert not loop.health.ready() and loop.health.report()["stuck_record"] is True
    assert loop.metrics.oldest_unfinished_age._value.get() > 10  # type: ignore[attr-defined]
    producer.refuse = False
    loop.dlq._retry.all_due_now()
    loop._step()
    loop._step()
    loop._check_stuck(time.monotonic())
    assert loop.health.ready()


class FailingRegistry:
    def __init__(self) -> None:
        self.kind: str | None = "permission"
        self.inner = SchemalessDecoder(default_schema())

    def decode(self, value: bytes) -> Mapping[str, Any]:
        if self.kind:
            raise RegistryError("schema registry refused this consumer (HTTP 403)", kind=self.kind)
        return self.inner.decode(value)


def test_a_registry_that_refuses_us_makes_records_wait_and_the_replica_not_ready() -> None:
    """Before: a 403 paused every partition for ever, with nothing on /readyz and no metric."""
    registry = FailingRegistry()
    loop, consumer, producer = pipeline(registry, MAPPER)
    consumer.queue = [good(n) for n in range(3)]
    loop._step()
    assert not loop.health.ready() and loop.health.report()["schema_registry"] is False
    assert loop.metrics.registry_errors.labels("permission")._value.get() == 1  # type: ignore[attr-defined]
    assert consumer.paused and not producer.produced and loop.delivery.buffered == 0
    first_retry = loop.backlog._retry_at - time.monotonic()
    loop.backlog._retry_at = 0
    loop._step()
    assert loop.backlog._retry_at - time.monotonic() > first_retry  # backing off
    registry.kind = None
    loop.backlog._retry_at = 0
    loop._step()
    assert loop.health.ready() and loop.delivery.buffered == 3 and not producer.produced


def test_records_read_again_after_the_position_moved_back_are_committed_only_once_they_have_outcomes() -> None:
    """librdkafka moves a partition's position back within one assignment after it detects log
    truncation. Before: the outcomes of the first copies finished the offsets of the records read
    again, and the commit point passed them (7 here) before they had any outcome: a restart then
    would never have sent them."""
    from consumer.delivery.outcome import Outcome

    loop, consumer, _ = pipeline(SchemalessDecoder(default_schema()), MAPPER)
    consumer.queue = [good(n) for n in range(10)]
    while loop.delivery.buffered < 10:
        loop._step()
    first = loop.delivery.drop(lambda event: True)
    consumer.queue = [good(5), good(6)]
    while loop.delivery.buffered < 2:
        loop._step()
    loop.outcomes.put(Outcome("delivered", first, accepted_at_ms=int(time.time() * 1000)))
    loop._drain_outcomes()
    loop._commit()
    assert consumer.committed == {("t", 0): 5}
    again = loop.delivery.drop(lambda event: True)
    assert [event.offset for event in again] == [5, 6]
    loop.outcomes.put(Outcome("delivered", again, accepted_at_ms=int(time.time() * 1000)))
    loop._drain_outcomes()
    loop._commit()
    assert consumer.committed == {("t", 0): 7}


def test_the_first_copies_of_records_read_again_leave_the_batches() -> None:
    """Found in review: they stayed buffered after the position moved back, to be sent beside the
    copies read again (one of two records that may differ after a truncation) and to hold memory."""
    loop, consumer, _ = pipeline(SchemalessDecoder(default_schema()), MAPPER)
    consumer.queue = [good(n) for n in range(10)]
    while loop.delivery.buffered < 10:
        loop._step()
    consumer.queue = [good(5), good(6)]
    for _ in range(3):
        loop._step()
    buffered = loop.delivery.drop(lambda event: True)
    assert sorted(event.offset for event in buffered) == [0, 1, 2, 3, 4, 5, 6]
    assert all(loop.tracker.live(event.tp, event.epoch, event.offset) for event in buffered)
