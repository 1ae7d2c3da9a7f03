import io
import json
import os
import random
import struct
import threading

import fastavro
import httpx
import pytest

from consumer.config.resources import default_schema_file
from consumer.errors import ConfigError, DecodeError, RegistryError
from consumer.ingest import avro as avro_module
from consumer.ingest.avro import RegistryClient, RegistryDecoder, SchemalessDecoder, load_schema_file
from consumer.ingest.samples import encode, encode_confluent, transaction

SCHEMA = load_schema_file(default_schema_file())
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


def test_round_trip_of_the_default_contract() -> None:
    value = encode(transaction("e1", "+905321234567", CAMPAIGN, n=1))
    record = SchemalessDecoder(SCHEMA).decode(value)
    assert record["event_id"] == "e1"
    assert record["customer"]["phone"] == "+905321234567"


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_never_decode(seed: int) -> None:
    rng = random.Random(seed)
    decoder = SchemalessDecoder(SCHEMA)
    for _ in range(300):
        with pytest.raises(DecodeError):
            decoder.decode(rng.randbytes(rng.randrange(0, 300)))


def test_truncated_and_padded_records() -> None:
    value = encode(transaction("e1", "+905321234567", CAMPAIGN))
    decoder = SchemalessDecoder(SCHEMA)
    with pytest.raises(DecodeError, match=r"truncated|not Avro"):
        decoder.decode(value[:-5])
    with pytest.raises(DecodeError, match="left over"):
        decoder.decode(value + b"\x00\x01")


def test_bad_schema_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.avsc"
    path.write_text('{"type": "record"}')
    with pytest.raises(ConfigError, match="not a valid Avro schema"):
        load_schema_file(path)


def registry(schemas: dict[int, dict], calls: list[int] | None = None, status: int = 200) -> RegistryClient:
    def handler(request: httpx.Request) -> httpx.Response:
        schema_id = int(request.url.path.rsplit("/", 1)[1])
        if calls is not None:
            calls.append(schema_id)
        if status != 200:
            return httpx.Response(status)
        if schema_id not in schemas:
            return httpx.Response(404, json={"error_code": 40403, "message": "Schema not found"})
        return httpx.Response(200, json={"schema": json.dumps(schemas[schema_id])})

    client = RegistryClient("http://registry")
    client.http = httpx.Client(base_url="http://registry", transport=httpx.MockTransport(handler))
    return client


def test_registry_schema_fetched_once_per_id() -> None:
    raw = json.loads(default_schema_file().read_text())
    calls: list[int] = []
    decoder = RegistryDecoder(registry({7: raw}, calls))
    value = encode_confluent(transaction("e1", "+905321234567", CAMPAIGN), SCHEMA, 7)
    for _ in range(3):
        assert decoder.decode(value)["event_id"] == "e1"
    assert calls == [7]


def test_registry_unknown_id_and_wrong_magic() -> None:
    decoder = RegistryDecoder(registry({}))
    with pytest.raises(DecodeError, match="schema id 9 is not in the registry"):
        decoder.decode(struct.pack(">bI", 0, 9) + b"\x02")
    with pytest.raises(DecodeError, match="first byte 1"):
        decoder.decode(b"\x01\x00\x00\x00\x07abc")
    with pytest.raises(DecodeError, match="shorter than"):
        decoder.decode(b"\x00\x00")


def test_registry_down_is_retriable_not_a_bad_record() -> None:
    decoder = RegistryDecoder(registry({}, status=503))
    with pytest.raises(RegistryError):
        decoder.decode(struct.pack(">bI", 0, 3) + b"\x02")


