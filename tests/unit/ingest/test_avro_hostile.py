"""Hostile schemas and registry answers (issue 10, items 2 and 3): nothing decodes with a schema
that can recurse or nest without bound, and the registry's failures are classified."""

import json
import struct
from typing import Any

import fastavro
import httpx
import pytest

from consumer.config.resources import default_schema_file
from consumer.errors import ConfigError, DecodeError, RegistryError, UnsupportedSchemaError
from consumer.ingest import avro
from consumer.ingest.avro import RegistryClient, RegistryDecoder, check_schema, load_schema_file
from consumer.ingest.samples import encode_confluent, transaction
from tests.support.zigzag import varint

DEFAULT = json.loads(default_schema_file().read_text())
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
RECURSIVE = {"type": "record", "name": "Node", "fields": [
    {"name": "v", "type": "string"}, {"name": "next", "type": ["null", "Node"], "default": None}]}
MUTUAL = {"type": "record", "name": "A", "fields": [
    {"name": "b", "type": {"type": "record", "name": "B", "fields": [
        {"name": "a", "type": {"type": "array", "items": "A"}}]}}]}
NULL_ITEMS = {"type": "record", "name": "R", "fields": [{"name": "xs", "type": {"type": "array", "items": "null"}}]}


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "record", "name": "L0", "fields": [{"name": "v", "type": "int"}]}
    for n in range(1, levels):
        schema = {"type": "record", "name": f"L{n}", "fields": [{"name": "inner", "type": schema}]}
    return schema


EMPTY = {"type": "record", "name": "Empty", "fields": [{"name": "c", "type": "null"}]}


@pytest.mark.parametrize(("schema", "text"), [
    (RECURSIVE, "recursive"), (MUTUAL, "recursive"), (nested(40), "deeper"), (NULL_ITEMS, "take no bytes"),
    ({"type": "array", "items": {"type": "array", "items": {"type": "record", "name": "E", "fields": []}}},
     "take no bytes"),
    # Found in review: a top-level union's named types were not known to the check, so an array of
    # a record taking no bytes, named after its definition, passed it (7 bytes claimed 4 million
    # items; a count near 2**62 ran the poll loop out of memory).
    (["null", {"type": "record", "name": "R", "fields": [
        {"name": "first", "type": ["null", EMPTY]}, {"name": "many", "type": {"type": "array", "items": "Empty"}}]}],
     "take no bytes"),
    # Found in review: a dict cannot have a list as a key: every record would fail, or read
    # another way where the mapping leaves the field out.
    ({"type": "record", "name": "R", "fields": [{"name": "id", "type": "string"}, {"name": ["x"], "type": "string"}]},
     "field name"),
])
def test_refused_schemas(schema: dict[str, Any], text: str) -> None:
    with pytest.raises(UnsupportedSchemaError, match=text):
        check_schema(fastavro.parse_schema(schema))


def test_accepted_schemas() -> None:
    check_schema(fastavro.parse_schema(DEFAULT))
    check_schema(fastavro.parse_schema(nested(30)))
    shared = {"type": "record", "name": "Money", "fields": [{"name": "v", "type": "long"}]}
    check_schema(fastavro.parse_schema({"type": "record", "name": "T", "fields": [
        {"name": "a", "type": shared}, {"name": "b", "type": "Money"}, {"name": "c", "type": ["null", "Money"]}]}))


def test_a_recursive_local_schema_stops_the_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.avsc"
    path.write_text(json.dumps(RECURSIVE))
    with pytest.raises(ConfigError, match="recursive"):
        load_schema_file(path)


def client(handler: Any) -> RegistryClient:
    registry = RegistryClient("http://registry")
    registry.http = httpx.Client(base_url="http://registry", transport=httpx.MockTransport(handler))
    return registry


def framed(schema_id: int, body: bytes = b"\x02") -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


