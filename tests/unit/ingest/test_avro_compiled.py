"""The compiled Avro reader (avro_compiled.py, issue 14) against fastavro: random schemas of every
supported type, random values written by fastavro, then random and targeted damage to the bytes.

What is checked, case by case:
- valid bytes: the same value (types too: bool is not int, a float keeps its float32 rounding,
  bytes are not str, datetimes keep their zone) and the same bytes used;
- damaged bytes: a value the compiled reader returns is fastavro's value with the same bytes used;
  where fastavro raises the compiled reader raises. It is deliberately stricter on three invalid
  inputs fastavro reads anyway (STRICTER below; avro_compiled.py's docstring says why);
- through SchemalessDecoder and RegistryDecoder every failure is a DecodeError, nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import re
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import fastavro
import httpx
import pytest

from consumer.config.resources import default_mapping_file, default_schema_file
from consumer.errors import DecodeError, UnsupportedSchemaError
from consumer.ingest import avro as avro_module
from consumer.ingest import avro_compiled
from consumer.ingest.avro import RegistryClient, RegistryDecoder, SchemalessDecoder, check_schema, reader_for
from consumer.ingest.avro_compiled import Unsupported, compile_reader
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.samples import encode, transaction
from tests.support.zigzag import varint

SEED = 20261203
SCHEMAS = 300
VALUES_PER_SCHEMA = 10
MUTATIONS_PER_VALUE = 6

# Invalid input fastavro reads anyway and the compiled reader refuses: a negative union or enum
# index (fastavro indexes its list from the end: a corrupt index would pick a branch), a varint of
# more than 10 bytes (fastavro's 64-bit shift overflows into an arbitrary number) and a block
# count of -2**63 (fastavro negates it into itself and reads no item).
STRICTER = re.compile(r"(union|enum) index -\d+ out of range|varint longer than 10 bytes"
                      r"|a block of 9223372036854775808 items")
HOSTILE_NAMES = ['"); import os; ("', "'''", "\\", "\n", "b", "p", "L", "c", "e", "n", "v1", "C0", "h1", "_long",
                 "__import__('os').system('true')", "", "ü", "read", "_make", "None", "{", "}", "#"]
LOGICAL = [("long", "timestamp-millis"), ("long", "timestamp-micros"), ("long", "local-timestamp-millis"),
           ("long", "local-timestamp-micros"), ("long", "time-micros"), ("int", "date"), ("int", "time-millis"),
           ("string", "uuid"), ("bytes", "decimal"), ("string", "not-a-logical-type"),
           ("int", "timestamp-millis")]  # a logical type on another base type: fastavro leaves it alone
PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]


# ---------------------------------------------------------------- comparing


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)  # NaN is NaN, -0.0 is not 0.0
    return bool(a == b) and repr(a) == repr(b)


def fastavro_read(schema: Any, payload: bytes, offset: int = 0) -> tuple[Any, int]:
    buffer = io.BytesIO(payload)
    buffer.seek(offset)
    return fastavro.schemaless_reader(buffer, schema), buffer.tell()


def outcome(read: Any, *args: Any) -> tuple[Any, int] | Exception:
    try:
        result: tuple[Any, int] = read(*args)
        return result
    except Exception as exc:
        return exc


def compare(schema: Any, read: Any, payload: bytes, counts: dict[str, int]) -> None:
    ours, theirs = outcome(read, payload, 0), outcome(fastavro_read, schema, payload)
    if isinstance(ours, Exception):
        if isinstance(theirs, Exception):
            counts["both raise"] += 1
        else:
            assert STRICTER.search(str(ours)), (payload, ours, theirs)
            counts["stricter"] += 1
        return
    assert not isinstance(theirs, Exception), (payload, ours, theirs)
    assert same(ours[0], theirs[0]), (payload, ours, theirs)
    assert ours[1] == theirs[1], (payload, ours, theirs)
    counts["same value"] += 1


# ---------------------------------------------------------------- random schemas and values


class Schemas:
    """Random schemas with every supported type; named types are defined once and may be used
    again by name afterwards (never inside themselves: the consumer refuses recursion)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.serial = 0
        self.named: list[str] = []

    def name(self) -> str:
        """A full name: a reference is then the same wherever it is (a bare one takes the namespace
        of the record it is in)."""
        self.serial += 1
        return f"{self.rng.choice(('a', 'com.example'))}.T{self.serial}"

    def field_name(self, n: int) -> str:
        return self.rng.choice(HOSTILE_NAMES) if self.rng.random() < 0.15 else f"f{n}"

    def record(self, depth: int) -> dict[str, Any]:
        name = self.name()
        fields = [{"name": self.field_name(n), "type": self.type(depth + 1)} for n in range(self.rng.randrange(1, 6))]
        kind = self.rng.choice(("record", "record", "error"))
        record: dict[str, Any] = {"type": kind, "name": name, "fields": fields}
        self.named.append(name)
        return record

    def type(self, depth: int, in_union: bool = False) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth > 4 or roll < 0.35:
            return rng.choice(PRIMITIVES)
        if roll < 0.5:
            base, logical = rng.choice(LOGICAL)
            node: dict[str, Any] = {"type": base, "logicalType": logical}
            if logical == "decimal":
                node["precision"] = rng.randrange(1, 20)
                node["scale"] = rng.randrange(0, node["precision"] + 1)
            return node
        if roll < 0.55 and self.named:
            return rng.choice(self.named)
        if roll < 0.62:
            name = self.name()
            self.named.append(name)
            return {"type": "enum", "name": name, "symbols": [f"S{n}" for n in range(rng.randrange(1, 6))]}
        if roll < 0.69:
            name = self.name()
            self.named.append(name)
            size = rng.randrange(1, 17)
            fixed: dict[str, Any] = {"type": "fixed", "name": name, "size": size}
            if rng.random() < 0.3:
                fixed.update(logicalType="decimal", precision=rng.randrange(1, max(2, int(2.4 * size - 0.4))), scale=0)
            return fixed
        if roll < 0.77:
            return {"type": "array", "items": self.type(depth + 1)}
        if roll < 0.84:
            return {"type": "map", "values": self.type(depth + 1)}
        if roll < 0.93 and not in_union:
            branches: list[Any] = []
            kinds: set[str] = set()
            for _ in range(rng.randrange(1, 5)):
                known = len(self.named)
                branch = self.type(depth + 1, in_union=True)
                kind = branch if isinstance(branch, str) else branch.get("name") or branch["type"]
                if kind not in kinds:  # Avro: one branch per unnamed type
                    kinds.add(kind)
                    branches.append(branch)
                else:  # a branch left out: the types it defined are not there to be used
                    del self.named[known:]
            if rng.random() < 0.5 and "null" not in kinds:
                branches.insert(rng.randrange(len(branches) + 1), "null")
            return branches
        return self.record(depth)

    def top(self) -> Any:
        while True:
            self.named = []
            schema = self.record(0)
            try:
                parsed = fastavro.parse_schema(schema)
                check_schema(parsed)  # what the consumer reads with: no zero-byte array items
                return schema
            except (UnsupportedSchemaError, fastavro.schema.SchemaParseException):
                continue


