"""A dead-letter the topic refuses as too large shrinks in steps that end: without its value, then
with our headers alone (no value, key or original headers). Before, only the value was dropped:
a record whose bulk was its headers (or key) was refused again, produced again every 30 s for
ever, and its partition never committed past it (found by review)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from consumer.ingest.records import InboundRecord
from consumer.outcomes import deadletter
from consumer.outcomes.deadletter import DeadLetterQueue, Failure
from consumer.sre.dlq_read import parse_dead_letter
from tests.unit.sre.test_dlq_filters import FakeMessage

LIMIT = 1_048_588  # Kafka's default max.message.bytes


class SizeLimitedProducer:
    """Refuses, in its delivery report, a record larger than `limit` (key, value and headers)."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.reports: list[Any] = []
        self.written: list[dict[str, Any]] = []

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers or [])
        error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if size > self.limit else None
        if error is None:
            self.written.append({"key": key, "value": value, "headers": list(headers)})
        self.reports.append(lambda: on_delivery(error, None))

    def poll(self, timeout: float = 0) -> int:
        reports, self.reports = self.reports, []
        for report in reports:
            report()
        return len(reports)


def dead_letter(source: InboundRecord, producer: SizeLimitedProducer) -> list[int]:
    done: list[int] = []
    queue = DeadLetterQueue(producer, "pisano-sms.dlq")
    queue.send(source, Failure("decode_error", "not Avro for this schema"), lambda: done.append(1))
    for _ in range(6):
        queue.poll(0)
    return done


def as_letter(written: dict[str, Any]) -> Any:
    return parse_dead_letter(FakeMessage(written["headers"], topic="pisano-sms.dlq", partition=0, offset=1,
                                         key=written["key"], value=written["value"]))


def test_a_record_whose_bulk_is_its_headers_is_dead_lettered_with_our_headers_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletter, "RETRY_BACKOFF_S", (0,))
    headers = [(f"h{i:04d}", b"\xab" * 995) for i in range(1048)]
    headers.append(("pad", b"\xab" * (LIMIT - 100 - sum(len(k) + len(v) for k, v in headers))))  # the source took it
    source = InboundRecord("transactions", 0, 7, b"evt-1", b"\x01", tuple(headers), (1, 1_700_000_000_000))
    producer = SizeLimitedProducer()
    assert dead_letter(source, producer) == [1]
    [written] = producer.written
    names = dict(written["headers"])
    assert (names["dlq.value.omitted"], names["dlq.headers.omitted"], names["dlq.key.omitted"]) == (b"1", b"1049", b"5")
    assert written["key"] is None and not any(k.startswith("h0") for k, _ in written["headers"])
    letter = as_letter(written)  # still ours to `replay` and `dlq stats`: counted, not replayed blind
    assert letter is not None and letter.value_omitted and letter.origin == ("transactions", 0, 7)


def test_a_record_whose_bulk_is_its_value_keeps_its_key_and_headers() -> None:
    source = InboundRecord("transactions", 0, 7, b"evt-1", b"\x01" * LIMIT, (("trace", b"t-1"),), (1, 1))
    producer = SizeLimitedProducer()
    assert dead_letter(source, producer) == [1]
    [written] = producer.written
    assert written["key"] == b"evt-1" and written["value"] == b"" and ("trace", b"t-1") in written["headers"]
    assert dict(written["headers"])["dlq.value.omitted"] == str(LIMIT).encode()


def test_a_topic_that_refuses_even_our_headers_is_retried_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletter, "RETRY_BACKOFF_S", (0,))
    source = InboundRecord("transactions", 0, 7, b"evt-1", b"\x01", (), (1, 1))
    producer = SizeLimitedProducer(limit=100)  # misconfigured: waits (and alerts) until it is fixed
    assert dead_letter(source, producer) == []
    producer.limit = LIMIT
    queue_done: list[int] = []
    queue = DeadLetterQueue(producer, "pisano-sms.dlq")
    queue.send(source, Failure("decode_error", "x"), lambda: queue_done.append(1))
    queue.poll(0)
    queue.poll(0)
    assert queue_done == [1] and producer.written[-1]["value"] == b"\x01"


def test_headers_that_cannot_be_written_still_make_a_dead_letter_replay_and_stats_know(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("any failure of the full headers")

    monkeypatch.setattr(deadletter, "dead_letter_headers", broken)
    source = InboundRecord("transactions", 3, 42, b"evt-1", b"\x02avro", (), (1, 1_700_000_000_000))
    source.replays = 2
    producer = SizeLimitedProducer()
    assert dead_letter(source, producer) == [1]
    letter = as_letter(producer.written[0])
    assert letter is not None and letter.reason == "decode_error" and letter.origin == ("transactions", 3, 42)
    assert letter.replays == 2  # `replay --max-replays` still counts


def test_a_dead_letter_refused_as_too_large_after_its_partition_was_revoked_is_not_produced_again() -> None:
    """The next owner reads the record again and dead-letters it itself (found by review)."""
    producer = SizeLimitedProducer(limit=1000)
    queue = DeadLetterQueue(producer, "pisano-sms.dlq")
    done: list[int] = []
    queue.send(InboundRecord("transactions", 0, 7, b"evt-1", b"\x01" * 5000, (), (1, 1)),
               Failure("decode_error", "x"), lambda: done.append(1))
    queue.forget({("transactions", 0)})  # revoked while the broker had it
    queue.poll(0)  # the refusal comes back: not produced again without its value
    queue.poll(0)
    assert producer.written == [] and done == [] and queue.in_flight == 0