def test_schema_evolution_reader_vs_writer() -> None:
    old = {"type": "record", "name": "Txn", "fields": [
        {"name": "id", "type": "string"}, {"name": "msisdn", "type": "string"}, {"name": "legacy", "type": "int"}]}
    new_reader = fastavro.parse_schema({"type": "record", "name": "Txn", "fields": [
        {"name": "id", "type": "string"}, {"name": "msisdn", "type": "string"},
        {"name": "channel", "type": "string", "default": "web"}]})
    value = encode_confluent({"id": "a", "msisdn": "+905321234567", "legacy": 3}, fastavro.parse_schema(old), 1)
    record = RegistryDecoder(registry({1: old}), new_reader).decode(value)
    assert record == {"id": "a", "msisdn": "+905321234567", "channel": "web"}


def test_random_confluent_payloads_are_decode_errors() -> None:
    raw = json.loads(default_schema_file().read_text())
    decoder = RegistryDecoder(registry({1: raw}))
    for _ in range(200):
        with pytest.raises(DecodeError):
            decoder.decode(struct.pack(">bI", 0, 1) + os.urandom(random.randrange(0, 100)))


def test_a_garbage_schema_answer_is_asked_again_an_unknown_id_is_not() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        schema_id = int(request.url.path.rsplit("/", 1)[1])
        calls.append(schema_id)
        if schema_id == 1:
            return httpx.Response(200, text="<html>proxy error</html>")
        return httpx.Response(404, json={"error_code": 40403})

    client = RegistryClient("http://registry")
    client.http = httpx.Client(base_url="http://registry", transport=httpx.MockTransport(handler))
    decoder = RegistryDecoder(client)
    for _ in range(2):
        # A proxy's page answering 200 is the registry's trouble: the record waits, not dead-lettered.
        with pytest.raises(RegistryError):
            decoder.decode(struct.pack(">bI", 0, 1) + b"\x02")
        with pytest.raises(DecodeError):
            decoder.decode(struct.pack(">bI", 0, 2) + b"\x02")
    assert calls == [1, 2, 1]


def _outcome(read, payload: bytes):  # type: ignore[no-untyped-def]
    """What reading `payload` gives: the record and the bytes used, or the exception's type."""
    try:
        return read(payload, 0)
    except Exception as exc:
        return type(exc)


def _fastavro(writer, reader):  # type: ignore[no-untyped-def]
    def read(payload: bytes, offset: int):  # type: ignore[no-untyped-def]
        buffer = io.BytesIO(payload[offset:])
        return fastavro.schemaless_reader(buffer, writer, reader), offset + buffer.tell()

    return read


@pytest.mark.parametrize("seed", range(3))
def test_the_schema_pair_prepared_once_reads_exactly_as_schemaless_reader(seed: int) -> None:
    # reader_for skips schemaless_reader's per-record preparation (avro.py); every answer, a record
    # or an error, must stay the same: valid records, cut ones, random bytes, with and without a
    # reader schema to resolve into. Without resolution the reader is a compiled one
    # (avro_compiled.py): it raises where fastavro raises, not always the same exception type.
    rng = random.Random(seed)
    old = fastavro.parse_schema({"type": "record", "name": "Txn", "fields": [
        {"name": "id", "type": "string"}, {"name": "n", "type": ["null", "long"]}, {"name": "legacy", "type": "int"}]})
    new = fastavro.parse_schema({"type": "record", "name": "Txn", "fields": [
        {"name": "id", "type": "string"}, {"name": "n", "type": ["null", "long"]},
        {"name": "channel", "type": "string", "default": "web"}]})
    payloads = [encode(transaction(f"e{n}", "+905321234567", CAMPAIGN, n=n)) for n in range(20)]
    payloads += [p[:rng.randrange(len(p))] for p in payloads] + [rng.randbytes(rng.randrange(60)) for _ in range(200)]
    old_payloads = [encode({"id": f"a{n}", "n": n or None, "legacy": n}, old) for n in range(20)]
    old_payloads += [rng.randbytes(rng.randrange(30)) for _ in range(200)]
    assert avro_module._DIRECT_WORKS and avro_module._COMPILED_WORKS  # the fastavro installed here
    for writer, reader, cases in ((SCHEMA, None, payloads), (old, new, old_payloads), (SCHEMA, SCHEMA, payloads)):
        prepared = avro_module.reader_for(writer, reader)
        compiled = reader is None or reader == writer
        for payload in cases:
            expected = _outcome(_fastavro(writer, reader), payload)
            got = _outcome(prepared, payload)
            if compiled and isinstance(expected, type):
                assert isinstance(got, type)
            else:
                assert got == expected


