"""Differential fuzzing of the native per-record core (consumer/ingest/fused.py, native/) against
the Python path: for any bytes, any schema and any mapping it plans for,

    decode_and_map(record, decoder, mapper, max_bytes, fused=native)

must give exactly what `decode_and_map(record, decoder, mapper, max_bytes)` gives: the same
Recipient field for field (attribute dicts in the same order), or the same exception class and
message. The native core may answer None (Python then decides), never anything else.

Random schemas are built around random mappings (records nested and reused by name, unions in
every position, maps a path goes through by key, arrays, fixed, bytes, floats, enums, logical
types); random valid values are written by a small Avro encoder of our own, which also writes the
valid but unusual encodings (blocks with negative counts and sizes, several blocks, duplicate map
keys, over-long varints) and records where each varint, length, string, boolean and index lies;
those payloads are then mutated at the byte level (bit flips, truncation, extension, 10- and
11-byte varints, negative lengths and counts, counts past the end, boolean bytes 2..255, invalid
UTF-8, union and enum indexes out of range). Fixed seeds, plain `random`: a failure names its case.
"""

from __future__ import annotations

import json
import random
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import phonenumbers
import pytest

from consumer.app import RoutedMapper
from consumer.errors import UnsupportedSchemaError
from consumer.ingest import fused
from consumer.ingest.avro import RegistryDecoder, SchemalessDecoder, UnknownSchemaError, parse_writer_schema, reader_for
from consumer.ingest.intake import decode_and_map, native_recipient
from consumer.ingest.mapping import DeclarativeMapper, Recipient
from consumer.ingest.records import InboundRecord

MAX_BYTES = 1_000_000
MASK64 = (1 << 64) - 1
Span = tuple[str, int, int, int]  # (kind, start, end, meta)

# --------------------------------------------------------------------------------------------
# Values


def _uuids(rnd: random.Random, n: int) -> list[str]:
    return [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(n)]


CAMPAIGNS = _uuids(random.Random(7), 6)
ROUTED = set(CAMPAIGNS[:3])  # the campaigns a destination takes (RoutedMapper)


def _example_phones() -> tuple[list[str], list[str]]:
    """(every region's example mobile and fixed-line number and every non-geographic entity's,
    in E.164; their national forms)."""
    e164, national = set(), set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                e164.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
                national.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL))
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            e164.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return sorted(e164), sorted(national)


PHONES, NATIONAL_PHONES = _example_phones()
_OTHER_DIGITS = (0x660, 0x6F0, 0x966, 0xFF10, 0x1D7CE)  # Arabic-Indic, Persian, Devanagari, full-width, math


def phone_variant(rnd: random.Random, phone: str) -> str:
    """A valid E.164 number as it is (mostly), or one of the ways it goes wrong."""
    if rnd.random() < 0.7:
        return phone
    digits = phone[1:]
    choice = rnd.randrange(16)
    at = rnd.randrange(len(digits))
    if choice == 0:  # one digit changed
        return "+" + digits[:at] + str((int(digits[at]) + rnd.randint(1, 9)) % 10) + digits[at + 1:]
    if choice == 1:
        return "+" + digits[:at] + str(rnd.randrange(10)) + digits[at:]
    if choice == 2:
        return "+" + digits[:at] + digits[at + 1:]
    if choice == 3:  # spaces
        return "+" + digits[:2] + " " + digits[2:5] + " " + digits[5:]
    if choice == 4:
        return rnd.choice(NATIONAL_PHONES)
    if choice == 5:
        return "+0" + digits[rnd.randrange(2):]
    if choice == 6:  # other scripts' digits
        base = rnd.choice(_OTHER_DIGITS)
        return "+" + "".join(chr(base + int(d)) if rnd.random() < 0.5 else d for d in digits)
    if choice == 7:
        return rnd.choice([" ", "\t", "\n", "\u00a0", "\u200b"]) + phone if rnd.random() < 0.5 else phone + " "
    if choice == 8:
        return "00" + digits
    if choice == 9:
        return phone[:rnd.randint(0, 7)]
    if choice == 10:
        return "+" + digits + "".join(str(rnd.randrange(10)) for _ in range(rnd.randint(1, 4)))
    if choice == 11:
        return digits
    if choice == 12:
        return "+" + digits[:at] + rnd.choice("abcX#*-.()/") + digits[at:]
    if choice == 13:
        return "\uff0b" + digits  # full-width plus
    if choice == 14:
        return "+" + str(rnd.randint(1, 9)) + "".join(str(rnd.randrange(10)) for _ in range(rnd.randint(5, 16)))
    return rnd.choice(["", "+", "+1", "tel:" + phone, phone + ";ext=1", phone * 2])


def event_id_value(rnd: random.Random) -> str:
    if rnd.random() < 0.88:
        return rnd.choice([f"e-{rnd.randrange(10**6)}", str(uuid.UUID(int=rnd.getrandbits(128))),
                           f"ğüş-{rnd.randrange(99)}", f"\U0001f4f1{rnd.randrange(99)}", "x"])
    return rnd.choice(["", " ", "\x00", "x" * 255, "x" * 256, "x" * 257, "y" * 1023, "y" * 1024, "y" * 1025,
                       "\U0001f4f1" * 256, "\U0001f4f1" * 257, "e\u0301" * 128, "ğ" * 300, "ğ" * 2000])


def campaign_value(rnd: random.Random) -> str:
    campaign = rnd.choice(CAMPAIGNS)
    r = rnd.random()
    if r < 0.7:
        return campaign
    if r < 0.8:
        return campaign.upper()
    if r < 0.88:
        return "".join(c.upper() if rnd.random() < 0.5 else c for c in campaign)
    return rnd.choice(["{" + campaign + "}", "urn:uuid:" + campaign, campaign.replace("-", ""), campaign[:-1],
                       campaign + "0", campaign + "\n", " " + campaign, campaign[:-1] + "g", "",
                       campaign.replace("1", "\uff11"), campaign.replace("-", "\u2010"), "a" * 1025,
                       campaign[:8] + "-" + campaign[9:], "not-a-campaign"])


def attribute_value(rnd: random.Random) -> str:
    if rnd.random() < 0.7:
        return rnd.choice(["Moda", "Ayşe Y\u0131lmaz", "c-1", "", "\U0001f600 ok", "x" * 64, "0"])
    return rnd.choice(["a" * 1023, "a" * 1024, "a" * 1025, "ğ" * 1024, "ğ" * 1025, "\U0001f4f1" * 1025,
                       "b" * 255, "b" * 256, "b" * 257, "\u0000", "\ufeff", "\u2028"])


