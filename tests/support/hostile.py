"""A corpus of hostile Kafka records (issue 10): each kind with the outcome it must end in, a
dead-letter reason or `delivered` where the record is in fact a valid event."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from consumer.ingest.samples import encode_confluent, phone_for, transaction
from tests.support.scenario import CAMPAIGNS
from tests.support.zigzag import varint

CAMPAIGN = CAMPAIGNS[0]
UNKNOWN_CAMPAIGN = "deadbeef-0000-4000-8000-000000000000"  # a campaign id Pisano does not know
RECURSIVE = {"type": "record", "name": "Node", "fields": [
    {"name": "v", "type": "string"}, {"name": "next", "type": ["null", "Node"], "default": None}]}
NULL_ITEMS = {"type": "record", "name": "Nulls", "fields": [{"name": "xs", "type": {"type": "array", "items": "null"}}]}
OVERSIZE_BYTES = 300 * 1024  # above the MAX_MESSAGE_BYTES the test sets


def nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "record", "name": "L0", "fields": [{"name": "v", "type": "int"}]}
    for n in range(1, levels):
        schema = {"type": "record", "name": f"L{n}", "fields": [{"name": "inner", "type": schema}]}
    return schema


@dataclass
class Hostile:
    kind: str
    value: bytes | None
    expected: str  # a dlq.reason, or "delivered"
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None
    raw_headers: list[tuple[bytes, bytes | None]] | None = None  # header names that are not UTF-8
    phone: str | None = None  # the canonical phone Pisano receives, when delivered



def corpus(schema: Any, ids: dict[str, int]) -> list[Hostile]:
    """Every kind once. `ids`: registry ids of `default`, `recursive`, `deep`, `null_items`, `protobuf`."""
    default = ids["default"]
    header = struct.pack(">bI", 0, default)
    serial = iter(range(9_000_000, 9_001_000))

    def event(event_id: str | None = None, phone: str | None = None, campaign: str | None = CAMPAIGN,
              **fields: Any) -> tuple[bytes, str]:
        n = next(serial)
        record = transaction(event_id or f"hostile-{n}", phone if phone is not None else phone_for(n), campaign, n=n)
        for name, value in fields.items():
            if name == "name":
                record["customer"]["name"] = value
            else:
                record[name] = value
        return encode_confluent(record, schema, default), phone_for(n)

    def valid(kind: str, **fields: Any) -> Hostile:
        value, phone = event(**fields)
        return Hostile(kind, value, "delivered", key=kind.encode(), phone=phone)

    ok, _ = event()
    marked, _ = event(event_id="EVENTID!")
    bad_utf8 = marked.replace(b"EVENTID!", b"\xff\xfe\xfd\xc3\x28\xed\xa0\x80")
    n_nbsp = next(serial)
    nbsp_value, _ = event(phone="+90\u00a0532\u00a0" + phone_for(n_nbsp)[6:9] + "\u00a0" + phone_for(n_nbsp)[9:])
    deep_node = b"\x02a\x02" * 5000 + b"\x02a\x00"
    return [
        # bytes that are not a record
        Hostile("not avro", header + b"just some bytes, not Avro \xff\xfe", "decode_error"),
        Hostile("json, no magic byte", json.dumps({"event_id": "x"}).encode(), "decode_error"),
        Hostile("wrong magic byte", b"\x01" + ok[1:], "decode_error"),
        Hostile("unknown schema id", struct.pack(">bI", 0, 424242) + ok[5:], "decode_error"),
        Hostile("truncated", ok[:-9], "decode_error"),
        Hostile("bytes left over", ok + b"\x00\x01", "decode_error"),
        Hostile("negative length", header + varint(-5) + ok[5:], "decode_error"),
        Hostile("huge length", header + varint(2**40) + b"abc", "decode_error"),
        Hostile("invalid utf-8 string", bad_utf8, "decode_error"),
        Hostile("empty value", b"", "decode_error"),
        Hostile("tombstone", None, "decode_error"),
        Hostile("oversize value", header + os.urandom(OVERSIZE_BYTES), "oversize"),
        Hostile("timestamp beyond year 9999", event(occurred_at=253_402_300_800_000)[0], "decode_error"),
        # schemas that are refused
        Hostile("recursive writer schema, 5000 levels", struct.pack(">bI", 0, ids["recursive"]) + deep_node,
                "unsupported_schema"),
        Hostile("schema nested 40 levels", struct.pack(">bI", 0, ids["deep"]) + b"\x02", "unsupported_schema"),
        Hostile("array of nulls claiming 10^12 items", struct.pack(">bI", 0, ids["null_items"]) + varint(10**12),
                "unsupported_schema"),
        Hostile("protobuf schema id", struct.pack(">bI", 0, ids["protobuf"]) + b"\x08\x01", "unsupported_schema"),
        # headers
        Hostile("header name not utf-8", ok, "decode_error",
                raw_headers=[(b"\xff\xfetrace", b"1"), (b"ok", None)]),
        # events that cannot be recipients
        Hostile("phone with letters", event(phone="+90 541 ABC 45 67")[0], "invalid_event"),
        Hostile("phone of 70 characters", event(phone="+90" + "5" * 67)[0], "invalid_event"),
        Hostile("phone with an extension", event(phone="+905321234567x")[0], "invalid_event"),
        Hostile("no phone", event(phone="")[0], "invalid_event"),
        Hostile("event id of 10 KB", event(event_id="e" * 10_240)[0], "invalid_event"),
        Hostile("empty event id", _empty_id(schema, default), "invalid_event"),
        Hostile("no campaign", event(campaign=None)[0], "unroutable"),
        Hostile("campaign not a uuid", event(campaign="summer-campaign")[0], "unroutable"),
        Hostile("campaign with path characters", event(campaign="../../v1/admin?x=1#")[0], "unroutable"),
        Hostile("campaign as urn:uuid", event(campaign=f"urn:uuid:{CAMPAIGN}")[0], "unroutable"),
        Hostile("campaign Pisano does not know", event(campaign=UNKNOWN_CAMPAIGN)[0], "pisano_error"),
        # hostile-looking but valid: delivered once
        Hostile("phone with non-breaking spaces", nbsp_value, "delivered", key=b"nbsp", phone=phone_for(n_nbsp)),
        Hostile("foreign country code", event(phone="+1 650 253 0000")[0], "delivered", key=b"foreign",
                phone="+16502530000"),
        valid("name of 100 KB", name="n" * 102_400),
        valid("attribute of 100 KB", attributes={"blob": "a" * 102_400}),
        valid("map of 10,000 keys", attributes={f"k{i}": "v" for i in range(10_000)}),
        valid("timestamp in year 9999", occurred_at=253_402_300_799_000),
        valid("negative timestamp", occurred_at=-2_208_988_800_000),
        _keyed(valid("no key"), None),
        _keyed(valid("key of 10 KB"), b"k" * 10_240),
        _headed(valid("duplicate header names"), [("trace", b"a"), ("trace", b"b"), ("trace", b"")]),
        _headed(valid("header value not utf-8"), [("trace", b"\xff\xfe\x00")]),
    ]


def _empty_id(schema: Any, schema_id: int) -> bytes:
    return encode_confluent(transaction("", phone_for(9_001_500), CAMPAIGN), schema, schema_id)


def _keyed(item: Hostile, key: bytes | None) -> Hostile:
    item.key = key
    return item


def _headed(item: Hostile, headers: list[tuple[str, bytes]]) -> Hostile:
    item.headers = headers
    return item