def test_a_deep_record_of_a_recursive_writer_schema_is_refused_when_fetched() -> None:
    """Before: fastavro recursed through 10 KB of nested nodes and the process died in the poll loop."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json={"schema": json.dumps(RECURSIVE)})

    decoder = RegistryDecoder(client(handler))
    body = b"\x02a\x02" * 5000 + b"\x02a\x00"  # 5000 nested nodes
    for _ in range(3):
        with pytest.raises(UnsupportedSchemaError, match="recursive") as raised:
            decoder.decode(framed(5, body))
        assert raised.value.reason == "unsupported_schema"
    assert len(calls) == 1  # refused for good: an id's schema never changes


@pytest.mark.parametrize(("answer", "error", "kind"), [
    (httpx.Response(403, json={"error_code": 40301}), RegistryError, "permission"),
    (httpx.Response(401), RegistryError, "permission"),
    (httpx.Response(500), RegistryError, "server"),
    (httpx.Response(429), RegistryError, "server"),
    (httpx.Response(200, text="<html>proxy</html>"), RegistryError, "server"),
    (httpx.Response(200, json={"schema": 5}), RegistryError, "server"),
    (httpx.Response(200, json={"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}),
     UnsupportedSchemaError, None),
    (httpx.Response(200, json={"schema": "{\"type\": \"record\"}"}), UnsupportedSchemaError, None),
])
def test_registry_answers_are_classified(answer: httpx.Response, error: type[Exception], kind: str | None) -> None:
    decoder = RegistryDecoder(client(lambda request: answer))
    with pytest.raises(error) as raised:
        decoder.decode(framed(3))
    if kind is not None:
        assert isinstance(raised.value, RegistryError) and raised.value.kind == kind


def test_unreachable_registry() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(RegistryError) as raised:
        RegistryDecoder(client(handler)).decode(framed(3))
    assert raised.value.kind == "unreachable"


def test_unknown_ids_are_remembered_for_a_while_and_requests_are_bounded() -> None:
    calls: list[int] = []
    now = [0.0]

    def handler(request: httpx.Request) -> httpx.Response:
        schema_id = int(request.url.path.rsplit("/", 1)[1])
        calls.append(schema_id)
        if schema_id == 1:
            return httpx.Response(200, json={"schema": json.dumps(DEFAULT)})
        return httpx.Response(404, json={"error_code": 40403})

    decoder = RegistryDecoder(client(handler), clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(DecodeError, match="not in the registry"):
            decoder.decode(framed(9))
    assert calls == [9]
    now[0] += avro.UNKNOWN_ID_TTL_S + 1
    with pytest.raises(DecodeError):
        decoder.decode(framed(9))
    assert calls == [9, 9]  # a 404 is not remembered for ever

    # 20,000 distinct garbage ids: at most the burst goes to the registry at once, then the
    # records wait for the bound (a RegistryError of kind `busy`, not a dead-letter).
    calls.clear()
    busy = 0
    for schema_id in range(1000, 21_000):
        try:
            decoder.decode(framed(schema_id))
        except RegistryError as exc:
            assert exc.kind == "busy" and exc.retry_after_s and exc.retry_after_s > 0
            busy += 1
        except DecodeError:
            pass
    assert len(calls) <= avro.REGISTRY_BURST and busy == 20_000 - len(calls)
    now[0] += 1.0  # a second later, REGISTRY_REQUESTS_PER_S more
    value = encode_confluent(transaction("e1", "+905321234567", CAMPAIGN), fastavro.parse_schema(DEFAULT), 1)
    assert decoder.decode(value)["event_id"] == "e1"


def shared_chain(levels: int, leaf: str = "long") -> dict[str, Any]:
    """Each level's record holds the previous one twice: once defined inline, once by name. A few
    hundred bytes of JSON; walked without remembering named types, 2**levels visits."""
    chain: dict[str, Any] = {"type": "record", "name": "S0", "fields": [{"name": "v", "type": leaf}]}
    for n in range(1, levels + 1):
        chain = {"type": "record", "name": f"S{n}", "fields": [{"name": "a", "type": chain},
                                                               {"name": "b", "type": f"S{n - 1}"}]}
    return {"type": "record", "name": "Top", "fields": [{"name": "xs", "type": {"type": "array", "items": chain}}]}


class VisitBudget:
    """Wraps `avro_compiled.min_bytes` (it calls itself through its module, so every visit counts)
    and fails past a budget: a walk that visits a named type once per use, not once, fails fast
    instead of stalling the test for hours."""

    def __init__(self, real: Any, budget: int) -> None:
        self.real, self.budget, self.visits = real, budget, 0

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        self.visits += 1
        if self.visits > self.budget:
            raise AssertionError(f"more than {self.budget} visits of the schema's types")
        result: int = self.real(*args, **kwargs)
        return result


@pytest.mark.parametrize("leaf", ["long", "null"])
def test_a_schema_reusing_named_types_is_checked_and_compiled_in_linear_time(
        monkeypatch: pytest.MonkeyPatch, leaf: str) -> None:
    """A registry schema whose types reuse each other (28 levels: depth allowed, 2**28 uses) is
    checked and compiled in a visit per type, not per use: the poll loop fetching it must not stall
    for hours (past max.poll.interval.ms, on every replica that takes the partition over)."""
    from consumer.ingest import avro_compiled
    budget = VisitBudget(avro_compiled.min_bytes, 2_000)
    for module in (avro, avro_compiled):  # the schema check's name for it, and the compiler's
        monkeypatch.setattr(module, "min_bytes", budget)
    raw = shared_chain(28, leaf)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"schema": json.dumps(raw)})

    client = RegistryClient("http://registry")
    client.http = httpx.Client(base_url="http://registry", transport=httpx.MockTransport(handler))
    decoder = RegistryDecoder(client)
    payload = struct.pack(">bI", 0, 1) + b"\x00"  # an empty array
    if leaf == "null":  # every item would take no bytes: refused, as a shallow such schema is
        with pytest.raises(UnsupportedSchemaError, match="take no bytes"):
            decoder.decode(payload)
    else:
        assert decoder.decode(payload) == {"xs": []}
        assert avro.reader_for(fastavro.parse_schema(raw)).__qualname__ == "_make.<locals>.read"  # compiled


@pytest.mark.parametrize("size", [0, False])
def test_an_array_of_fixed_items_that_read_no_bytes_is_refused(size: Any) -> None:
    """fastavro reads a fixed of `"size": false` as 0 bytes (a bool is an int): five bytes would
    claim ten million items, as a fixed of size 0 would."""
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "a", "type": {"type": "array", "items": {"type": "fixed", "name": "F", "size": size}}}]})
    with pytest.raises(UnsupportedSchemaError):
        avro.check_schema(schema)


def union_chain(levels: int) -> str:
    """`levels` records, each the only branch but null of its parent's field: a few KB of JSON that
    fastavro parses (up to a few hundred levels) and a recursive walk measured past Python's stack."""
    return ("".join(f'{{"type":"record","name":"R{n}","fields":[{{"name":"f","type":["null",' for n in range(levels))
            + '"string"' + "]}]}" * levels)