def random_text(rnd: random.Random) -> str:
    return rnd.choice(["", "a", "hello", "ğüş", "\U0001f600", "x" * rnd.randint(0, 40),
                       "".join(chr(rnd.randint(32, 0x2FFF)) for _ in range(rnd.randint(0, 8)))])


_POOLS: dict[str, Callable[[random.Random], str]] = {
    "event_id": event_id_value,
    "phone": lambda rnd: phone_variant(rnd, rnd.choice(PHONES)),
    "campaign": campaign_value,
    "attr": attribute_value,
}
_LONGS = [0, 1, -1, 2, 63, 64, -64, -65, 127, 128, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 10**12]
# The raw values Python's logical readers convert: the ends of each range and one past them.
_LOGICAL_EDGES = {
    "date": (-719162, 2932896), "time-millis": (-3599999, 86399999), "time-micros": (-3599999999, 86399999999),
    "timestamp-millis": (-62135596800000, 253402300799999),
    "local-timestamp-millis": (-62135596800000, 253402300799999),
    "timestamp-micros": (-62135596800000000, 253402300799999999),
    "local-timestamp-micros": (-62135596800000000, 253402300799999999)}


# --------------------------------------------------------------------------------------------
# An Avro encoder that records where things are


def zigzag(n: int) -> int:
    return ((n << 1) ^ (n >> 63)) & MASK64


def varint(z: int, width: int = 0) -> bytes:
    """The unsigned `z` as a varint, padded to `width` bytes with empty groups (still valid up to 10)."""
    out = bytearray()
    while True:
        byte, z = z & 0x7F, z >> 7
        if z or len(out) + 1 < width:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def long_bytes(n: int, width: int = 0) -> bytes:
    return varint(zigzag(n), width)


class Writer:
    """Writes one random valid value of a schema (its JSON form), choosing the values on the
    mapping's paths from the pools of their roles."""

    def __init__(self, rnd: random.Random, named: dict[str, Any], roles: dict[tuple[str, ...], str],
                 tricky: bool) -> None:
        self.rnd, self.named, self.roles, self.tricky = rnd, named, roles, tricky
        self.inner = {path[:n] for path in roles for n in range(1, len(path))}
        self.keys: dict[tuple[str, ...], set[str]] = {}
        for path in roles:
            for n in range(len(path)):
                self.keys.setdefault(path[:n], set()).add(path[n])
        self.out = bytearray()
        self.spans: list[Span] = []

    def child(self) -> Writer:
        sub = Writer.__new__(Writer)
        sub.__dict__.update(self.__dict__)
        sub.out, sub.spans = bytearray(), []
        return sub

    def long(self, n: int, kind: str, meta: int = 0) -> None:
        width = self.rnd.randint(1, 10) if self.tricky and self.rnd.random() < 0.05 else 0
        start = len(self.out)
        self.out += long_bytes(n, width)
        self.spans.append((kind, start, len(self.out), meta))

    def string(self, text: str) -> None:
        data = text.encode()
        start = len(self.out)
        self.long(len(data), "len")
        self.spans.append(("str", len(self.out), len(self.out) + len(data), start))
        self.out += data

    def resolve(self, schema: Any) -> Any:
        while True:
            if isinstance(schema, str) and schema in self.named:
                schema = self.named[schema]
            elif isinstance(schema, dict) and isinstance(schema["type"], (dict, list)):
                schema = schema["type"]
            elif isinstance(schema, dict) and schema["type"] in self.named:
                schema = self.named[schema["type"]]
            else:
                return schema

    def kind(self, schema: Any) -> str:
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return "union"
        return str(schema if isinstance(schema, str) else schema["type"])

    def value(self, schema: Any, path: tuple[str, ...] | None) -> None:
        rnd = self.rnd
        schema = self.resolve(schema)
        if isinstance(schema, list):
            self.union(schema, path)
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if kind == "null":
            return
        if kind == "boolean":
            self.spans.append(("bool", len(self.out), len(self.out) + 1, 0))
            self.out.append(rnd.randrange(2))
        elif kind in ("int", "long"):
            if logical in _LOGICAL_EDGES:
                lo, hi = _LOGICAL_EDGES[logical]
                n = rnd.choice([0, 1, -1, lo, hi, rnd.randint(lo, hi), rnd.randint(lo, hi)]
                               + ([lo - 1, hi + 1, 2**62] if rnd.random() < 0.04 else []))
            elif path is not None and path in self.roles:
                n = rnd.choice([*_LONGS, rnd.randrange(10**9)])
            else:
                n = rnd.choice([*_LONGS, rnd.randint(-1000, 1000)])
            self.long(n, "long")
        elif kind == "float":
            self.out += struct.pack("<f", rnd.choice([0.0, -0.0, 1.5, float("nan"), float("inf")]))
        elif kind == "double":
            self.out += struct.pack("<d", rnd.choice([0.0, 2.5, -1e300, float("nan"), float("-inf")]))
        elif kind == "bytes":
            data = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 4 if logical != "decimal" else 2)))
            self.long(len(data), "len")
            self.out += data
        elif kind == "string":
            role = self.roles.get(path) if path is not None else None
            if logical == "uuid":
                self.string(str(uuid.UUID(int=rnd.getrandbits(128))) if rnd.random() < 0.9 else random_text(rnd))
            else:
                self.string(_POOLS[role](rnd) if role is not None else random_text(rnd))
        elif kind == "fixed":
            size = schema["size"]
            self.out += bytes(rnd.randrange(256) for _ in range(size)) if logical != "decimal" else bytes(size)
        elif kind == "enum":
            self.long(rnd.randrange(len(schema["symbols"])), "enum", len(schema["symbols"]))
        elif kind in ("record", "error"):
            for field in schema["fields"]:
                self.value(field["type"], None if path is None else (*path, field["name"]))
        elif kind == "array":
            items = schema["items"]
            self.blocks([lambda w, items=items: w.value(items, None) for _ in range(rnd.randint(0, 3))])
        elif kind == "map":
            values = schema["values"]
            wanted = sorted(self.keys.get(path, ())) if path is not None else []
            keys = [key for key in wanted if rnd.random() < 0.95]
            keys += [rnd.choice(["k", "other", "", "ğ", "branch_"]) for _ in range(rnd.randint(0, 2))]
            rnd.shuffle(keys)
            entries = [(key, path) for key in keys]
            if self.tricky and keys and rnd.random() < 0.3:  # a key written twice: the last one counts
                entries.insert(rnd.randint(0, len(entries)), (rnd.choice(keys), path if rnd.random() < 0.5 else None))

            def entry(w: Writer, key: str, where: tuple[str, ...] | None) -> None:
                w.string(key)
                w.value(values, None if where is None else (*where, key))

            self.blocks([lambda w, key=key, where=where: entry(w, key, where) for key, where in entries])
        else:
            raise AssertionError(f"unknown kind {kind!r}")

    def union(self, branches: list[Any], path: tuple[str, ...] | None) -> None:
        rnd = self.rnd
        index = rnd.randrange(len(branches))
        if path is not None and rnd.random() < 0.93:
            kinds = [self.kind(branch) for branch in branches]
            if path in self.roles:
                preferred = [i for i, k in enumerate(kinds) if k == "string"] or [i for i, k in enumerate(kinds)
                                                                                   if k not in ("null",)]
            elif path in self.inner:
                preferred = [i for i, k in enumerate(kinds) if k in ("record", "map")]
            else:
                preferred = []
            if preferred:
                index = rnd.choice(preferred)
        self.long(index, "index", len(branches))
        self.value(branches[index], path)

    def blocks(self, items: list[Callable[[Writer], None]]) -> None:
        rnd = self.rnd
        chunks: list[list[Callable[[Writer], None]]] = []
        rest = list(items)
        while rest:
            cut = rnd.randint(1, len(rest)) if self.tricky else len(rest)
            chunks.append(rest[:cut])
            rest = rest[cut:]
        for chunk in chunks:
            if self.tricky and rnd.random() < 0.4:  # a negative count, then the block's size in bytes
                sub = self.child()
                for item in chunk:
                    item(sub)
                self.long(-len(chunk), "count", len(chunk))
                self.long(len(sub.out), "size")
                offset = len(self.out)
                self.out += sub.out
                self.spans += [(k, s + offset, e + offset, m + offset if k == "str" else m) for k, s, e, m in sub.spans]
            else:
                self.long(len(chunk), "count")
                for item in chunk:
                    item(self)
        self.long(0, "count")


