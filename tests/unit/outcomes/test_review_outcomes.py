"""Review of the outcome producers (dead letters, receipts): sequences that broke the bar.

1. A fatal error of the idempotent producer (librdkafka purges its queue, every later produce()
   fails with _FATAL, for good): the dead-letters and receipts were produced again every 30 s for
   ever, their partitions never committed past them, and the process never restarted (only
   /readyz went false after STUCK_RECORD_MS). Now poll() raises, so the poll loop ends and the
   replica restarts with a fresh producer; nothing was committed past those records.
2. An acknowledgement served after the partition was revoked or lost (the pipeline's final
   producer.flush after a shutdown that ran out of time, or a late ack after a rebalance): its
   mark waited for a poll() that never came (the process exits after that flush), so the next
   owner dead-lettered the record a second time, and gave it a second receipt. Now such a mark is
   written as the acknowledgement comes back."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.ingest.mapping import Recipient
from consumer.ingest.records import InboundRecord
from consumer.outcomes import deadletter
from consumer.outcomes.deadletter import DeadLetterQueue, Failure
from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
from consumer.state.dead_letters import Origin
from consumer.state.memory import MemoryDeadLetterMarks, MemoryReceiptMarks

FAILURE = Failure("invalid_event", "no phone")
SALT = "a-salt-of-sixteen-or-more-characters"
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


def record(offset: int) -> InboundRecord:
    return InboundRecord("t", 0, offset, b"k", b"v", [], (1, 1_800_000_000_000))


class FatalProducer:
    """librdkafka after a fatal error of the idempotent producer: what was queued comes back
    purged (_PURGE_QUEUE), and every produce() from then on raises _FATAL."""

    def __init__(self, fatal_after: int | None = None) -> None:
        self.fatal = False
        self.fatal_after = fatal_after  # fails fatally once it has produced this many records
        self.produced = 0
        self._reports: list[Callable[[Any, Any], None]] = []

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        self.fatal = self.fatal or (self.fatal_after is not None and self.produced >= self.fatal_after)
        if self.fatal:
            raise KafkaException(KafkaError(KafkaError._FATAL, "Fatal error: Broker: Producer attempted an "
                                                               "operation with an old epoch"))
        self.produced += 1
        if on_delivery is not None:
            self._reports.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        self.fatal = self.fatal or (self.fatal_after is not None and self.produced >= self.fatal_after)
        reports, self._reports = self._reports, []
        for report in reports:
            report(KafkaError(KafkaError._PURGE_QUEUE) if self.fatal else None, None)
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        return self.poll()


def test_a_fatal_producer_error_ends_the_poll_loop_instead_of_retrying_dead_letters_for_ever(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletter, "RETRY_BACKOFF_S", (0,))
    producer, done = FatalProducer(), []
    dlq = DeadLetterQueue(producer, "dlq")
    dlq.send(record(1), FAILURE, lambda: done.append(1))  # produced, not acknowledged yet
    producer.fatal = True
    with pytest.raises(KafkaException) as raised:
        for _ in range(5):  # purged, then refused: before, produced again every turn for ever
            dlq.poll(0)
    assert raised.value.args[0].code() == KafkaError._FATAL
    assert done == []  # never finished, so never committed: the next owner dead-letters it


def test_a_fatal_producer_error_ends_the_poll_loop_instead_of_retrying_receipts_for_ever(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.outcomes import receipts as receipts_module

    monkeypatch.setattr(receipts_module, "RETRY_BACKOFF_S", (0,))
    producer, done = FatalProducer(), []
    writer = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec())
    writer.record(record(1), "skipped", lambda: done.append(1), recipient=Recipient("tx-1", CAMPAIGN, "+905321234567"))
    producer.fatal = True
    with pytest.raises(KafkaException) as raised:
        for _ in range(5):
            writer.poll(0)
    assert raised.value.args[0].code() == KafkaError._FATAL
    assert done == []


def test_a_refusal_that_is_not_fatal_is_still_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """An authorization error or a deleted topic: the topic gets fixed, the process keeps its records."""
    monkeypatch.setattr(deadletter, "RETRY_BACKOFF_S", (0,))

    class Refusing(FatalProducer):
        refuse = True

        def produce(self, *args: Any, **kwargs: Any) -> None:
            if self.refuse:
                raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
            super().produce(*args, **kwargs)

    producer, done = Refusing(), []
    dlq = DeadLetterQueue(producer, "dlq")
    dlq.send(record(1), FAILURE, lambda: done.append(1))
    for _ in range(3):
        dlq.poll(0)
    assert done == [] and dlq.in_flight == 1
    producer.refuse = False
    dlq.poll(0)
    dlq.poll(0)
    assert done == [1] and dlq.in_flight == 0


def test_a_dead_letter_acknowledged_after_its_partition_was_revoked_is_marked_at_once() -> None:
    """The pipeline's last producer.flush() (after the shutdown's grace ran out and close() revoked
    the partitions) serves this acknowledgement, and no poll() comes after it."""
    marks, producer = MemoryDeadLetterMarks(horizon_s=3600), FatalProducer()
    dlq = DeadLetterQueue(producer, "dlq", marks=marks)
    done: list[int] = []
    dlq.send(record(1), FAILURE, functools.partial(done.append, 1))
    dlq._produce_unchecked()  # produced in a poll turn; the broker is slow to acknowledge
    dlq.forget({("t", 0)})  # close() served the revocation
    producer.flush(5)  # the pipeline's final flush: acknowledged, the process exits next
    assert marks.seen([Origin.of(record(1))]) == [True]  # the next owner does not dead-letter it again
    assert dlq.in_flight == 0


def test_a_receipt_acknowledged_after_its_partition_was_revoked_is_marked_at_once() -> None:
    marks, producer = MemoryReceiptMarks(), FatalProducer()
    writer = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec(),
                           marks=marks)
    writer.assigned([("t", 0)])
    writer.record(record(1), "skipped", lambda: None, recipient=Recipient("tx-1", CAMPAIGN, "+905321234567"))
    writer.forget({("t", 0)})
    producer.flush(5)
    assert set(marks.receipted("g", ("t", 0))) == {1}
    assert writer.in_flight == 0


def test_the_poll_loop_ends_on_a_fatal_producer_and_commits_nothing_past_the_dead_letter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.config.resources import default_mapping_file
    from consumer.ingest.avro import SchemalessDecoder
    from consumer.ingest.mapping import DeclarativeMapper
    from consumer.ingest.samples import default_schema
    from tests.support.fake_kafka import FakeMessage, pipeline

    monkeypatch.setattr(deadletter, "RETRY_BACKOFF_S", (0,))
    mapper = DeclarativeMapper.from_file(default_mapping_file())
    loop, consumer, _ = pipeline(SchemalessDecoder(default_schema()), mapper, commit_interval_ms=100)
    producer = FatalProducer(fatal_after=1)  # the dead-letter is produced, then purged
    loop.dlq.producer = producer
    consumer.queue = [FakeMessage("t", 0, 0, b"not avro")]
    with pytest.raises(KafkaException):
        for _ in range(5):
            loop._step()
    loop._commit(sync=True, all_known=True)
    assert consumer.committed.get(("t", 0), 0) == 0


def test_acknowledgements_served_by_a_final_flush_are_marked_by_write_marks() -> None:
    """Partitions still assigned (close() could not serve the revocation in time): not abandoned,
    so not marked at once; the caller of the final flush writes them (`write_marks`)."""
    marks, producer = MemoryDeadLetterMarks(horizon_s=3600), FatalProducer()
    dlq = DeadLetterQueue(producer, "dlq", marks=marks)
    dlq.send(record(1), FAILURE, lambda: None)
    dlq._produce_unchecked()
    producer.flush(5)
    assert marks.seen([Origin.of(record(1))]) == [False]
    dlq.write_marks()
    assert marks.seen([Origin.of(record(1))]) == [True]


def test_a_dead_letter_acknowledged_by_the_final_flush_of_run_is_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The poll loop ends (here on a consumer error) with a dead letter still unacknowledged, and
    close() cannot serve the revocation in time: the partition is still assigned, so the
    acknowledgement the final `producer.flush` serves is not an abandoned one's. Unmarked, the next
    owner would read the record again and dead-letter it a second time."""
    from consumer import pipeline as pipeline_module
    from consumer.config.resources import default_mapping_file
    from consumer.ingest.avro import SchemalessDecoder
    from consumer.ingest.mapping import DeclarativeMapper
    from consumer.ingest.samples import default_schema
    from tests.support.fake_kafka import pipeline

    monkeypatch.setattr(pipeline_module, "LEAVE_TIMEOUT_S", 0.05)
    mapper = DeclarativeMapper.from_file(default_mapping_file())
    loop, consumer, _ = pipeline(SchemalessDecoder(default_schema()), mapper)
    marks, producer = MemoryDeadLetterMarks(horizon_s=3600), FatalProducer()  # acknowledges on poll or flush
    loop.dlq.marks, loop.dlq.producer, loop.producer = marks, producer, producer
    loop.dlq.send(record(1), FAILURE, lambda: None)
    loop.dlq._produce_unchecked()  # produced, not acknowledged yet

    def broken(num_messages: int, timeout: float) -> list[Any]:
        raise KafkaException(KafkaError(KafkaError._FATAL, "the consumer failed"))

    consumer.subscribe = lambda topics, **callbacks: None  # type: ignore[method-assign]
    consumer.consume = broken  # type: ignore[method-assign]
    consumer.close = lambda: None  # type: ignore[attr-defined]
    with pytest.raises(KafkaException):
        loop.run()
    assert marks.seen([Origin.of(record(1))]) == [True]
