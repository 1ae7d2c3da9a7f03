"""Kafka Connect's and Spring Kafka's dead-letter headers beside ours (DLQ_COMPAT_HEADERS).

The expected bytes are written as each tool's Java code produces them (Connect: String.valueOf
then UTF-8; Spring: ByteBuffer.putInt / putLong, big-endian), so that their readers decode ours.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from consumer.outcomes.compat_headers import COMPAT_HEADER_PREFIXES
from consumer.outcomes.deadletter import Failure, dead_letter_headers
from consumer.sre.dlq_read import parse_dead_letter
from consumer.sre.replay import replay_headers

PHONE = "+905551234567"
FAILED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeMessage:
    def __init__(self, headers: list[tuple[str, bytes]] | None = None, *, partition: int = 7,
                 offset: int = 2**40 + 5, timestamp: tuple[int, int] = (1, 1_700_000_000_123),
                 topic: str = "transactions") -> None:
        self._headers, self._partition, self._offset, self._timestamp, self._topic = \
            headers, partition, offset, timestamp, topic

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def key(self) -> bytes:
        return b"event-1"

    def value(self) -> bytes:
        return b"\x00avro"


FAILURE = Failure("pisano_error", "Wrong authentication token", code=13001, http_status=401, attempts=1)


def headers(message: FakeMessage, failure: Failure = FAILURE, *, compat: bool = True,
            group: str | None = "pisano-sms-consumer") -> dict[str, bytes]:
    built = dead_letter_headers(message, failure, FAILED_AT, group=group, compat=compat)
    names = [name for name, _ in built]
    assert len(names) == len(set(names)), "every header once"
    return dict(built)


def test_connect_headers_are_utf8_decimal_strings_as_its_reporter_writes_them() -> None:
    got = headers(FakeMessage())
    assert got["__connect.errors.topic"] == b"transactions"
    assert got["__connect.errors.partition"] == b"7"
    assert got["__connect.errors.offset"] == str(2**40 + 5).encode()
    assert got["__connect.errors.connector.name"] == b"pisano-sms-consumer"
    assert got["__connect.errors.exception.class.name"] == b"pisano_sms.pisano_error"
    assert got["__connect.errors.exception.message"] == b"Wrong authentication token"


def test_spring_headers_are_big_endian_binary_as_its_recoverer_writes_them() -> None:
    got = headers(FakeMessage())
    assert got["kafka_dlt-original-topic"] == b"transactions"
    assert got["kafka_dlt-original-partition"] == b"\x00\x00\x00\x07"
    assert got["kafka_dlt-original-offset"] == b"\x00\x00\x01\x00\x00\x00\x00\x05"
    assert struct.unpack(">q", got["kafka_dlt-original-timestamp"]) == (1_700_000_000_123,)
    assert got["kafka_dlt-original-timestamp-type"] == b"CreateTime"
    assert got["kafka_dlt-original-consumer-group"] == b"pisano-sms-consumer"
    assert got["kafka_dlt-exception-fqcn"] == b"pisano_sms.pisano_error"
    assert got["kafka_dlt-exception-message"] == b"Wrong authentication token"


def test_timestamp_types_and_a_record_without_timestamp() -> None:
    assert headers(FakeMessage(timestamp=(2, 5)))["kafka_dlt-original-timestamp-type"] == b"LogAppendTime"
    none = headers(FakeMessage(timestamp=(0, -1)))
    assert none["kafka_dlt-original-timestamp-type"] == b"NoTimestampType"
    assert none["kafka_dlt-original-timestamp"] == struct.pack(">q", -1)
    assert "dlq.original.timestamp" not in none


def test_ours_are_unchanged_and_the_group_is_named() -> None:
    with_compat, without = headers(FakeMessage([("trace-id", b"abc")])), \
        headers(FakeMessage([("trace-id", b"abc")]), compat=False)
    assert not any(name.startswith(COMPAT_HEADER_PREFIXES) for name in without)
    assert {k: v for k, v in with_compat.items() if not k.startswith(COMPAT_HEADER_PREFIXES)} == without
    assert without["dlq.original.consumer.group"] == b"pisano-sms-consumer"
    assert without["trace-id"] == b"abc"
    assert "dlq.original.consumer.group" not in headers(FakeMessage(), compat=False, group=None)


def test_the_exception_message_is_redacted_like_ours() -> None:
    failure = Failure("invalid_event", f"phone {PHONE} refused by https://user:s3cret@proxy.example/x")
    got = headers(FakeMessage(), failure)
    for name in ("pisano.error.message", "__connect.errors.exception.message", "kafka_dlt-exception-message"):
        assert PHONE.encode() not in got[name] and b"5551234567" not in got[name], name
        assert b"s3cret" not in got[name], name
        assert got[name] == got["pisano.error.message"]


def test_a_record_dead_lettered_again_gets_fresh_compat_headers() -> None:
    first = headers(FakeMessage([("trace-id", b"abc")]))
    again = headers(FakeMessage(list(first.items()), partition=0, offset=3, topic="pisano-sms.dlq"),
                    Failure("decode_error", "bad"))
    assert again["kafka_dlt-original-partition"] == b"\x00\x00\x00\x00"
    assert again["__connect.errors.exception.class.name"] == b"pisano_sms.decode_error"


def test_the_replay_reads_ours_and_copies_no_compat_header() -> None:
    built = dead_letter_headers(FakeMessage([("trace-id", b"abc")]), FAILURE, FAILED_AT,
                                group="pisano-sms-consumer", compat=True)
    letter = parse_dead_letter(FakeMessage(built, partition=0, offset=9, topic="pisano-sms.dlq"))
    assert letter is not None
    assert letter.origin == ("transactions", 7, 2**40 + 5)
    assert letter.error_code == 13001
    assert letter.original_headers == (("trace-id", b"abc"),)
    replayed = [name for name, _ in replay_headers(letter)]
    assert not any(name.startswith(COMPAT_HEADER_PREFIXES) for name in replayed)
    assert "trace-id" in replayed
