#!/usr/bin/env python3
"""Per-event CPU of the intake hot path without Kafka: map + recipient check (`decode_and_map`
with the record already decoded), for the default mapping and, when this version supports them,
a mapping with typed attributes and Kafka metadata paths.

    python benchmarks/mapping_micro.py [--events 20000] [--rounds 5]

Prints the best round's microseconds per event for each mapping (best of N: the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.config.resources import default_mapping_file  # noqa: E402
from consumer.ingest.intake import decode_and_map  # noqa: E402
from consumer.ingest.mapping import DeclarativeMapper  # noqa: E402
from consumer.ingest.records import InboundRecord  # noqa: E402
from consumer.ingest.samples import phone_for, transaction  # noqa: E402

TYPED = """
event_id: $kafka.headers.id
phone: customer.phone
phone_region: TR
campaign_id: campaign_id
event_time: occurred_at
custom_attributes:
  name: customer.name
  external_id: customer.id
  email: customer.email
  amount: {path: attributes.amount, type: float}
  paid_at: {path: occurred_at, type: datetime}
  partition: $kafka.partition
"""


class Decoded:
    """A decoder that hands back the already decoded record (the value is its index)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def decode(self, value: bytes) -> dict[str, Any]:
        return self.records[int(value)]


def run(mapper: Any, events: int, rounds: int) -> float:
    records = []
    for n in range(events):
        record = transaction(f"evt-{n}", phone_for(n), "ae51458c-9e82-417f-8f1d-e074891ea5c1", n=n)
        record["attributes"] = {"branch": "B01", "amount": f"{n % 1000}.50"}
        records.append(record)
    decoder = Decoded(records)
    inbound = [InboundRecord("t", n % 6, n, None, str(n).encode(), [("id", f"hdr-{n}".encode())],
                             (1, int(time.time() * 1000))) for n in range(events)]
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for record in inbound:
            decode_and_map(record, decoder, mapper, 1 << 20)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - started)
    return best / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    default = DeclarativeMapper.from_file(default_mapping_file())
    print(f"default mapping: {run(default, args.events, args.rounds):.2f} us/event")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(TYPED)
    try:
        typed = DeclarativeMapper.from_file(Path(handle.name))
    except Exception as exc:  # an older version without typed attributes or metadata paths
        print(f"typed + metadata mapping: not supported here ({type(exc).__name__})")
        return
    print(f"typed + metadata mapping: {run(typed, args.events, args.rounds):.2f} us/event")


if __name__ == "__main__":
    main()
