"""Campaign ids in one form, lower case, wherever they are compared.

A campaign id is a UUID (Pisano's "API ID"), and a UUID is case-insensitive (RFC 4122: output in
lower case, either case accepted on input). Records and settings may write it in either case, but
every lookup by campaign (its send window, its destination, its contact cooldown, its circuit) is
by exact string: an id written in upper case on one side only found no window (an SMS at 03:00)
and went to the default account. So both sides lower-case it: a record's id in
`consumer.ingest.mapping.known_campaign` (the declarative mapper and the recipient check of any
mapper use it), configured ids when the settings, destinations and route tables are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")


def canonical_campaign_id(value: str) -> str:
    return value.lower()


def canonical_campaign_keys(mapping: Mapping[str, V], setting: str) -> dict[str, V]:
    """`mapping` keyed by canonical campaign ids; ValueError if two keys name one campaign."""
    out: dict[str, V] = {}
    for campaign, value in mapping.items():
        key = canonical_campaign_id(campaign)
        if key in out:
            raise ValueError(f"{setting}: campaign {key} appears twice (campaign ids are compared in lower case)")
        out[key] = value
    return out