# --------------------------------------------------------------------------------------------
# Byte-level mutations


_BAD_UTF8 = [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xb0\x80", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf",
             b"\xf0\x80\x80\xaf", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xff", b"\xfe", b"\x80", b"\xc3",
             b"\xe2\x82", b"\xf0\x9f\x93"]


def _splice(payload: bytes, start: int, end: int, new: bytes) -> bytes:
    return payload[:start] + new + payload[end:]


def mutate(rnd: random.Random, payload: bytes, spans: list[Span]) -> bytes:
    def pick(*kinds: str) -> Span | None:
        found = [span for span in spans if span[0] in kinds]
        return rnd.choice(found) if found else None

    choice = rnd.randrange(17)
    if choice == 1 and payload:
        return payload[:rnd.randrange(len(payload))]
    if choice == 2:
        return payload + rnd.choice([b"\x00", b"\x02", bytes([rnd.randrange(256)]), b"\x80\x80\x80"])
    if choice == 3 and payload:
        at = rnd.randrange(len(payload))
        return _splice(payload, at, at + 1, bytes([rnd.randrange(256)]))
    if choice == 4:
        at = rnd.randint(0, len(payload))
        return _splice(payload, at, at, bytes([rnd.randrange(256)]))
    if choice == 5 and payload:
        at = rnd.randrange(len(payload))
        return _splice(payload, at, at + 1, b"")
    if choice == 6 and (span := pick("long", "len", "count", "size", "index", "enum")):
        _, start, end, _ = span
        z = 0
        for shift, byte in enumerate(payload[start:end]):
            z |= (byte & 0x7F) << (7 * shift)
        z &= MASK64
        form = rnd.randrange(4)
        if form == 0:  # 10 bytes: valid
            new = varint(z, 10)
        elif form == 1:  # 11 bytes: past 64 bits
            new = varint(z, 10)[:9] + bytes([varint(z, 10)[9] | 0x80, 0x00])
        elif form == 2:  # 10 bytes, bits past the 64th set (Python masks them off)
            ten = bytearray(varint(z, 10))
            ten[9] |= rnd.choice([0x02, 0x7E, 0x7F])
            new = bytes(ten)
        else:  # the top bit: a value near +-2**63
            new = varint(z | (1 << 63), 10)
        return _splice(payload, start, end, new)
    if choice == 7 and (span := pick("len")):
        return _splice(payload, span[1], span[2], long_bytes(rnd.choice([-1, -2, -64, -(2**63), 2**62, 10**6])))
    if choice == 8 and (span := pick("count")):
        _, start, end, meta = span
        new = rnd.choice([long_bytes(len(payload) * 2), long_bytes(2**62), long_bytes(-(2**63)),
                          long_bytes(-max(meta, 1)) + long_bytes(rnd.choice([-1, -(2**63), 10**9, 0, 3])),
                          long_bytes(-1) + long_bytes(-1), long_bytes(0), long_bytes(1), long_bytes(-1)])
        return _splice(payload, start, end, new)
    if choice == 9 and (span := pick("size")):
        return _splice(payload, span[1], span[2], long_bytes(rnd.choice([-1, 0, 10**9, -(2**63), 2**63 - 1])))
    if choice == 10 and (span := pick("bool")):
        return _splice(payload, span[1], span[2], bytes([rnd.randint(2, 255)]))
    if choice == 11 and (span := pick("str")):
        _, start, end, length_at = span
        old = payload[start:end]
        at = rnd.randint(0, len(old))
        new = old[:at] + rnd.choice(_BAD_UTF8) + old[at:]
        return payload[:length_at] + long_bytes(len(new)) + new + payload[end:]
    if choice == 12 and (span := pick("str")):  # valid UTF-8 of another length: the length no longer matches
        _, start, end, _ = span
        return _splice(payload, start, end, payload[start:end] + rnd.choice([b"x", "ğ".encode(), b""]) + b"!")
    if choice == 13 and (span := pick("index", "enum")):
        _, start, end, meta = span
        return _splice(payload, start, end, long_bytes(rnd.choice([meta, meta + 1, -1, -(2**63), 2**31, 2**63 - 1])))
    if choice == 14 and (span := pick("long")):
        return _splice(payload, span[1], span[2], long_bytes(rnd.choice([2**63 - 1, -(2**63), 2**62, -(2**62)])))
    if choice == 15 and len(payload) > 2:
        at = rnd.randrange(len(payload) - 1)
        return payload[:at] + payload[at:at + 2][::-1] + payload[at + 2:]
    if choice == 16:
        return bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 24)))
    if not payload:
        return b"\x00"
    flipped = bytearray(payload)
    for _ in range(rnd.randint(1, 3)):
        flipped[rnd.randrange(len(flipped))] ^= 1 << rnd.randrange(8)
    return bytes(flipped)


# --------------------------------------------------------------------------------------------
# Mappings, and schemas built around them

_STEPS = ["customer", "contact", "phone", "msisdn", "id", "event_id", "campaign", "attributes", "branch", "name",
          "meta", "x", "_p", "Tel2", "tier"]
