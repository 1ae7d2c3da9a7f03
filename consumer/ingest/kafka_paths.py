"""Paths into the Kafka record itself, for the mapping file: `$kafka.key`, `$kafka.headers.<name>`,
`$kafka.timestamp`, `$kafka.topic`, `$kafka.partition`, `$kafka.offset` (README, "Kafka metadata
in the mapping").

A mapping path is a function of `(decoded value, record)`: the decoded value is fastavro's dict,
the record the poll loop's `InboundRecord` snapshot (consumer/ingest/records.py), so a metadata
path reads the snapshot and nothing is copied per event. Called without a record (a plug-in or a
test calling `map(value)` alone) a metadata path finds nothing.

Key and header values are bytes on the wire: they are decoded as UTF-8, strictly, since an id
with a replacement character in it would be another id. A value that is not UTF-8 makes the event
`invalid_event` naming the header. A header written several times counts by its last value (as
Kafka's own `Headers.lastHeader`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from consumer.errors import ConfigError, InvalidEventError

PREFIX = "$kafka."
_HEADER = re.compile(r"^\$kafka\.headers\.(.+)\Z", re.DOTALL)
FIELDS = ("key", "timestamp", "topic", "partition", "offset")

KafkaPath = Callable[[Any, Any], Any]


def is_kafka_path(expression: str) -> bool:
    return expression.startswith(PREFIX)


def compile_kafka_path(key: str, expression: str) -> KafkaPath:
    """The path for `$kafka.<field>` or `$kafka.headers.<name>`; ConfigError naming the mapping key."""
    header = _HEADER.match(expression)
    if header is not None:
        return _header(header.group(1))
    field = expression[len(PREFIX):]
    if field == "key":
        return _key
    if field == "timestamp":
        return _timestamp
    if field == "topic":
        return lambda value, record: record.topic() if record is not None else None
    if field == "partition":
        return lambda value, record: record.partition() if record is not None else None
    if field == "offset":
        return lambda value, record: record.offset() if record is not None else None
    raise ConfigError(f"mapping {key}: {expression!r} is not a Kafka metadata path; expected "
                      f"{', '.join(PREFIX + f for f in FIELDS)} or {PREFIX}headers.<name>")


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEventError(f"{what} is not UTF-8") from None


def _key(value: Any, record: Any) -> str | None:
    if record is None:
        return None
    raw = record.key()
    return None if raw is None else _utf8(raw, "the record key")


def _timestamp(value: Any, record: Any) -> int | None:
    if record is None:
        return None
    kind, stamp = record.timestamp()
    return stamp if kind and stamp >= 0 else None


def _header(name: str) -> KafkaPath:
    what = f"header {name[:64]!r}"

    def read(value: Any, record: Any) -> str | None:
        if record is None:
            return None
        found: bytes | None = None
        for header, raw in record.headers():
            if header == name:
                found = raw
        return None if found is None else _utf8(found, what)

    return read
