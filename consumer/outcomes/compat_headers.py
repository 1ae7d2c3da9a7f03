"""The dead-letter headers of Kafka Connect and Spring Kafka, written beside ours (DLQ_COMPAT_HEADERS).

Generic DLQ tooling (dashboards, re-drivers, `kcat` recipes) reads where a record came from in the
headers of one of these two: Kafka Connect's DeadLetterQueueReporter (`__connect.errors.*`, every
value a UTF-8 string) and Spring Kafka's DeadLetterPublishingRecoverer (`kafka_dlt-*`, where the
partition is a 4-byte and the offset and timestamp 8-byte big-endian integers, as Java's
`ByteBuffer.putInt` / `putLong` write them). The encodings are theirs, so their readers decode ours.

Written (README, "Dead-letter records"):

    __connect.errors.topic / .partition / .offset    the source record (decimal strings)
    __connect.errors.connector.name                  the consumer group (Connect names its
                                                     sink's group after the connector)
    __connect.errors.exception.class.name            pisano_sms.<dlq.reason>
    __connect.errors.exception.message               the redacted message of pisano.error.message
    kafka_dlt-original-topic                         UTF-8
    kafka_dlt-original-partition                     int32, big-endian
    kafka_dlt-original-offset                        int64, big-endian
    kafka_dlt-original-timestamp                     int64, big-endian (-1 when the record had none)
    kafka_dlt-original-timestamp-type                CreateTime | LogAppendTime | NoTimestampType
    kafka_dlt-original-consumer-group                UTF-8
    kafka_dlt-exception-fqcn                         pisano_sms.<dlq.reason>
    kafka_dlt-exception-message                      the redacted message

Not written: Connect's task id, stage and executing class, and both tools' stack traces; there
is no Java task or exception behind a dead-letter of this consumer, and a made-up one would
mislead. The `dlq.*` headers stay the contract the replay reads; these are for other tools only.
"""

from __future__ import annotations

import struct
from typing import Any

# Stripped from a record being dead-lettered again and from a replayed record, like our own:
# a record that fails again gets fresh ones (consumer/outcomes/deadletter.py, consumer/sre/dlq_read.py).
COMPAT_HEADER_PREFIXES = ("__connect.errors.", "kafka_dlt-")

# confluent_kafka's timestamp types (TIMESTAMP_NOT_AVAILABLE, _CREATE_TIME, _LOG_APPEND_TIME) as
# Kafka's Java TimestampType.toString() names them.
_TIMESTAMP_TYPES = {0: "NoTimestampType", 1: "CreateTime", 2: "LogAppendTime"}


def exception_name(reason: str) -> str:
    """What stands where the tools expect an exception class: the dead-letter reason, so a tool
    that groups by exception groups by reason."""
    return f"pisano_sms.{reason}"


def compat_headers(message: Any, reason: str, error_message: str, group: str) -> list[tuple[str, bytes]]:
    """Connect's and Spring's headers for `message` (a consumed record); `error_message` must be
    redacted already (it is the text of pisano.error.message)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    timestamp_type, timestamp = message.timestamp()
    if timestamp_type not in _TIMESTAMP_TYPES or timestamp is None or timestamp < 0:
        timestamp_type, timestamp = 0, -1
    name = exception_name(reason)
    return [
        ("__connect.errors.topic", topic.encode()),
        ("__connect.errors.partition", str(partition).encode()),
        ("__connect.errors.offset", str(offset).encode()),
        ("__connect.errors.connector.name", group.encode()),
        ("__connect.errors.exception.class.name", name.encode()),
        ("__connect.errors.exception.message", error_message.encode()),
        ("kafka_dlt-original-topic", topic.encode()),
        ("kafka_dlt-original-partition", struct.pack(">i", partition)),
        ("kafka_dlt-original-offset", struct.pack(">q", offset)),
        ("kafka_dlt-original-timestamp", struct.pack(">q", timestamp)),
        ("kafka_dlt-original-timestamp-type", _TIMESTAMP_TYPES[timestamp_type].encode()),
        ("kafka_dlt-original-consumer-group", group.encode()),
        ("kafka_dlt-exception-fqcn", name.encode()),
        ("kafka_dlt-exception-message", error_message.encode()),
    ]
