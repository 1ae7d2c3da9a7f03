"""A consumed Kafka record, read once into plain Python values.

`confluent_kafka.Message.headers()` fails when a header *name* is not valid UTF-8 (any librdkafka
or Go producer can write one): it returns a list holding a NULL item *and* leaves the decode error
set. Called through the generic C call path, Python turns that into a `SystemError`; but once the
call site in the poll loop is warm, Python 3.11's specialised call instruction skips that check
and runs on with the broken list, and the process crashes (a segmentation fault, seen in the
hostile-corpus test). So the call goes through `operator.methodcaller`, which always takes the
checked path, and a second call on that message would return the broken list: every message is
read exactly once, inside the record's own guard,
into an `InboundRecord`; from then on the pipeline, the batches and the dead-letter queue only
see the snapshot, whose `headers()` can be called any number of times. A record whose headers
could not be read keeps `header_error` and no headers: it is dead-lettered with that reason
(its key and value untouched), and its partition moves on.

`InboundRecord` has the methods of `Message` the rest of the code uses (topic, partition,
offset, key, value, headers, timestamp), so the dead-letter code reads either.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from typing import Any

from consumer.plain_number import plain_number

Headers = Sequence[tuple[str, bytes | None]]
# A record without headers (nearly every one) shares this one: no empty list per buffered record.
NO_HEADERS: Headers = ()

# A C-level call: always checked for "a result with an exception set" (see the module docstring).
_call_headers = operator.methodcaller("headers")

# Python object overhead of a snapshot and its fields, counted with the value in MAX_BUFFERED_BYTES.
_OVERHEAD_BYTES = 400
# A replay's source record's time (epoch ms), written by `pisano-sms replay` (consumer/sre/replay.py):
# a replay is a new record with a new Kafka timestamp, and without the mapping's event_time
# MAX_EVENT_AGE counted from that, so a survey about a payment days old went out when its
# dead-letter was replayed. Its age runs from the older of the two (consumer/ingest/freshness.py),
# and dead-lettered again it keeps this time as its dlq.original.timestamp. Read from any record: it
# can only make one older (expired sooner, held for the dedup horizon sooner), never send one.
SOURCE_TIMESTAMP_HEADER = "dlq.source.timestamp"


def read_headers(message: Any) -> tuple[Headers, str | None]:
    """The message's headers and None, or no headers and why they could not be read.

    Call it once per message: see the module docstring for why a second call is not safe."""
    try:
        headers = _call_headers(message)
        if not headers:  # nearly every record: nothing to check
            return NO_HEADERS, None
        clean: list[tuple[str, bytes | None]] = []
        for name, value in headers:
            if not isinstance(name, str) or not (value is None or isinstance(value, bytes)):
                return NO_HEADERS, "a header is not a (UTF-8 name, bytes value) pair"
            clean.append((name, value))
    except Exception as exc:  # SystemError from a header name that is not UTF-8; any other is the same case
        return NO_HEADERS, f"a header could not be read ({type(exc).__name__}: header names must be UTF-8)"
    return clean, None


class InboundRecord:
    """One Kafka record as plain values; see the module docstring."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_size", "_timestamp_type", "_topic", "_value",
                 "consumed_at_ms", "header_error", "replays", "source_timestamp_ms", "timestamp_ms")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 headers: Headers, timestamp: tuple[int, int], header_error: str | None = None,
                 consumed_at_ms: int | None = None) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = headers
        # Kept as its two ints (no tuple per buffered record); the milliseconds as an attribute:
        # the senders' stale check and the latency histogram read it for every event of a
        # request, with C-level getters.
        self._timestamp_type, self.timestamp_ms = timestamp
        self.header_error = header_error
        # The replay count whose signature verified (consumer/sre/replay_signature.py); 0 for a
        # fresh record or a forged `dlq.replays` header. Set once the record is decoded.
        self.replays = 0
        # When this process read it (epoch ms), for its receipt (consumer/outcomes/receipts.py); the
        # poll loop reads the clock once per poll and passes it.
        self.consumed_at_ms = int(time.time() * 1000) if consumed_at_ms is None else consumed_at_ms
        # Memory this record holds while it waits for its outcome (MAX_BUFFERED_BYTES counts it):
        # computed once, the poll loop and the offsets read it.
        size = _OVERHEAD_BYTES + len(value or b"") + len(key or b"")
        for name, header in headers:
            size += len(name) + len(header or b"") + 64
        self._size = size
        # The replay's source record's time (SOURCE_TIMESTAMP_HEADER), epoch ms; 0: none.
        self.source_timestamp_ms = source_timestamp_ms(headers) if headers else 0

    @classmethod
    def of(cls, message: Any, consumed_at_ms: int | None = None, topics: dict[str, str] | None = None
           ) -> InboundRecord:
        """The snapshot of a consumed message (a snapshot is returned as it is). `topics`: the
        topic names seen so far, so that every record of a topic shares one name (each message
        has a copy of its own, which would stay with the record until its outcome)."""
        if isinstance(message, InboundRecord):
            return message
        headers, error = read_headers(message)
        topic = message.topic()
        if topics is not None:
            topic = topics.setdefault(topic, topic)
        return cls(topic, message.partition(), message.offset(), message.key(), message.value(),
                   headers, message.timestamp(), error, consumed_at_ms)

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp_type, self.timestamp_ms

    @property
    def size(self) -> int:
        """Memory this record holds while it waits for its outcome (MAX_BUFFERED_BYTES counts it)."""
        return self._size

    def __repr__(self) -> str:  # the value and headers may hold personal data
        return f"InboundRecord({self._topic}[{self._partition}]@{self._offset}, {len(self._value or b'')} bytes)"



def source_timestamp_ms(headers: Headers) -> int:
    """The earliest time SOURCE_TIMESTAMP_HEADER writes among these headers (plain ASCII digits,
    epoch ms); 0 for none."""
    found = 0
    for name, value in headers:
        if name == SOURCE_TIMESTAMP_HEADER and value and value.isascii():
            found = older(found, plain_number(value.decode("ascii"), 15) or 0)
    return found


def older(a: int, b: int) -> int:
    """The earlier of two epoch-ms times, 0 (or less) standing for none."""
    if a <= 0:
        return max(b, 0)
    return a if b <= 0 or a <= b else b


def headers_of(message: Any) -> Headers:
    """The headers of a snapshot, or of a raw message read safely (for the DLQ and replay tools)."""
    if isinstance(message, InboundRecord):
        return message.headers()
    return read_headers(message)[0]