@pytest.mark.parametrize("levels", [33, 200, 5000])
def test_a_writer_schema_nested_past_the_stack_is_refused_once_as_unsupported(levels: int) -> None:
    """Found in review: the check measured children before testing the depth, so 200 levels raised
    RecursionError, which the registry client did not catch: the id was not remembered, every
    record asked the registry again and was dead-lettered as `decode_error`. 5000 levels are past
    fastavro's own (recursive) parser: refused the same way."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json={"schema": union_chain(levels)})

    decoder = RegistryDecoder(client(handler))
    for _ in range(3):
        with pytest.raises(UnsupportedSchemaError) as raised:
            decoder.decode(framed(7, b"\x00"))
        assert raised.value.reason == "unsupported_schema"
        assert "deeper than 32 levels" in str(raised.value) or "RecursionError" in str(raised.value)
    assert calls == ["/schemas/ids/7"]


@pytest.mark.parametrize("levels", [200, 5000])
def test_a_local_schema_nested_past_the_stack_stops_the_start_with_a_config_error(tmp_path, levels: int) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "deep.avsc"
    path.write_text(union_chain(levels))
    with pytest.raises(ConfigError, match="AVRO_SCHEMA_FILE"):
        load_schema_file(path)


def test_unions_in_unions_are_refused_before_the_stack_runs_out() -> None:
    """A union directly in a union (the Avro spec forbids it; fastavro parses it) adds no level of
    nesting, but a call of the check each: 450 of them were a RecursionError."""
    node: Any = "string"
    for _ in range(450):
        node = ["null", node]
    with pytest.raises(UnsupportedSchemaError, match="deeper than 32 levels"):
        fetched(json.dumps({"type": "record", "name": "R", "fields": [{"name": "f", "type": node}]}))


def fetched(text: str) -> Any:
    """The writer schema of this registry answer, parsed and checked as a fetched one is."""
    return client(lambda request: httpx.Response(200, json={"schema": text})).schema(1)


def decimal_schema(amount: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Payment", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "amount", "type": amount}]}


@pytest.mark.parametrize("amount", [
    {"type": "bytes", "logicalType": "decimal", "precision": 0, "scale": 0},
    {"type": "bytes", "logicalType": "decimal", "scale": 0},  # no precision: fastavro fails every record
    {"type": "bytes", "logicalType": "decimal", "precision": 10**6, "scale": 2},  # 415 KB values, minutes each
    {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 5},
    {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": -1},
    {"type": "bytes", "logicalType": "decimal", "precision": -4, "scale": 0},
    {"type": "bytes", "logicalType": "decimal", "precision": 4.5, "scale": 0},
    {"type": "fixed", "name": "Big", "size": 500_000, "logicalType": "decimal", "precision": 1_000_000, "scale": 0},
])
def test_a_decimal_out_of_the_spec_or_the_bound_is_an_unsupported_schema(amount: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedSchemaError, match="decimal"):
        fetched(json.dumps(decimal_schema(amount)))


@pytest.mark.parametrize("kind", ["bytes", "fixed"])
def test_a_decimal_larger_than_its_precision_is_refused_before_it_is_converted_by_every_reader(kind: str) -> None:
    """Found in review: fastavro's decimal conversion is quadratic in its bytes (150 KB: about 2 s,
    1 MB: 86 s of the poll loop, holding the GIL), and ran on every decimal, even one the mapping
    leaves out. Every reader (projected, whole, fastavro resolving into a reader schema) refuses
    more significant bytes than 12 digits take (6) with one message, before converting."""
    size = 150_000
    amount: dict[str, Any] = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}
    if kind == "fixed":
        amount = {**amount, "type": "fixed", "name": "Amount", "size": size}
    writer = fetched(json.dumps(decimal_schema(amount)))
    reader = {**decimal_schema(amount), "fields": [*decimal_schema(amount)["fields"],
                                                   {"name": "note", "type": "string", "default": ""}]}
    readers = {"projected": avro.reader_for(writer, reads=[("event_id",)]), "whole": avro.reader_for(writer),
               "fastavro": avro.reader_for(writer, fastavro.parse_schema(reader))}
    assert readers["whole"].__qualname__ == "_make.<locals>.read" != readers["fastavro"].__qualname__

    def encoded(body: bytes) -> bytes:
        return b"\x04e1" + (body if kind == "fixed" else varint(len(body)) + body)

    hostile = encoded(b"\x7f" * size)
    messages = set()
    for read in readers.values():
        with pytest.raises(DecodeError) as raised:
            avro._read(hostile, 0, read)
        messages.add(str(raised.value))
    assert messages == {f"not Avro for this schema (ValueError: a decimal of {size} significant bytes does not fit "
                        "its precision of 12 digits (at most 6 bytes))"}, messages

    # The largest 12 digits, and its negative, sign-extended to the whole width: read by all alike.
    for number in (999_999_999_999, -999_999_999_999):
        body = number.to_bytes(size if kind == "fixed" else 6, "big", signed=True)
        values = {name: avro._read(encoded(body), 0, read)["amount"] for name, read in readers.items()
                  if name != "projected"}
        assert {str(value) for value in values.values()} == {f"{number / 100:.2f}"}, values
        assert avro._read(encoded(body), 0, readers["projected"]) == {"event_id": "e1"}