_ROLE_ORDER = ("phone", "campaign", "event_id", "attr")  # a path two roles read takes the first's values


def _shape(trie: dict[Any, Any]) -> str:
    return "{" + ",".join(sorted(f"{step}:{_shape(child) if step is not None else ''}"
                                 for step, child in trie.items())) + "}"


class Case:
    """One random mapping and a schema built around its paths."""

    def __init__(self, rnd: random.Random, number: int) -> None:
        self.rnd = rnd
        self.number = number
        self.names = 0
        self.named: dict[str, Any] = {}  # every named type, by its short name
        self.complete: list[str] = []  # named types defined so far (usable by name)
        self.by_shape: dict[str, str] = {}
        self.unsupported = False
        self.spec, role_paths = self.mapping()
        self.roles: dict[tuple[str, ...], str] = {}
        for role in _ROLE_ORDER:
            for path, path_role in role_paths:
                if path_role == role:
                    self.roles.setdefault(path, role)
        in_schema = [path for path, _ in role_paths if rnd.random() > 0.04]  # a few paths the schema lacks
        trie: dict[str, Any] = {}
        for path in in_schema:
            node = trie
            for step in path:
                node = node.setdefault(step, {})
            node[None] = True  # a path ends here
        fields = self.fields(trie, ())
        self.schema = {"type": "record", "name": "Event", "fields": fields}
        if rnd.random() < 0.3:
            self.schema["namespace"] = "com.bank.events"

    # -- mapping

    def path(self) -> tuple[str, ...]:
        rnd = self.rnd
        return tuple(rnd.choice(_STEPS) for _ in range(rnd.choice([1, 1, 2, 2, 2, 3])))

    def mapping(self) -> tuple[dict[str, Any], list[tuple[tuple[str, ...], str]]]:
        rnd = self.rnd
        paths: list[tuple[tuple[str, ...], str]] = []
        event, phone, campaign = self.path(), self.path(), self.path()
        if rnd.random() < 0.05:
            phone = event  # the same path for two roles
        paths += [(event, "event_id"), (phone, "phone"), (campaign, "campaign")]
        spec: dict[str, Any] = {"event_id": ".".join(event), "phone": ".".join(phone),
                                "campaign_id": ".".join(campaign),
                                "phone_format": rnd.choice(["e164", "e164", "e164_digits"])}
        for key, most in (("custom_attributes", 5), ("built_in_responses", 2)):
            attributes: dict[str, Any] = {}
            for _ in range(rnd.randint(0, most)):
                r = rnd.random()
                if r < 0.15 and paths:
                    path = rnd.choice(paths)[0]  # a path read twice
                elif r < 0.3 and paths:  # a twin: the same tail under another step (a named type reused)
                    tail = rnd.choice(paths)[0][-1:]
                    path = (rnd.choice(_STEPS), *tail)
                elif r < 0.35 and paths:  # deeper than the value another path reads
                    path = (*rnd.choice(paths)[0], "x")
                else:
                    path = self.path()
                name = rnd.choice(["external_id", "name", "branch", "segment", "Ünvan", "tier", "a b", "ç" * 256]
                                  + ["x" * 257, ""] * (rnd.random() < 0.1))
                written: Any = ".".join(path)
                if rnd.random() < 0.1:
                    written = {"path": written, "type": "string"}
                elif rnd.random() < 0.03:
                    written = {"path": written, "type": "integer"}  # typed: not planned
                elif rnd.random() < 0.1:
                    written = f"  {written}\n"
                attributes[name] = written
                paths.append((path, "attr"))
            if attributes or rnd.random() < 0.5:
                spec[key] = attributes
        return spec, paths

    # -- schema

    def name(self, prefix: str = "R") -> str:
        self.names += 1
        return f"{prefix}{self.names}_{self.number}"

    def fields(self, trie: dict[str, Any], path: tuple[str, ...]) -> list[dict[str, Any]]:
        rnd = self.rnd
        # Built in the order they are written: a type is used by name only after its definition.
        order: list[Any] = [step for step in trie if step is not None]
        for _ in range(rnd.choice([0, 0, 1, 1, 2, 3])):
            order.insert(rnd.randint(0, len(order)), None)
        fields = []
        for number, step in enumerate(order):
            if step is None:
                fields.append({"name": f"f{number}_{self.names}", "type": self.filler(2)})
            else:
                fields.append({"name": step, "type": self.node(trie[step], (*path, step))})
        if fields and rnd.random() < 0.02:  # a field named twice (fastavro takes it): the last one counts
            twice = rnd.choice(fields)["name"]
            made: list[Callable[[], Any]] = [lambda: self.leaf("attr"), lambda: "string", lambda: ["null", "string"],
                                             lambda: self.filler(1)]
            fields.append({"name": twice, "type": rnd.choice(made)()})
        return fields

    def node(self, trie: dict[str, Any], path: tuple[str, ...]) -> Any:
        rnd = self.rnd
        children = {step: child for step, child in trie.items() if step is not None}
        primary = self.roles.get(path, "attr") != "attr"
        if not children or (None in trie and rnd.random() < (0.85 if primary else 0.5)):
            return self.leaf(self.roles.get(path, "attr"))
        shape = _shape(trie)
        reused = self.by_shape.get(shape)
        if reused is not None and rnd.random() < 0.7:
            inner: Any = reused  # the named record built for the same paths elsewhere, by name
        elif rnd.random() < 0.25:
            inner = self.map_node(children, path)
        else:
            name = self.name()
            inner = {"type": "record", "name": name, "fields": self.fields(children, path)}
            self.named[name] = inner
            self.complete.append(name)
            self.by_shape[shape] = name
        return self.wrap(inner)

    def map_node(self, children: dict[str, Any], path: tuple[str, ...]) -> Any:
        merged: dict[str, Any] = {}
        leaves = False
        for child in children.values():
            for step, grandchild in child.items():
                if step is None:
                    leaves = True
                else:
                    merged.setdefault(step, {}).update(grandchild)
        key_path = (*path, next(iter(children)))
        if not merged:
            values: Any = self.leaf(self.roles.get(key_path, "attr"))
        else:
            name = self.name()
            record = {"type": "record", "name": name, "fields": self.fields(merged, key_path)}
            self.named[name] = record
            self.complete.append(name)
            branches = [record] + (["string"] if leaves or self.rnd.random() < 0.3 else [])
            branches += ["null"] if self.rnd.random() < 0.7 else []
            self.rnd.shuffle(branches)
            values = branches if len(branches) > 1 else record
        return {"type": "map", "values": values}

    def wrap(self, inner: Any) -> Any:
        rnd = self.rnd
        r = rnd.random()
        if r < 0.45:
            return inner
        if r < 0.65:
            return ["null", inner]
        if r < 0.75:
            return [inner, "null"]
        if r < 0.85:
            return ["null", "string", inner]
        if r < 0.92:
            return ["long", inner, "null", "boolean"]
        return {"type": inner} if isinstance(inner, str) else [inner, "string"]

    def leaf(self, role: str) -> Any:
        rnd = self.rnd
        r = rnd.random()
        primary = role != "attr"
        if r < (0.85 if primary else 0.65):
            return rnd.choice(["string", "string", "string", {"type": "string"}])
        if r < (0.94 if primary else 0.8):
            return rnd.choice([["null", "string"], ["string", "null"], ["null", "long", "string"],
                               ["string", "long", "boolean", "null"], ["boolean", "string"]])
        made: list[Callable[[], Any]] = [
            lambda: "long", lambda: "int", lambda: "boolean", lambda: "null", lambda: "double", lambda: "float",
            lambda: "bytes", lambda: {"type": "long", "logicalType": "timestamp-millis"},
            lambda: {"type": "int", "logicalType": "date"}, self.enum, lambda: {"type": "array", "items": "string"},
            lambda: {"type": "map", "values": "string"}, self.fixed, lambda: self.filler(1),
            lambda: ["null", self.enum()]]
        return rnd.choice(made)()  # only the type chosen is made: a named type made is used

    def enum(self) -> Any:
        rnd = self.rnd
        if self.complete and rnd.random() < 0.2:
            reused = rnd.choice(self.complete)
            if self.named[reused]["type"] == "enum":
                return reused
        name = self.name("E")
        symbols = rnd.sample(["A", "B", "GOLD", "true", "_x", "Z9", "x" * 300, "L" * 1025, "M" * 1024],
                             rnd.randint(1, 4))
        enum = {"type": "enum", "name": name, "symbols": symbols}
        self.named[name] = enum
        self.complete.append(name)
        return enum

    def fixed(self) -> Any:
        name = self.name("F")
        fixed = {"type": "fixed", "name": name, "size": self.rnd.randint(1, 4)}
        self.named[name] = fixed
        self.complete.append(name)
        return fixed

    def filler(self, depth: int) -> Any:
        rnd = self.rnd
        r = rnd.random()
        if r < 0.35 or depth <= 0:
            return rnd.choice(["null", "boolean", "int", "long", "float", "double", "bytes", "string"])
        if r < 0.5:
            logical = rnd.choice(list(_LOGICAL_EDGES))
            kind = "int" if logical in ("date", "time-millis") else "long"
            return {"type": kind, "logicalType": logical}
        if r < 0.51:
            self.unsupported = True
            return rnd.choice([{"type": "string", "logicalType": "uuid"},
                               {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2},
                               {"type": "fixed", "name": self.name("D"), "size": 4, "logicalType": "decimal",
                                "precision": 6}])
        if r < 0.6:
            return self.enum()
        if r < 0.65:
            return self.fixed()
        if r < 0.72:
            return {"type": "array", "items": self.filler(depth - 1) if rnd.random() < 0.5 else "string"}
        if r < 0.78:
            return {"type": "map", "values": self.filler(depth - 1)}
        if r < 0.86:
            kinds = rnd.sample(["null", "boolean", "long", "double", "bytes", "string"], rnd.randint(2, 4))
            return kinds
        if r < 0.93 and self.complete:
            return rnd.choice(self.complete)  # a named type reused by name
        name = self.name()
        record = {"type": "record", "name": name,
                  "fields": [{"name": f"g{i}", "type": self.filler(depth - 1)} for i in range(rnd.randint(1, 3))]}
        self.named[name] = record
        self.complete.append(name)
        return record


