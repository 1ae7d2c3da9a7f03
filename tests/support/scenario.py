"""Building blocks of end-to-end scenarios: a topic pair, sample traffic, delivery-log reading."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from consumer.ingest.samples import encode, phone_for, transaction

CAMPAIGNS = ["ae51458c-9e82-417f-8f1d-e074891ea5c1", "9a1e0000-0000-4000-8000-000000000001",
             "3f0c0000-0000-4000-8000-000000000002"]


@dataclass
class Traffic:
    """Records to produce, and what each must become."""

    records: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    valid_phones: set[str] = field(default_factory=set)  # each must be delivered exactly once
    duplicates: int = 0  # extra copies of valid events (must be skipped)
    invalid: Counter[str] = field(default_factory=Counter)  # dead-letter reason -> count


def mixed_traffic(valid: int, *, duplicate_every: int = 10, invalid_every: int = 50, start: int = 0,
                  prefix: str = "evt") -> Traffic:
    """`valid` unique events; a duplicate after every `duplicate_every`-th; invalid ones sprinkled in."""
    traffic = Traffic()
    for n in range(start, start + valid):
        event_id = f"{prefix}-{n}"
        value = encode(transaction(event_id, phone_for(n), CAMPAIGNS[n % len(CAMPAIGNS)], n=n))
        traffic.records.append((event_id.encode(), value))
        traffic.valid_phones.add(phone_for(n))
        if duplicate_every and n % duplicate_every == 0:
            traffic.records.append((event_id.encode(), value))
            traffic.duplicates += 1
        if invalid_every and n % invalid_every == 0:
            kinds = [
                ("invalid_event", encode(transaction(f"{prefix}-badphone-{n}", "+90 12", CAMPAIGNS[0], n=n))),
                ("invalid_event", encode(transaction(f"{prefix}-nophone-{n}", None, CAMPAIGNS[0], n=n))),
                ("unroutable", encode(transaction(f"{prefix}-nocampaign-{n}", phone_for(n), None, n=n))),
                ("decode_error", b"\x00not avro at all\xff" + n.to_bytes(4, "big")),
            ]
            kind, bad = kinds[(n // invalid_every) % len(kinds)]
            traffic.records.append((f"bad-{n}".encode(), bad))
            traffic.invalid[kind] += 1
    return traffic


def delivered_phones(delivery_log: Path) -> Counter[str]:
    phones: Counter[str] = Counter()
    if delivery_log.exists():
        # The simulator may be writing while we read: only whole lines count.
        for line in delivery_log.read_text().split("\n")[:-1]:
            phones[json.loads(line)["phone"]] += 1
    return phones
