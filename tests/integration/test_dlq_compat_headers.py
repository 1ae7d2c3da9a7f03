"""Dead letters read back from real Kafka carry Kafka Connect's and Spring Kafka's headers beside
ours (DLQ_COMPAT_HEADERS, default on), decodable as those tools decode them; the replay reads ours
and copies none of theirs."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import Any

from consumer.outcomes.compat_headers import COMPAT_HEADER_PREFIXES
from consumer.sre.dlq_read import parse_dead_letter
from consumer.sre.replay import replay_headers
from tests.support.runs import Run

REFUSED = 13002
PHONE_IN_VALUE = "+905551234567"


def raw_headers(message: Any) -> dict[str, bytes]:
    headers = message.headers() or []
    names = [k for k, _ in headers]
    assert len(names) == len(set(names)), f"a header twice: {names}"
    return {k: v or b"" for k, v in headers}


def test_dead_letters_carry_connect_and_spring_headers(run: Run, new_topic: Callable[..., str]) -> None:
    refused_campaign = str(uuid.uuid4())
    run.faults(campaign_codes={refused_campaign: REFUSED})
    records = [*run.events(2, refused_campaign), (b"bad", f"not avro {PHONE_IN_VALUE}".encode())]
    run.start(records, partitions=1, new_topics=new_topic)
    run.finish(dead_letters=3)
    by_reason = {raw_headers(m)["dlq.reason"].decode(): m for m in run.dead}
    assert set(by_reason) == {"pisano_error", "decode_error"}
    for reason, message in by_reason.items():
        h = raw_headers(message)
        offset, partition = int(h["dlq.original.offset"]), int(h["dlq.original.partition"])
        # Ours, with the group.
        assert h["dlq.original.topic"].decode() == run.topic
        assert h["dlq.original.consumer.group"].decode() == run.group
        # Kafka Connect's DeadLetterQueueReporter: UTF-8 strings.
        assert h["__connect.errors.topic"].decode() == run.topic
        assert int(h["__connect.errors.partition"].decode()) == partition
        assert int(h["__connect.errors.offset"].decode()) == offset
        assert h["__connect.errors.connector.name"].decode() == run.group
        assert h["__connect.errors.exception.class.name"].decode() == f"pisano_sms.{reason}"
        assert h["__connect.errors.exception.message"] == h["pisano.error.message"]
        # Spring Kafka's DeadLetterPublishingRecoverer: big-endian int32 and int64.
        assert h["kafka_dlt-original-topic"].decode() == run.topic
        assert struct.unpack(">i", h["kafka_dlt-original-partition"]) == (partition,)
        assert struct.unpack(">q", h["kafka_dlt-original-offset"]) == (offset,)
        assert struct.unpack(">q", h["kafka_dlt-original-timestamp"]) == (int(h["dlq.original.timestamp"]),)
        assert h["kafka_dlt-original-timestamp-type"] == b"CreateTime"
        assert h["kafka_dlt-original-consumer-group"].decode() == run.group
        assert h["kafka_dlt-exception-fqcn"].decode() == f"pisano_sms.{reason}"
        assert h["kafka_dlt-exception-message"] == h["pisano.error.message"]
        for name, value in h.items():
            assert PHONE_IN_VALUE.encode() not in value, name
        # The replay reads ours and publishes none of theirs.
        letter = parse_dead_letter(message)
        assert letter is not None and letter.origin == (run.topic, partition, offset)
        assert not [k for k, _ in replay_headers(letter) if k.startswith(COMPAT_HEADER_PREFIXES)]
    assert raw_headers(by_reason["pisano_error"])["pisano.error.code"] == str(REFUSED).encode()


def test_compat_headers_can_be_turned_off(run: Run, new_topic: Callable[..., str]) -> None:
    run.start([(b"bad", b"not avro")], partitions=1, new_topics=new_topic, DLQ_COMPAT_HEADERS="false")
    run.finish(dead_letters=1)
    h = raw_headers(run.dead[0])
    assert not [k for k in h if k.startswith(COMPAT_HEADER_PREFIXES)]
    assert h["dlq.reason"] == b"decode_error" and h["dlq.original.consumer.group"].decode() == run.group
