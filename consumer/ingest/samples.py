"""Sample transaction events of the default schema, for the demo, the benchmark and the tests."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fastavro

from consumer.config.resources import default_schema_file
from consumer.ingest.avro import load_schema_file

_schema: Any = None


def default_schema() -> Any:
    global _schema
    if _schema is None:
        _schema = load_schema_file(default_schema_file())
    return _schema


def phone_for(n: int) -> str:
    """A distinct valid Turkish mobile number (E.164) for every n below ten million."""
    return f"+90532{n % 10_000_000:07d}"


def transaction(event_id: str, phone: str | None, campaign_id: str | None, *, n: int = 0,
                transaction_type: str = "CARD_PAYMENT", name: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": datetime.now(UTC),
        "transaction_type": transaction_type,
        "customer": {"id": f"cust-{n}", "phone": phone, "name": name or f"Customer {n}",
                     "email": f"customer{n}@example.com"},
        "campaign_id": campaign_id,
        "attributes": {"branch": f"B{n % 97:02d}"},
    }


def encode(record: dict[str, Any], schema: Any = None) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema or default_schema(), record)
    return buffer.getvalue()


def encode_confluent(record: dict[str, Any], schema: Any, schema_id: int) -> bytes:
    """Confluent wire format: magic byte 0, the 4-byte schema id, then the Avro body."""
    return struct.pack(">bI", 0, schema_id) + encode(record, schema)


def transactions(count: int, campaigns: list[str], *, start: int = 0,
                 prefix: str = "evt") -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of `count` valid events with unique ids and phones, campaigns in turn."""
    for n in range(start, start + count):
        event_id = f"{prefix}-{n}"
        yield event_id.encode(), encode(transaction(event_id, phone_for(n), campaigns[n % len(campaigns)], n=n))