# --------------------------------------------------------------------------------------------
# The comparison


def inbound(value: bytes) -> InboundRecord:
    return InboundRecord("t", 0, 1, None, value, [], (1, 0))


def outcome(value: bytes, decoder: Any, mapper: Any, native: Callable[[bytes], Recipient | None] | None) -> Any:
    """A Recipient field for field (with the types of its values and its dicts' order), or the
    error's class and message."""
    try:
        r = decode_and_map(inbound(value), decoder, mapper, MAX_BYTES, fused=native)
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("recipient", type(r).__name__, r.event_id, r.campaign_id, r.phone,
            tuple(r.custom_attributes.items()), tuple(r.built_in_responses.items()), r.event_time_ms,
            tuple(type(v).__name__ for v in (r.event_id, r.campaign_id, r.phone)),
            type(r.custom_attributes).__name__, type(r.built_in_responses).__name__)


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.mismatches: list[str] = []

    def compare(self, label: str, value: bytes, decoder: Any, mapper: Any,
                native: Callable[[bytes], Recipient | None] | None, valid: bool) -> None:
        answered: list[Recipient | None] = []

        def counting(payload: bytes) -> Recipient | None:
            assert native is not None
            found = native(payload)
            answered.append(found)
            return found

        if isinstance(decoder, RegistryDecoder):  # its state (ids loaded, ids unknown) as both paths find it
            outcome(value, decoder, mapper, None)
        python = outcome(value, decoder, mapper, None)
        natively = outcome(value, decoder, mapper, counting if native is not None else None)
        took = bool(answered) and answered[0] is not None
        prefix = "valid" if valid else "mutated"
        self.counts[f"{prefix}"] += 1
        self.counts[f"{prefix} python recipient"] += python[0] == "recipient"
        self.counts[f"{prefix} native recipient"] += took
        self.counts["unroutable by RoutedMapper"] += python[0] == "error" and "no configured destination" in python[2]
        if python != natively and len(self.mismatches) < 5:
            self.mismatches.append(f"{label}\n  payload {value.hex()[:2000]}\n  python {str(python)[:400]}\n"
                                   f"  native {str(natively)[:400]}")


class FakeRegistry:
    """The registry client's `schema(id)`: the schemas it was given, UnknownSchemaError otherwise."""

    def __init__(self, schemas: dict[int, str]) -> None:
        self.schemas = schemas
        self.asked: Counter[int] = Counter()

    def schema(self, schema_id: int) -> Any:
        self.asked[schema_id] += 1
        if schema_id not in self.schemas:
            raise UnknownSchemaError(f"schema id {schema_id} is not in the registry")
        return parse_writer_schema(self.schemas[schema_id])


