"""A record Kafka refuses for itself is a counted refusal, not a replay that stops at it on every
run; the records batched with it are sent again (consumer/sre/replay.py, _Publisher)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.sre.replay import Refusal, ReplayError, ReplaySummary, Verdict, _Publisher
from tests.unit.sre.test_dlq_filters import CAMPAIGN_B, FAILED_AT, letter

LIMIT = 1000  # the target topic's max.message.bytes, in this fake

Report = Callable[[KafkaError | None, Any], None]


class BatchingBroker:
    """Delivers what was produced since the last flush as one batch, judged whole like a broker:
    over LIMIT bytes, every record of it is refused."""

    def __init__(self, error: int = KafkaError.MSG_SIZE_TOO_LARGE) -> None:
        self.error = error
        self.pending: list[tuple[bytes, Report]] = []
        self.stored: list[bytes] = []

    def produce(self, topic: str, key: Any = None, value: bytes = b"", headers: Any = None,
                on_delivery: Report | None = None) -> None:
        assert on_delivery is not None
        self.pending.append((value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        batch, self.pending = self.pending, []
        refused = sum(len(value) for value, _ in batch) > LIMIT
        for value, report in batch:
            if not refused:
                self.stored.append(value)
            report(KafkaError(self.error) if refused else None, None)
        return 0


def test_only_the_record_refused_alone_is_refused_the_others_are_sent_again() -> None:
    broker = BatchingBroker()
    publisher = _Publisher(broker, None)
    small = [replace(letter(offset=n), value=b"s" * 100) for n in range(3)]
    big = replace(letter(offset=9), value=b"b" * (LIMIT + 1))
    for record in (small[0], big, small[1], small[2]):
        publisher.publish("transactions", record)
    refused = publisher.wait_acknowledged()
    assert refused == [Refusal(big, "transactions", "MSG_SIZE_TOO_LARGE")]
    assert sorted(broker.stored) == [b"s" * 100] * 3
    assert publisher.wait_acknowledged() == []  # told once


def test_any_other_refusal_stops_the_replay_with_what_to_do() -> None:
    publisher = _Publisher(BatchingBroker(KafkaError.TOPIC_AUTHORIZATION_FAILED), None)
    publisher.publish("transactions", replace(letter(), value=b"b" * (LIMIT + 1)))
    with pytest.raises(ReplayError, match="Kafka refused a re-published record"):
        publisher.wait_acknowledged()


def test_a_refused_record_moves_from_replayed_to_refused_in_every_count() -> None:
    summary = ReplaySummary(read=2)
    stale_before = FAILED_AT + timedelta(days=1)
    kept, refused = letter(offset=1), letter(offset=2)
    refused = replace(refused, campaign_id=CAMPAIGN_B)
    for record in (kept, refused):
        summary.verdicts[Verdict.REPLAY] += 1
        summary.add_replay(record, "transactions", stale_before)
    summary.refused_by_kafka(Refusal(refused, "transactions", "MSG_SIZE_TOO_LARGE"), stale_before)
    assert summary.verdicts == {Verdict.REPLAY: 1, Verdict.REFUSED_BY_KAFKA: 1}
    assert (summary.matched, summary.replayed, summary.stale) == (2, 1, 1)
    assert summary.by_campaign == {kept.campaign_label: 1} and summary.by_target == {"transactions": 1}
    assert summary.kafka_refusals == {("MSG_SIZE_TOO_LARGE", "transactions"): 1}


class InterruptedAt(BatchingBroker):
    """Ctrl-C during the `interrupt_at`-th flush: librdkafka's flush raises KeyboardInterrupt,
    leaving what was produced since unflushed (its reports come with the next flush)."""

    def __init__(self, interrupt_at: int) -> None:
        super().__init__()
        self.interrupt_at = interrupt_at
        self.flushes = 0

    def flush(self, timeout: float = 0) -> int:
        self.flushes += 1
        if self.flushes == self.interrupt_at:
            raise KeyboardInterrupt
        return super().flush(timeout)


def test_ctrl_c_while_refused_records_are_sent_again_alone_loses_none_of_them() -> None:
    # run_replay's KeyboardInterrupt handler checkpoints: it commits the positions when
    # wait_acknowledged returns. The records of the refused batch not yet sent again alone must
    # not be forgotten: sent again by that checkpoint, or the commit refused.
    broker = InterruptedAt(interrupt_at=3)  # 1: the batch, 2: small[0] alone, 3: big alone
    publisher = _Publisher(broker, None)
    small = [replace(letter(offset=n), value=b"s" * 100) for n in range(3)]
    big = replace(letter(offset=9), value=b"b" * (LIMIT + 1))
    for record in (small[0], big, small[1], small[2]):
        publisher.publish("transactions", record)
    with pytest.raises(KeyboardInterrupt):
        publisher.wait_acknowledged()
    assert publisher.wait_acknowledged() == [Refusal(big, "transactions", "MSG_SIZE_TOO_LARGE")]
    assert sorted(broker.stored) == [b"s" * 100] * 3


class LosesAReport(BatchingBroker):
    """Ctrl-C that lands in a delivery callback: the report is consumed, the callback never ran
    (Python raises a pending KeyboardInterrupt at the callback's first instruction)."""

    def flush(self, timeout: float = 0) -> int:
        batch, self.pending = self.pending, []
        if batch:
            raise KeyboardInterrupt  # the first report is lost with its record's fate
        return 0


def test_a_delivery_report_lost_to_ctrl_c_is_never_taken_for_an_acknowledgement() -> None:
    publisher = _Publisher(LosesAReport(), None)
    publisher.publish("transactions", letter())
    with pytest.raises(KeyboardInterrupt):
        publisher.wait_acknowledged()
    # The checkpoint of run_replay's interrupt handler must not commit past that record.
    with pytest.raises(ReplayError, match="no delivery report"):
        publisher.wait_acknowledged()


class LocalLimit(BatchingBroker):
    """librdkafka refuses in produce() itself a record over the producer's message.max.bytes
    (64 MiB in consumer/ingest/kafka.py): a dead-letter written by another producer can be larger."""

    def produce(self, topic: str, key: Any = None, value: bytes = b"", headers: Any = None,
                on_delivery: Report | None = None) -> None:
        if len(value) > LIMIT:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        super().produce(topic, key, value, headers, on_delivery)


def test_a_record_the_producer_refuses_itself_is_a_counted_refusal_not_a_crash() -> None:
    broker = LocalLimit()
    publisher = _Publisher(broker, None)
    small = replace(letter(offset=1), value=b"s" * 100)
    big = replace(letter(offset=2), value=b"b" * (LIMIT + 1))
    for record in (small, big):
        publisher.publish("transactions", record)
    assert publisher.wait_acknowledged() == [Refusal(big, "transactions", "MSG_SIZE_TOO_LARGE")]
    assert broker.stored == [b"s" * 100]


def test_any_other_refusal_of_produce_itself_stops_the_replay_with_what_to_do() -> None:
    class Fenced(BatchingBroker):
        def produce(self, *args: Any, **kwargs: Any) -> None:
            raise KafkaException(KafkaError(KafkaError._FENCED, fatal=True))

    with pytest.raises(ReplayError, match="Kafka refused a re-published record"):
        _Publisher(Fenced(), None).publish("transactions", letter())
