"""Issue 13 point 6: the Kafka record's key, headers, timestamp, topic, partition and offset in
the mapping and the route tables (consumer/ingest/kafka_paths.py)."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.errors import ConfigError, InvalidEventError
from consumer.ingest.intake import decode_and_map
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.records import InboundRecord

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
OTHER = "9a1e0000-0000-4000-8000-000000000001"
VALUE = {"customer": {"phone": "+905321234567", "id": "c1"}}


class Decoded:
    def decode(self, value: bytes) -> dict[str, Any]:
        return VALUE


def record(headers: list[tuple[str, bytes | None]], key: bytes | None = b"k-1") -> InboundRecord:
    return InboundRecord("payments", 3, 41, key, b"v", headers, (1, 1_726_549_175_000))


def mapper(**spec: Any) -> DeclarativeMapper:
    base: dict[str, Any] = {"event_id": "$kafka.headers.id", "phone": "customer.phone",
                            "campaign_id": "$kafka.headers.campaign",
                            "custom_attributes": {"external_id": "customer.id"}}
    base.update(spec)
    return DeclarativeMapper(base)


def test_an_outbox_id_header_is_the_event_id_and_metadata_fills_attributes() -> None:
    m = mapper(custom_attributes={"external_id": "customer.id", "key": "$kafka.key", "topic": "$kafka.topic",
                                  "partition": "$kafka.partition", "offset": "$kafka.offset",
                                  "at": "$kafka.timestamp"})
    r = decode_and_map(record([("id", b"outbox-7"), ("campaign", CAMPAIGN.encode())]), Decoded(), m, 1024)
    assert r.event_id == "outbox-7" and r.campaign_id == CAMPAIGN
    assert r.custom_attributes == {"external_id": "c1", "key": "k-1", "topic": "payments", "partition": "3",
                                   "offset": "41", "at": "1726549175000"}


def test_a_header_written_twice_counts_by_its_last_value() -> None:
    r = decode_and_map(record([("id", b"first"), ("id", b"last"), ("campaign", CAMPAIGN.encode())]),
                       Decoded(), mapper(), 1024)
    assert r.event_id == "last"


def test_cloudevents_header_routes_the_campaign() -> None:
    m = mapper(event_id="$kafka.headers.ce_id", campaign_id=None,
               campaign_routes={"field": "$kafka.headers.ce_type", "routes": {"payment.done": CAMPAIGN},
                                "default": OTHER})
    r = decode_and_map(record([("ce_id", b"ce-1"), ("ce_type", b"payment.done")]), Decoded(), m, 1024)
    assert (r.event_id, r.campaign_id) == ("ce-1", CAMPAIGN)
    r = decode_and_map(record([("ce_id", b"ce-2")]), Decoded(), m, 1024)
    assert r.campaign_id == OTHER


def test_a_header_that_is_not_utf8_is_an_invalid_event_naming_it() -> None:
    with pytest.raises(InvalidEventError, match="header 'id' is not UTF-8"):
        decode_and_map(record([("id", b"\xff\xfe"), ("campaign", CAMPAIGN.encode())]), Decoded(), mapper(), 1024)
    m = mapper(event_id="$kafka.key")
    with pytest.raises(InvalidEventError, match="record key is not UTF-8"):
        decode_and_map(record([("campaign", CAMPAIGN.encode())], key=b"\x80"), Decoded(), m, 1024)


def test_a_missing_header_is_a_missing_value() -> None:
    with pytest.raises(InvalidEventError, match="no event id"):
        decode_and_map(record([("campaign", CAMPAIGN.encode())]), Decoded(), mapper(), 1024)


def test_map_without_the_record_finds_no_metadata() -> None:
    # The public plug-in contract: map(value) alone still works, metadata paths find nothing.
    with pytest.raises(InvalidEventError, match="no event id"):
        mapper().map(VALUE)


def test_an_unknown_metadata_path_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"event_id: '\$kafka.headres.id' is not a Kafka metadata path"):
        mapper(event_id="$kafka.headres.id")


def test_a_mapper_without_map_kafka_is_called_as_before() -> None:
    class Old:
        def map(self, value: Any) -> Any:
            return DeclarativeMapper({"event_id": "customer.id", "phone": "customer.phone",
                                      "campaign_id": "customer.id"}).map(value)

    with pytest.raises(Exception, match="campaign"):
        decode_and_map(record([]), Decoded(), Old(), 1024)  # type: ignore[arg-type]


def test_an_attribute_error_inside_a_mapper_is_that_event_s_failure_not_a_fallback() -> None:
    from consumer.errors import RecordError
    from consumer.ingest.mapping import Mapper

    class Buggy(Mapper):
        def map(self, value: Any) -> Any:
            return None.phone  # type: ignore[attr-defined]

    with pytest.raises(RecordError, match="the mapper failed: AttributeError"):
        decode_and_map(record([]), Decoded(), Buggy(), 1024)