def without_logical_types(schema: Any) -> Any:
    """The schema the random values are written with: the base types, so that any number or bytes
    can be written, also those the logical converters refuse."""
    schema = copy.deepcopy(schema)

    def strip(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                strip(branch)
        elif isinstance(node, dict):
            for key in ("logicalType", "precision", "scale"):
                node.pop(key, None)
            for field in node.get("fields", ()):
                strip(field["type"])
            strip(node.get("items"))
            strip(node.get("values"))

    strip(schema)
    return schema


class Values:
    def __init__(self, rng: random.Random, named: dict[str, Any]) -> None:
        self.rng = rng
        self.named = named

    def long(self, bits: int) -> int:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            return rng.randrange(-64, 64)
        if roll < 0.5:
            return rng.choice((-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, 0, -1))
        if roll < 0.85:  # about now, in milliseconds or microseconds since 1970
            return rng.randrange(-2 * 10**15, 2 * 10**15) // rng.choice((1, 1000, 86_400_000))
        return rng.randrange(-(2 ** (bits - 1)), 2 ** (bits - 1))

    def text(self) -> str:
        rng = self.rng
        alphabet = "abcxyz09 -_+.ğüşİçö€📱\u0000\u00a0"
        if rng.random() < 0.2:
            return "ae51458c-9e82-417f-8f1d-e074891ea5c1" if rng.random() < 0.5 else str(rng.random())
        return "".join(rng.choice(alphabet) for _ in range(rng.choice((0, 1, 3, 10, 70))))

    def float(self) -> float:
        rng = self.rng
        return rng.choice((0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-310, rng.uniform(-1e6, 1e6),
                           rng.uniform(-1, 1), struct.unpack("<d", rng.randbytes(8))[0]))

    def logical(self, node: dict[str, Any]) -> Any:
        """Mostly a value the converter takes (the rest, any number: the converters' errors too)."""
        rng, key = self.rng, f"{node['type']}-{node['logicalType']}"
        ms = (-62_135_596_800_000, 253_402_300_799_999)  # datetime's range, in milliseconds since 1970
        ranges = {"long-timestamp-millis": ms, "long-local-timestamp-millis": ms,
                  "long-timestamp-micros": (ms[0] * 1000, ms[1] * 1000),
                  "long-local-timestamp-micros": (ms[0] * 1000, ms[1] * 1000),
                  "int-time-millis": (0, 86_399_999), "long-time-micros": (0, 86_399_999_999),
                  "int-date": (-719_162, 2_932_896)}
        if key in ranges:
            low, high = ranges[key]
            return rng.choice((low, high, 0, rng.randint(low, high), rng.randint(low, high)))
        if key == "string-uuid":
            return str(uuid.UUID(int=rng.getrandbits(128)))
        return None

    def value(self, node: Any) -> Any:
        rng = self.rng
        if isinstance(node, dict) and node.get("logicalType") and rng.random() < 0.9:
            value = self.logical(node)
            if value is not None:
                return value
        if isinstance(node, str):
            if node in self.named:
                return self.value(self.named[node])
            return {"null": None, "boolean": rng.random() < 0.5, "int": self.long(32), "long": self.long(64),
                    "float": self.float(), "double": self.float(), "bytes": rng.randbytes(rng.choice((0, 1, 2, 9, 40))),
                    "string": self.text()}[node] if node in PRIMITIVES else None
        if isinstance(node, list):
            return self.value(rng.choice(node))
        kind = node["type"]
        if kind in ("record", "error"):
            return {field["name"]: self.value(field["type"]) for field in node["fields"]}
        if kind == "enum":
            return rng.choice(node["symbols"])
        if kind == "fixed":
            return rng.randbytes(node["size"])
        if kind == "array":
            return [self.value(node["items"]) for _ in range(rng.choice((0, 1, 2, 5)))]
        if kind == "map":
            return {self.text(): self.value(node["values"]) for _ in range(rng.choice((0, 1, 3)))}
        return self.value(kind)


class Case:
    """A random schema: parsed as the readers see it, and as the values are written (base types)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.raw = raw = Schemas(rng).top()
        self.named: dict[str, Any] = {}
        self.schema = fastavro.parse_schema(raw, self.named)
        self.writer = fastavro.parse_schema(without_logical_types(raw))

    def payload(self) -> bytes | None:
        buffer = io.BytesIO()
        try:
            fastavro.schemaless_writer(buffer, self.writer, Values(self.rng, self.named).value(self.schema))
        except (ValueError, TypeError, OverflowError, struct.error, AttributeError):
            return None  # a union whose branch the writer does not find, ...: another value
        return buffer.getvalue()


def mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.choice((1, 1, 2, 3))):
        kind = rng.randrange(9)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 2:
            del data[at:]
        elif kind == 3:
            data[at:at] = rng.randbytes(rng.randrange(1, 12))
        elif kind == 4:  # a huge, negative or overlong number where a length, count or index may be
            data[at:at] = rng.choice((varint(rng.choice((-1, -3, 2**31, 2**60, -(2**60), 2**63 - 1, -(2**63), 7))),
                                      b"\xff" * rng.randrange(9, 14) + b"\x01", b"\x80\x00", b"\x81\x80\x00"))
        elif kind == 5:  # invalid UTF-8
            data[at:at] = rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"))
        elif kind == 6 and data:
            del data[at:at + rng.randrange(1, 6)]
        elif kind == 7:
            data += rng.randbytes(rng.randrange(1, 20))
        else:
            data = bytearray(rng.randbytes(rng.randrange(0, 40)))
    return bytes(data)


# ---------------------------------------------------------------- the tests


def test_random_schemas_and_values_read_exactly_as_fastavro() -> None:
    rng = random.Random(SEED)
    counts = {"same value": 0, "both raise": 0, "stricter": 0}
    valid = valid_read = hostile = 0
    for _ in range(SCHEMAS):
        case = Case(rng)
        schema = case.schema
        read = compile_reader(schema)
        decoder = SchemalessDecoder(schema)
        for _ in range(VALUES_PER_SCHEMA):
            payload = case.payload()
            if payload is None:
                continue
            valid += 1
            before = counts["same value"]
            compare(schema, read, payload, counts)
            valid_read += counts["same value"] - before  # the rest: a logical converter refused the number
            for _ in range(MUTATIONS_PER_VALUE):
                damaged = mutate(rng, payload)
                hostile += 1
                compare(schema, read, damaged, counts)
                with contextlib.suppress(DecodeError):
                    decoder.decode(damaged)
    print(f"\ncompiled reader vs fastavro, seed {SEED}: {valid} valid payloads ({valid_read} read, the same) and "
          f"{hostile} damaged ones: {counts}")
    assert valid > 2000 and valid_read > 0.8 * valid and hostile > 12_000
    assert counts["same value"] > 2500 and counts["both raise"] > 5000  # both ends reached


@pytest.mark.parametrize("seed", range(3))
def test_the_default_schema_with_damaged_events(seed: int) -> None:
    rng = random.Random(seed)
    schema = avro_module.load_schema_file(default_schema_file())
    read = reader_for(schema)
    counts = {"same value": 0, "both raise": 0, "stricter": 0}
    for n in range(300):
        record = transaction(f"evt-{n}", "+905321234567", None if n % 3 else "c", n=n)
        record["occurred_at"] = rng.choice((datetime(2026, 12, 3, 1, 2, 3, 4000, tzinfo=UTC), 0, 253_402_300_799_999,
                                            -62_135_596_800_000, rng.randrange(-(2**40), 2**40)))
        payload = encode(record, schema)
        compare(schema, read, payload, counts)
        for _ in range(10):
            compare(schema, read, mutate(rng, payload), counts)
    assert counts["same value"] > 300


def one_field(kind: Any) -> Any:
    return fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "x", "type": kind}]})


ENUM = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}


@pytest.mark.parametrize(("kind", "payload"), [
    ("string", varint(-1) + b"abc"),  # a negative length
    ("bytes", varint(-(2**40))),
    ("string", varint(2**60) + b"abc"),  # a length past the end: slicing would not say so
    ("bytes", varint(4) + b"abc"),
    ("string", varint(2) + b"\xc3\x28"),  # invalid UTF-8
    ("string", varint(3) + b"\xed\xa0\x80"),  # a UTF-16 surrogate
    ("long", b"\xff" * 9),  # a varint cut short
    ("long", b""),
    ("long", b"\xff" * 11 + b"\x01"),  # longer than 10 bytes
    ("long", b"\xff" * 10 + b"\x01"),
    ("float", b"\x00\x00\x80"),
    ("double", b"\x00" * 7),
    ("boolean", b""),
    ({"type": "fixed", "name": "F", "size": 4}, b"abc"),
    ({"type": "array", "items": "long"}, varint(2**60) + b"\x02\x04"),  # a few bytes claiming 2**60 items
    ({"type": "array", "items": "long"}, varint(-(2**60)) + varint(9) + b"\x02\x04"),
    ({"type": "array", "items": "long"}, varint(-(2**63)) + varint(9) + b"\x00"),
    ({"type": "array", "items": "long"}, varint(-2) + varint(2) + b"\x02\x04\x00"),  # negative count, byte size
    ({"type": "array", "items": "long"}, varint(-2) + varint(2) + b"\x02\x04" + varint(1) + b"\x06\x00"),
    ({"type": "map", "values": "long"}, varint(2**62) + b"\x02k\x02"),
    ({"type": "map", "values": "long"}, varint(-1) + varint(3) + b"\x02k\x02\x00"),
    ({"type": "map", "values": "long"}, varint(2) + b"\x02k\x02\x02k\x04\x00"),  # a repeated key: the last wins
    ({"type": "array", "items": {"type": "array", "items": "string"}}, (varint(2**31) + b"\x02") * 3),
    (["null", "string"], varint(2)),  # a union index out of range
    (["null", "string"], varint(-1) + b"\x02a"),  # fastavro reads the last branch
    (["null", "string"], varint(2**40)),
    (["null", "string"], b"\x82\x00" + b"\x02a"),  # an index of two bytes (overlong): still branch 1
    (ENUM, varint(3)),
    (ENUM, varint(-1)),  # fastavro reads "C"
    (ENUM, varint(2)),
    (TIMESTAMP, varint(2**62)),  # out of datetime's range: fastavro's converter raises, so does ours
    (TIMESTAMP, varint(-(2**63))),
    (TIMESTAMP, varint(253_402_300_799_999)),
    ({"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}, varint(3) + b"\x7f\xff\xff"),
    ({"type": "string", "logicalType": "uuid"}, varint(3) + b"abc"),
    ({"type": "int", "logicalType": "date"}, varint(2**40)),
])
def test_hostile_bytes(kind: Any, payload: bytes) -> None:
    schema = one_field(kind)
    counts = {"same value": 0, "both raise": 0, "stricter": 0}
    read = compile_reader(schema)
    for cut in range(len(payload) + 1):  # the bytes, and every truncation of them
        compare(schema, read, payload[:cut], counts)
    compare(schema, read, payload + b"\x00", counts)
    for value in (payload, payload[:-1], payload + b"\x01"):
        with contextlib.suppress(DecodeError):
            SchemalessDecoder(schema).decode(value)


def test_where_the_compiled_reader_is_stricter_than_fastavro() -> None:
    """The three deliberate differences, each shown: fastavro returns a value, ours a DecodeError."""
    cases = [(["null", "string"], varint(-1) + b"\x02a", "union index -1"),
             (ENUM, varint(-1), "enum index -1"),
             ("long", b"\xff" * 11 + b"\x01", "varint longer than 10 bytes"),
             ({"type": "array", "items": "long"}, varint(-(2**63)) + varint(0) + b"\x00", "9223372036854775808 items")]
    for kind, payload, message in cases:
        schema = one_field(kind)
        fastavro_read(schema, payload)  # reads something
        with pytest.raises((ValueError, EOFError), match=message):
            compile_reader(schema)(payload, 0)
        with pytest.raises(DecodeError):
            SchemalessDecoder(schema).decode(payload)


def test_a_few_bytes_claiming_2_to_the_60_items_fail_at_once() -> None:
    schema = one_field({"type": "array", "items": {"type": "map", "values": "string"}})
    decoder = SchemalessDecoder(schema)
    for payload in (varint(2**60), varint(2**60) + varint(2**60) + b"\x02a", varint(-(2**60)) + varint(1)):
        with pytest.raises(DecodeError, match="truncated"):
            decoder.decode(payload * 50)


def test_a_hostile_schema_is_data_never_code(monkeypatch: pytest.MonkeyPatch) -> None:
    sources: list[str] = []
    real_compile = compile

    def spy(source: str, *args: Any) -> Any:
        sources.append(source)
        return real_compile(source, *args)

    monkeypatch.setattr(avro_compiled, "compile", spy, raising=False)
    names = [name for name in HOSTILE_NAMES if name]
    schema = fastavro.parse_schema({"type": "record", "name": "X\"); import os; (\"", "namespace": "a'b", "fields": [
        {"name": name, "type": ["null", "string"] if n % 2 else "long"} for n, name in enumerate(names)]})
    value = {name: (f"v{n}" if n % 2 else n) for n, name in enumerate(names)}
    payload = encode(value, schema)
    read = compile_reader(schema)
    assert read(payload, 0) == (value, len(payload)) == fastavro_read(schema, payload)
    [source] = sources
    for name in ('"); import os; ("', "__import__", "'''", "a'b", "X\""):
        assert name not in source
    assert "import" not in source


def test_reader_for_compiles_only_what_needs_no_resolution() -> None:
    schema = avro_module.load_schema_file(default_schema_file())
    assert avro_module._COMPILED_WORKS
    compiled = reader_for(schema)
    assert compiled.__qualname__ == "_make.<locals>.read"
    assert reader_for(schema, schema).__qualname__ == "_make.<locals>.read"
    other = fastavro.parse_schema({**json.loads(default_schema_file().read_text()), "fields": [
        {"name": "event_id", "type": "string"}]})
    resolved = reader_for(schema, other)  # registry writer into another reader schema: fastavro resolves
    assert resolved.__qualname__ != "_make.<locals>.read"
    payload = encode(transaction("e1", "+905321234567", None))
    assert resolved(payload, 0) == ({"event_id": "e1"}, len(payload))


def test_a_schema_the_compiler_leaves_alone_is_read_by_fastavro() -> None:
    recursive = fastavro.parse_schema({"type": "record", "name": "Node", "fields": [
        {"name": "v", "type": "string"}, {"name": "next", "type": ["null", "Node"]}]})
    with pytest.raises(Unsupported, match="recursive"):
        compile_reader(recursive)
    read = reader_for(recursive)  # check_schema refuses it before a decoder asks; reader_for still reads it
    payload = b"\x02a\x02\x02b\x00"
    assert read(payload, 0) == ({"v": "a", "next": {"v": "b", "next": None}}, len(payload))
    branches = avro_compiled.MAX_UNION_BRANCHES + 1
    wide = one_field([{"type": "fixed", "name": f"F{n}", "size": 1} for n in range(branches)])
    with pytest.raises(Unsupported):
        compile_reader(wide)
    payload = varint(100) + b"z"
    assert reader_for(wide)(payload, 0) == ({"x": b"z"}, len(payload))
    huge = fastavro.parse_schema({"type": "record", "name": "W", "fields": [
        {"name": f"f{n}", "type": ["null", "string"]} for n in range(3000)]})  # compiling it would stall the poll loop
    with pytest.raises(Unsupported, match="lines"):
        compile_reader(huge)
    payload = b"\x00" * 2999 + b"\x02\x02z"
    assert reader_for(huge)(payload, 0)[0]["f2999"] == "z"


def test_shared_and_deep_named_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """A named type used at several places is one helper function (a chain of types each used
    twice by the next would otherwise double the code at every level); 30 levels of arrays, deeper
    than Python lets loops nest in one function, go into helper functions."""
    sources: list[str] = []
    real_compile = compile
    monkeypatch.setattr(avro_compiled, "compile", lambda source, *args: sources.append(source)
                        or real_compile(source, *args), raising=False)
    compile_reader(fastavro.parse_schema(_chain(24)))  # 2**24 copies if each use were inlined
    assert len(sources[-1]) < 20_000
    small = fastavro.parse_schema(_chain(11))
    value: Any = {"v": -5}
    for _ in range(11):
        value = {"a": value, "b": value}
    payload = encode(value, small)
    ours, theirs = compile_reader(small)(payload, 0), fastavro_read(small, payload)
    assert same(ours[0], theirs[0]) and ours[1] == theirs[1] == len(payload)

    deep: Any = "long"
    for _ in range(30):
        deep = {"type": "array", "items": deep}
    deep_schema = one_field(deep)
    nested: Any = [7, -7]
    for _ in range(29):
        nested = [[], nested]
    payload = encode({"x": nested}, deep_schema)
    assert compile_reader(deep_schema)(payload, 0) == fastavro_read(deep_schema, payload)


def _chain(levels: int) -> Any:
    chain: Any = {"type": "record", "name": "L0", "fields": [{"name": "v", "type": "long"}]}
    for n in range(1, levels + 1):
        chain = {"type": "record", "name": f"L{n}", "fields": [{"name": "a", "type": chain},
                                                               {"name": "b", "type": f"L{n - 1}"}]}
    return chain


def test_the_registry_path_reads_from_offset_5_and_fails_only_with_decode_errors() -> None:
    rng = random.Random(SEED + 1)
    cases = [Case(rng) for _ in range(20)]

    def handler(request: httpx.Request) -> httpx.Response:
        schema_id = int(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json={"schema": json.dumps(cases[schema_id].raw)})

    client = RegistryClient("http://registry")
    client.http = httpx.Client(base_url="http://registry", transport=httpx.MockTransport(handler))
    decoder = RegistryDecoder(client)
    decoded = refused = 0
    for schema_id, case in enumerate(cases):
        for _ in range(20):
            body = case.payload()
            if body is None:
                continue
            for payload in (body, mutate(rng, body)):
                expected = outcome(fastavro_read, case.schema, payload)
                try:
                    record = decoder.decode(struct.pack(">bI", 0, schema_id) + payload)
                except DecodeError as exc:
                    assert (isinstance(expected, Exception) or expected[1] != len(payload)  # bytes left over
                            or STRICTER.search(str(exc.__cause__)))
                    refused += 1
                    continue
                assert not isinstance(expected, Exception) and same(record, expected[0])
                assert expected[1] == len(payload)
                decoded += 1
    assert decoded > 200 and refused > 50


# ---------------------------------------------------------------- reading only the paths a mapping reads


def record_paths_of(node: Any, named: dict[str, Any], path: tuple[str, ...] = (),
                    depth: int = 0) -> set[tuple[str, ...]]:
    """Every path of field names into the schema's records (through unions and named types)."""
    if depth > 6:
        return set()
    if isinstance(node, str):
        return record_paths_of(named[node], named, path, depth + 1) if node in named else set()
    if isinstance(node, list):
        return set().union(*(record_paths_of(branch, named, path, depth + 1) for branch in node))
    if isinstance(node, dict) and node.get("type") in ("record", "error"):
        found: set[tuple[str, ...]] = set()
        for field in node["fields"]:
            below = (*path, field["name"])
            found.add(below)
            found |= record_paths_of(field["type"], named, below, depth + 1)
        return found
    return set()


def walk(value: Any, path: tuple[str, ...]) -> Any:
    """What a mapping's dotted path finds (consumer/ingest/mapping.py `_walk`)."""
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def compare_projected(full: Any, projected: Any, reads: set[tuple[str, ...]], payload: bytes) -> str:
    """Both raise the same, or both read the same bytes and every read path finds the same value."""
    ours, theirs = outcome(projected, payload, 0), outcome(full, payload, 0)
    if isinstance(theirs, Exception):
        assert isinstance(ours, Exception), (payload, reads, ours, theirs)
        assert (type(ours), str(ours)) == (type(theirs), str(theirs)), (payload, reads, ours, theirs)
        return "both raise"
    assert not isinstance(ours, Exception), (payload, reads, ours, theirs)
    assert ours[1] == theirs[1], (payload, reads)
    for path in reads:
        assert same(walk(ours[0], path), walk(theirs[0], path)), (payload, path, ours, theirs)
    return "same paths" if len(repr(ours[0])) == len(repr(theirs[0])) else "fewer fields"


def test_a_reader_of_some_paths_reads_them_as_the_whole_reader_and_fails_where_it_fails() -> None:
    """The projection may leave fields out, never change what a path finds, the bytes read or
    whether (and how) a record fails: a record is dead-lettered or not whatever the mapping reads."""
    rng = random.Random(SEED + 1)
    counts = {"both raise": 0, "same paths": 0, "fewer fields": 0}
    for _ in range(SCHEMAS // 2):
        case = Case(rng)
        paths = sorted(record_paths_of(case.schema, case.named))
        full = compile_reader(case.schema)
        for _ in range(3):
            reads = set(rng.sample(paths, k=rng.randrange(0, len(paths) + 1)))
            if rng.random() < 0.3:
                reads.add(("no such field",))
            projected = compile_reader(case.schema, reads)
            for _ in range(VALUES_PER_SCHEMA // 2):
                payload = case.payload()
                if payload is None:
                    continue
                counts[compare_projected(full, projected, reads, payload)] += 1
                for _ in range(MUTATIONS_PER_VALUE // 2):
                    counts[compare_projected(full, projected, reads, mutate(rng, payload))] += 1
    print(f"\nreaders of some paths vs the whole reader: {counts}")
    assert counts["fewer fields"] > 500 and counts["both raise"] > 2000


@pytest.mark.parametrize("kind", ["timestamp-millis", "local-timestamp-millis", "timestamp-micros",
                                  "local-timestamp-micros"])
def test_a_timestamp_left_out_fails_exactly_where_its_conversion_fails(kind: str) -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": kind}}, {"name": "id", "type": "string"}]})
    full, projected = compile_reader(schema), compile_reader(schema, [("id",)])
    low, high = -62_135_596_800_000, 253_402_300_799_999  # datetime's range in milliseconds since 1970
    if kind.endswith("micros"):
        low, high = low * 1000, high * 1000 + 999
    for number in (low - 1, low, low + 1, -1, 0, high - 1, high, high + 1, 2**63 - 1, -(2**63)):
        payload = varint(number) + b"\x02x"
        assert compare_projected(full, projected, {("id",)}, payload) == ("fewer fields" if low <= number <= high
                                                                          else "both raise"), number


def test_the_default_mapping_reads_a_sixth_less_of_the_default_schema() -> None:
    """What the consumer decodes with the default mapping: the fields it maps, no datetime."""
    schema = avro_module.load_schema_file(default_schema_file())
    reads = DeclarativeMapper.from_file(default_mapping_file()).fields_read()
    assert reads is not None
    record = transaction("evt-1", "+905321234567", "ae51458c-9e82-417f-8f1d-e074891ea5c1", n=1)
    value, _ = SchemalessDecoder(schema, reads)._read(encode(record, schema), 0)
    assert list(value) == ["event_id", "customer", "campaign_id"]
    assert value["customer"] == record["customer"]


def test_a_schema_whose_projected_reader_is_too_long_is_read_whole_not_by_fastavro() -> None:
    """Found in review: a timestamp left out takes two lines instead of one, so a schema of some
    4,200 timestamps compiled whole but not projected, and was then read by fastavro, which takes a
    negative union index: whether a record decoded depended on the mapping."""
    fields = [{"name": f"t{n}", "type": {"type": "long", "logicalType": "timestamp-millis"}} for n in range(4200)]
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        *fields, {"name": "id", "type": ["null", "string"]}]})
    payload = b"\x00" * 4200 + b"\x01\x02x"  # union index -1
    for reads in (None, {("id",)}):
        with pytest.raises(DecodeError, match="union index -1 out of range"):
            SchemalessDecoder(schema, reads).decode(payload)