def run_cases(seed: int, cases: int, values: int, mutations: int) -> Stats:
    rnd = random.Random(seed)
    stats = Stats()
    for number in range(cases):
        case = Case(rnd, number)
        text = json.dumps(case.schema)
        label = f"seed {seed} case {number}\n  schema {text[:3000]}\n  mapping {case.spec}"
        try:
            schema = parse_writer_schema(text)
        except UnsupportedSchemaError:
            stats.counts["schema refused"] += 1
            continue
        mapper = DeclarativeMapper(case.spec)
        routed = RoutedMapper(mapper, lambda campaign: "d" if campaign in ROUTED else None)
        outer: Any = routed if number % 4 == 3 else mapper
        decoder = SchemalessDecoder(schema, mapper.fields_read(), mapper)
        native = native_recipient(decoder, outer)
        planned = decoder._fused is not None
        stats.counts["schemas"] += 1
        stats.counts["planned"] += planned
        if case.unsupported:
            assert not planned, f"a uuid or decimal logical type was planned: {label}"
        registry: RegistryDecoder | None = None
        if number % 3 == 0:
            registry = RegistryDecoder(FakeRegistry({number + 1: text}), reads=mapper.fields_read(),  # type: ignore[arg-type]
                                       mapper=mapper)
            header = b"\x00" + struct.pack(">I", number + 1)
        for _ in range(values):
            writer = Writer(rnd, case.named, case.roles, tricky=rnd.random() < 0.4)
            writer.value(case.schema, ())
            payload = bytes(writer.out)
            stats.compare(label, payload, decoder, outer, native, valid=True)
            if registry is not None:
                stats.compare(label + " (registry)", header + payload, registry, mapper,
                              native_recipient(registry, mapper), valid=True)
                stats.counts["registry"] += 1
            for _ in range(mutations):
                mutated = mutate(rnd, payload, writer.spans)
                stats.compare(label, mutated, decoder, outer, native, valid=False)
                if registry is not None and rnd.random() < 0.3:
                    framed = rnd.choice([header + mutated, b"\x01" + header[1:] + payload,
                                         b"\x00" + struct.pack(">I", 10**6 + number) + payload,
                                         header[:rnd.randrange(5)]])
                    stats.compare(label + " (registry)", framed, registry, mapper,
                                  native_recipient(registry, mapper), valid=False)
    return stats


@pytest.mark.parametrize(("seed", "python_reader"), [(1, "compiled"), (2, "compiled"), (3, "compiled"),
                                                     (4, "compiled"), (5, "fastavro")])