def test_the_readers_cache_is_bounded_and_an_evicted_id_is_asked_again_within_the_rate_bound() -> None:
    """Records forging schema ids the registry knows (or a registry of very many versions) must not
    grow the decoder's memory for ever: past MAX_SCHEMA_READERS the first loaded reader goes, and
    its id is asked again when it comes back, under the same token bucket as any other request."""
    raw = json.loads(default_schema_file().read_text())
    cap = avro_module.MAX_SCHEMA_READERS
    calls: list[int] = []
    now = [0.0]
    decoder = RegistryDecoder(registry({n: raw for n in range(1, cap + 2)}, calls), clock=lambda: now[0])
    record = transaction("e1", "+905321234567", CAMPAIGN)

    def decode(schema_id: int) -> None:
        assert decoder.decode(encode_confluent(record, SCHEMA, schema_id))["event_id"] == "e1"

    for schema_id in range(1, cap + 2):
        now[0] += 1.0  # the bucket refills: this part is about the cache, not the rate
        decode(schema_id)
    assert len(decoder._readers) == cap
    calls.clear()
    for schema_id in range(2, cap + 2):  # the last `cap` loaded are all still there
        decode(schema_id)
    assert calls == []
    decode(1)  # the first loaded was evicted: asked again (and id 2 goes in its place)
    assert calls == [1] and len(decoder._readers) == cap

    # An evicted id spends a token like any other request: with the bucket empty its records wait.
    for schema_id in range(10_000, 10_000 + avro_module.REGISTRY_BURST):  # more than the tokens left
        with pytest.raises((DecodeError, RegistryError)):  # unknown ids, one request each, then busy
            decoder.decode(struct.pack(">bI", 0, schema_id) + b"\x02")
    calls.clear()
    with pytest.raises(RegistryError) as waited:
        decode(2)
    assert waited.value.kind == "busy" and calls == []
    now[0] += 1.0
    decode(2)
    assert calls == [2]


def test_threads_that_miss_the_same_id_together_fetch_it_once() -> None:
    """The readers' cache is read without the lock (decode runs per record); a thread that waited
    for the lock while another fetched the same id takes that reader instead of asking again (an
    extra request, and a token of the registry's rate bound, spent for nothing)."""
    raw = json.loads(default_schema_file().read_text())
    calls: list[int] = []
    first_inside, release = threading.Event(), threading.Event()
    client = registry({7: raw}, calls)
    schema = client.schema

    def slow_schema(schema_id: int):  # type: ignore[no-untyped-def]
        first_inside.set()
        release.wait(5)
        return schema(schema_id)

    class ContendedLock:
        """The decoder's lock, telling when a second thread comes to it (it missed the cache)."""

        def __init__(self) -> None:
            self.lock, self.second_came = threading.Lock(), threading.Event()

        def __enter__(self) -> None:
            if self.lock.locked():
                self.second_came.set()
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    client.schema = slow_schema  # type: ignore[method-assign]
    decoder = RegistryDecoder(client)
    lock = decoder._lock = ContendedLock()  # type: ignore[assignment]
    value = encode_confluent(transaction("e1", "+905321234567", CAMPAIGN), SCHEMA, 7)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(decoder.decode(value)["event_id"])) for _ in range(2)]
    threads[0].start()
    assert first_inside.wait(5)
    threads[1].start()
    assert lock.second_came.wait(5)  # it missed the cache and waits at the lock
    release.set()
    for thread in threads:
        thread.join(5)
    assert results == ["e1", "e1"]
    assert calls == [7]