def test_the_native_core_answers_as_the_python_path_for_random_schemas_mappings_and_bytes(
        seed: int, python_reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert fused.available(), "pisano_native is not installed: run `make install` (needs cargo)"
    if python_reader == "fastavro":  # as for a schema the compiled reader leaves to fastavro (a union of 101 branches)
        from consumer.ingest import avro

        monkeypatch.setattr(avro, "_COMPILED_WORKS", False)
    started = time.monotonic()
    stats = run_cases(seed, cases=60, values=25, mutations=5)
    assert not stats.mismatches, "\n\n".join(stats.mismatches)
    counts = stats.counts
    # It must have answered, not only left everything to Python: most schemas planned, and a
    # Recipient natively for most of the records Python maps to one.
    assert counts["planned"] >= counts["schemas"] * 0.5, counts
    assert counts["valid native recipient"] >= 0.35 * counts["valid python recipient"], counts
    assert counts["valid native recipient"] >= 150, counts
    assert counts["registry"] > 100, counts
    assert counts["unroutable by RoutedMapper"] > 10, counts
    assert time.monotonic() - started < 20


# --------------------------------------------------------------------------------------------
# Focused cases (each one a defect the fuzzing above found, or a property it cannot reach)


def _decoder(fields: list[dict[str, Any]], spec: dict[str, Any]) -> tuple[SchemalessDecoder, DeclarativeMapper]:
    schema = parse_writer_schema(json.dumps({"type": "record", "name": "Event", "fields": fields}))
    mapper = DeclarativeMapper(spec)
    return SchemalessDecoder(schema, mapper.fields_read(), mapper), mapper


def _both(decoder: Any, mapper: Any, value: bytes) -> tuple[Any, Any]:
    return outcome(value, decoder, mapper, None), outcome(value, decoder, mapper, native_recipient(decoder, mapper))


def _s(text: str) -> bytes:
    data = text.encode()
    return long_bytes(len(data)) + data


_CAMPAIGN = CAMPAIGNS[0]
_PHONE = "+905321234567"
_BASE = [{"name": "id", "type": "string"}, {"name": "c", "type": "string"}]


def test_a_map_key_written_twice_counts_as_python_counts_it_the_last() -> None:
    # attributes.k.x: the first "k" holds a phone, the second none (null); Python's dict keeps the
    # second, so there is no phone: the native reader must not send to the first one's.
    contact = {"type": "record", "name": "Contact", "fields": [{"name": "x", "type": "string"}]}
    decoder, mapper = _decoder([*_BASE, {"name": "m", "type": {"type": "map", "values": ["null", contact]}}],
                               {"event_id": "id", "phone": "m.k.x", "campaign_id": "c"})
    twice = _s("1") + _s(_CAMPAIGN) + long_bytes(2) + _s("k") + long_bytes(1) + _s(_PHONE) + _s("k") + long_bytes(0) \
        + long_bytes(0)
    python, native = _both(decoder, mapper, twice)
    assert python[:2] == ("error", "InvalidEventError")
    assert native == python
    # The other way round: the last one holds the phone, the native reader may take it.
    last = _s("1") + _s(_CAMPAIGN) + long_bytes(2) + _s("k") + long_bytes(0) + _s("k") + long_bytes(1) + _s(_PHONE) \
        + long_bytes(0)
    python, native = _both(decoder, mapper, last)
    assert python[0] == "recipient" and native == python


def test_a_record_field_named_twice_counts_as_python_counts_it_the_last() -> None:
    # fastavro takes a record with two fields of one name; its dict keeps the second's value.
    contact = {"type": "record", "name": "Contact", "fields": [{"name": "x", "type": "string"}]}
    decoder, mapper = _decoder([*_BASE, {"name": "e", "type": contact}, {"name": "e", "type": "string"}],
                               {"event_id": "id", "phone": "e.x", "campaign_id": "c"})
    python, native = _both(decoder, mapper, _s("1") + _s(_CAMPAIGN) + _s(_PHONE) + _s("not a record"))
    assert python[:2] == ("error", "InvalidEventError")
    assert native == python


def test_an_enum_symbol_is_cut_as_python_cuts_text() -> None:
    # Enum symbols may be of any length; `_text` cuts every string to MAX_ATTRIBUTE_CHARS.
    symbols = ["A" * 2000, "B" * 1024, "C" * 300]
    decoder, mapper = _decoder([*_BASE, {"name": "p", "type": "string"},
                                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": symbols}}],
                               {"event_id": "id", "phone": "p", "campaign_id": "c", "custom_attributes": {"tier": "e"}})
    for index in range(len(symbols)):
        python, native = _both(decoder, mapper, _s("1") + _s(_CAMPAIGN) + _s(_PHONE) + long_bytes(index))
        assert python[0] == "recipient"
        assert native == python


def test_an_enum_symbol_as_event_id_or_campaign_is_judged_as_python_judges_it() -> None:
    symbols = ["A" * 2000, "B" * 256, "C" * 257, "e_1"]
    decoder, mapper = _decoder([{"name": "id", "type": {"type": "enum", "name": "E", "symbols": symbols}},
                                {"name": "c", "type": "string"}, {"name": "p", "type": "string"}],
                               {"event_id": "id", "phone": "p", "campaign_id": "c"})
    for index in range(len(symbols)):
        python, native = _both(decoder, mapper, long_bytes(index) + _s(_CAMPAIGN) + _s(_PHONE))
        assert native == python


@pytest.mark.parametrize("size", [2.0, 2.5, True, -1, 0])
def test_a_fixed_of_an_odd_size_is_read_as_python_reads_it(size: Any) -> None:
    # fastavro takes a fixed size that is not a whole number (and reads no record of it), or a
    # negative one (it reads the rest of the bytes): the native core must not plan it otherwise.
    fields = [*_BASE, {"name": "p", "type": "string"},
              {"name": "f", "type": {"type": "fixed", "name": "F", "size": size}}]
    decoder, mapper = _decoder(fields, {"event_id": "id", "phone": "p", "campaign_id": "c"})
    for tail in (b"", b"a", b"ab", b"abc"):
        python, native = _both(decoder, mapper, _s("1") + _s(_CAMPAIGN) + _s(_PHONE) + tail)
        assert native == python


def test_a_schema_the_planner_cannot_take_leaves_the_registry_s_first_record_to_python() -> None:
    # A fixed of size -1 (fastavro reads the rest of the bytes): planning it must not fail the
    # record that loads the schema id, nor the decoder's construction.
    fields = [*_BASE, {"name": "p", "type": "string"},
              {"name": "f", "type": {"type": "fixed", "name": "F", "size": -1}}]
    text = json.dumps({"type": "record", "name": "Event", "fields": fields})
    mapper = DeclarativeMapper({"event_id": "id", "phone": "p", "campaign_id": "c"})
    value = b"\x00\x00\x00\x00\x07" + _s("1") + _s(_CAMPAIGN) + _s(_PHONE) + b"rest"
    alone = RegistryDecoder(FakeRegistry({7: text}), reads=mapper.fields_read())  # type: ignore[arg-type]
    expected = outcome(value, alone, mapper, None)
    with_native = RegistryDecoder(FakeRegistry({7: text}), reads=mapper.fields_read(),  # type: ignore[arg-type]
                                  mapper=mapper)
    assert outcome(value, with_native, mapper, native_recipient(with_native, mapper)) == expected
    schemaless = SchemalessDecoder(parse_writer_schema(text), mapper.fields_read(), mapper)
    assert outcome(value[5:], schemaless, mapper, native_recipient(schemaless, mapper)) == expected


def test_an_enum_reused_at_many_places_is_planned_with_its_symbols_once() -> None:
    # A registry schema of a few KB: an enum of 500 symbols, used 2**11 times through records
    # that each hold the one before twice (inline, then by name). Each use copied the symbols into
    # the plan's table: a million strings here, gigabytes for a larger enum or a few more levels.
    symbols = [f"S{i}" for i in range(500)]
    inner: Any = {"type": "record", "name": "R0", "fields": [
        {"name": "a", "type": {"type": "enum", "name": "E", "symbols": symbols}}, {"name": "b", "type": "E"}]}
    for level in range(1, 11):
        inner = {"type": "record", "name": f"R{level}", "fields": [{"name": "a", "type": inner},
                                                                  {"name": "b", "type": f"R{level - 1}"}]}
    parsed = parse_writer_schema(json.dumps({"type": "record", "name": "Event", "fields": [
        *_BASE, {"name": "p", "type": "string"}, {"name": "tree", "type": inner}]}))
    mapper = DeclarativeMapper({"event_id": "id", "phone": "p", "campaign_id": "c"})
    started = time.monotonic()
    plan = fused._Planner(parsed, [(("id",), 0), (("p",), 1), (("c",), 2)], reader_for)
    assert len(plan.symbols) <= 2 * len(symbols)
    assert time.monotonic() - started < 2
    assert fused.fused_reader(parsed, mapper, reader_for) is not None


def test_a_schema_expanding_past_the_plan_s_bound_is_refused_before_it_is_expanded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Records each holding the one before twice: 2**30 places from 3 KB of registry schema.
    # Expanding it up to the bound took 90 ms (Python's own reader of it: 2 ms), for each such id
    # the registry knows, 50 a second: the poll loop stalled. Its size is counted first, each
    # named type once.
    inner: Any = {"type": "record", "name": "L0", "fields": [{"name": "v", "type": "long"}]}
    for level in range(1, 31):
        inner = {"type": "record", "name": f"L{level}", "fields": [{"name": "a", "type": inner},
                                                                  {"name": "b", "type": f"L{level - 1}"}]}
    schema = parse_writer_schema(json.dumps({"type": "record", "name": "Event", "fields": [
        *_BASE, {"name": "p", "type": "string"}, {"name": "t", "type": inner}]}))
    mapper = DeclarativeMapper({"event_id": "id", "phone": "p", "campaign_id": "c"})
    expanded = Counter[str]()
    node = fused._Planner.node

    def counted(self: Any, *args: Any) -> Any:
        expanded["nodes"] += 1
        return node(self, *args)

    monkeypatch.setattr(fused._Planner, "node", counted)
    assert fused.fused_reader(schema, mapper, reader_for) is None
    assert expanded["nodes"] < 100


def test_the_ranges_of_logical_types_are_found_once_not_per_schema() -> None:
    # Each is found by bisection through Python's reader (milliseconds for all seven): once per
    # process, not once per schema id loaded from the registry.
    fields = [*_BASE, {"name": "p", "type": "string"}] + [
        {"name": logical.replace("-", "_"), "type": {"type": "int" if logical in ("date", "time-millis") else "long",
                                                     "logicalType": logical}} for logical in _LOGICAL_EDGES]
    mapper = DeclarativeMapper({"event_id": "id", "phone": "p", "campaign_id": "c"})
    asked = Counter[str]()

    def reader_of(schema: Any) -> Any:
        asked["readers"] += 1
        return reader_for(schema)

    for name in ("Event", "Other"):
        schema = parse_writer_schema(json.dumps({"type": "record", "name": name, "fields": fields}))
        assert fused.fused_reader(schema, mapper, reader_of) is not None
        if name == "Event":
            first = asked["readers"]
    assert first and asked["readers"] == first


@pytest.mark.parametrize("odd", [
    {"type": "string", "logicalType": "uuid"},
    {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
    {"type": "fixed", "name": "D", "size": 8, "logicalType": "decimal", "precision": 10},
])
@pytest.mark.parametrize("where", ["field", "union", "array", "map", "nested", "reused"])
def test_a_uuid_or_decimal_anywhere_in_the_schema_leaves_every_record_to_python(odd: dict[str, Any],
                                                                                where: str) -> None:
    placed: Any = {"field": odd, "union": ["null", odd], "array": {"type": "array", "items": odd},
                   "map": {"type": "map", "values": odd},
                   "nested": {"type": "record", "name": "N", "fields": [{"name": "o", "type": ["null", odd]}]},
                   "reused": {"type": "record", "name": "N", "fields": [{"name": "o", "type": odd}]}}[where]
    fields = [*_BASE, {"name": "p", "type": "string"}, {"name": "odd", "type": placed}]
    if where == "reused":
        fields.append({"name": "again", "type": "N"})
    schema = parse_writer_schema(json.dumps({"type": "record", "name": "Event", "fields": fields}))
    mapper = DeclarativeMapper({"event_id": "id", "phone": "p", "campaign_id": "c"})
    assert fused.fused_reader(schema, mapper, reader_for) is None


@pytest.mark.parametrize("phone_format", ["e164", "e164_digits"])
def test_every_region_s_numbers_and_their_mutations_end_as_python_ends_them(phone_format: str) -> None:
    rnd = random.Random(11)
    decoder, mapper = _decoder([*_BASE, {"name": "p", "type": "string"}],
                               {"event_id": "id", "phone": "p", "campaign_id": "c", "phone_format": phone_format})
    taken = 0
    for phone in PHONES:
        for variant in {phone, *(phone_variant(rnd, phone) for _ in range(12))}:
            value = _s("1") + _s(_CAMPAIGN) + _s(variant)
            python, native = _both(decoder, mapper, value)
            assert python == native, variant
            taken += decoder.recipient(value) is not None
    assert taken >= 400


def test_the_native_phone_rule_finds_no_number_valid_that_python_s_rule_does_not() -> None:
    # Each calling code's patterns run in Rust's regex engine, not Python's: random national
    # numbers of every length (and example numbers cut and completed at random) for every code.
    from consumer.ingest.phones import _COUNTRY_CODES, is_valid_e164, validity_rule

    rnd = random.Random(3)
    decoder, _ = _decoder([*_BASE, {"name": "p", "type": "string"}],
                          {"event_id": "id", "phone": "p", "campaign_id": "c"})
    head = _s("1") + _s(_CAMPAIGN)
    verdicts: Counter[tuple[bool, bool]] = Counter()
    for code in sorted(_COUNTRY_CODES):
        rule = validity_rule(code)
        lengths = list(rule[1]) if rule and rule[1] else list(range(2, 14))
        examples = [phone[1 + len(str(code)):] for phone in PHONES if phone[1:].startswith(str(code))]
        for _ in range(100):
            n = rnd.choice([*lengths, rnd.randint(1, 15)])
            if examples and rnd.random() < 0.6:
                example = rnd.choice(examples)
                k = rnd.randint(0, len(example))
                national = (example[:k] + "".join(str(rnd.randrange(10)) for _ in range(max(0, n - k))))[:max(n, 1)]
            else:
                national = str(rnd.randint(1, 9)) + "".join(str(rnd.randrange(10)) for _ in range(n - 1))
            phone = f"+{code}{national}"
            python, native = is_valid_e164(phone), decoder.recipient(head + _s(phone)) is not None
            verdicts[python, native] += 1
            assert python or not native, phone
            assert native or not python or rule is None, phone  # a code with a rule of its own is judged alike
    assert verdicts[True, True] > 3000, verdicts


def test_the_native_core_answers_the_same_from_many_threads() -> None:
    # The calling codes' rules are loaded on first use, from whichever thread meets them first.
    fields = [*_BASE, {"name": "p", "type": "string"}]
    schema = parse_writer_schema(json.dumps({"type": "record", "name": "Event", "fields": fields}))
    mapper = DeclarativeMapper({"event_id": "id", "phone": "p", "campaign_id": "c"})
    values = [_s("1") + _s(_CAMPAIGN) + _s(phone) for phone in PHONES]
    serial = SchemalessDecoder(schema, mapper.fields_read(), mapper)
    expected = [serial.recipient(value) for value in values]
    shared = SchemalessDecoder(schema, mapper.fields_read(), mapper)
    results: dict[int, list[Any]] = {}
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        order = list(range(len(values)))
        random.Random(n).shuffle(order)
        found = [None] * len(values)
        for i in order:
            found[i] = shared.recipient(values[i])
        results[n] = found

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[n] == expected for n in range(8))
    assert sum(r is not None for r in expected) >= 300


def test_a_schema_id_evicted_from_the_registry_decoder_is_no_longer_mapped_natively(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The Python path asks the registry again for an id whose reader was evicted (and may be
    # refused: deleted, unreachable, over the request bound); the native path must not keep
    # answering for that id from a plan kept longer than the reader.
    from consumer.ingest import avro

    monkeypatch.setattr(avro, "MAX_SCHEMA_READERS", 2)
    planned = json.dumps({"type": "record", "name": "Event", "fields": [*_BASE, {"name": "p", "type": "string"}]})
    unplanned = json.dumps({"type": "record", "name": "Event", "fields": [
        *_BASE, {"name": "p", "type": "string"}, {"name": "u", "type": {"type": "string", "logicalType": "uuid"}}]})
    registry = FakeRegistry({1: planned, 2: unplanned, 3: unplanned})
    mapper = DeclarativeMapper({"event_id": "id", "phone": "p", "campaign_id": "c"})
    decoder = RegistryDecoder(registry, reads=mapper.fields_read(), mapper=mapper)  # type: ignore[arg-type]
    body = _s("1") + _s(_CAMPAIGN) + _s(_PHONE)
    first = b"\x00" + struct.pack(">I", 1) + body
    assert outcome(first, decoder, mapper, None)[0] == "recipient"
    assert decoder.recipient(first) is not None
    for schema_id in (2, 3):  # id 1's reader is evicted
        outcome(b"\x00" + struct.pack(">I", schema_id) + body + _s(str(uuid.UUID(int=schema_id))), decoder, mapper,
                None)
    del registry.schemas[1]  # the id is gone from the registry (a hard delete)
    native = outcome(first, decoder, mapper, native_recipient(decoder, mapper))
    assert native[:2] == ("error", "UnknownSchemaError")
    assert outcome(first, decoder, mapper, native_recipient(decoder, mapper)) == outcome(first, decoder, mapper, None)
