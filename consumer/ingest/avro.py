"""Avro decoding: plain Avro with a local schema, or Confluent wire format via a schema registry.

Schemas are parsed once (the local one at start, registry ones the first time their id is
seen) and fastavro errors become DecodeError, so a record that does not decode is dead-lettered
instead of crashing the consumer or being retried forever. A registry that cannot be reached is
a RegistryError instead: the record is fine, the registry is not, so it is retried later.

Hostile input, and what bounds it:
- fastavro has no depth limit, and a few bytes can claim billions of array items. So every
  schema is checked before it is used (`check_schema`): no recursion, at most MAX_SCHEMA_DEPTH
  levels of nesting, no array whose items take no bytes. With such a schema a record's depth is
  bounded and every item costs at least a byte, so decoding is bounded by MAX_MESSAGE_BYTES. A
  writer schema from the registry that fails the check is remembered as `unsupported_schema`.
- Records read without schema resolution go through a reader generated for their schema
  (avro_compiled.py: about 60% of fastavro's time, the same values, stricter on three kinds of
  invalid bytes); a schema it leaves alone, or a resolution, through fastavro.
- Registry answers are classified: 200 with an Avro schema (cached for good: an id never
  changes), 200 with another schema type or an unusable schema (`unsupported_schema`, cached for
  good), 404 (`decode_error`, remembered for UNKNOWN_ID_TTL_S, then asked again), 401/403
  (`permission`), anything else or no answer (`server`, `unreachable`): the records wait.
- Registry requests are bounded (REGISTRY_REQUESTS_PER_S, burst REGISTRY_BURST): a stream of
  garbage schema ids waits for the bound instead of sending one request per record.
- Every cache by schema id is bounded (MAX_SCHEMA_READERS readers, MAX_REMEMBERED_IDS refusals),
  the oldest entry going first: forged ids cannot grow memory for ever.
"""

from __future__ import annotations

import io
import json
import logging
import ssl
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

import fastavro
import httpx

from consumer.config.registry import RegistryConnection
from consumer.config.resources import default_schema_file
from consumer.errors import ConfigError, DecodeError, RegistryError, UnsupportedSchemaError, unreadable_file
from consumer.ingest.avro_compiled import PRIMITIVES, agrees_with_fastavro, compile_reader, min_bytes
from consumer.ingest.avro_logical import LogicalTypeError, check_decimal
from consumer.ingest.fused import FusedReader, fused_reader
from consumer.ingest.mapping import Recipient
from consumer.operations.logs import cut

log = logging.getLogger(__name__)

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")  # Confluent wire format: magic byte, 4-byte big-endian schema id
REGISTRY_TIMEOUT_S = 2.0  # asked from the poll loop: a hanging registry must not stall it for long
MAX_SCHEMA_DEPTH = 32  # nesting levels (records, arrays, maps); real contracts use a handful
UNKNOWN_ID_TTL_S = 300.0  # a 404 is asked again after this (a registry replica may lag behind)
REGISTRY_REQUESTS_PER_S = 50.0
REGISTRY_BURST = 100
MAX_REMEMBERED_IDS = 10_000  # per cache: garbage ids must not grow memory without bound
# Readers kept, by schema id. A topic's producers use a few versions at a time; records forging ids
# the registry knows (or a registry of very many versions) would otherwise keep one reader each
# for ever (about 9 KiB for the default contract, more for wider schemas). One evicted and needed
# again costs one registry request, under the same bound as any other.
MAX_SCHEMA_READERS = 256
# Calls of the schema check down one path: a level of nesting takes at most four (a union, a
# `{"type": ...}` around a branch, its name, the named type), six with room to spare; more is
# nesting that adds no level (a union in a union...), refused long before Python's stack runs out
# (two Python frames a call).
_MAX_CHECK_FRAMES = 6 * (MAX_SCHEMA_DEPTH + 1)


class UnknownSchemaError(DecodeError):
    """The registry says this schema id does not exist."""


class Decoder(Protocol):
    def decode(self, value: bytes) -> Mapping[str, Any]: ...


def load_schema_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise unreadable_file(f"AVRO_SCHEMA_FILE={path}", exc) from exc
    except ValueError as exc:
        raise ConfigError(f"AVRO_SCHEMA_FILE={path}: not a valid Avro schema ({exc})") from exc
    try:
        schema = parse_writer_schema(text)
    except UnsupportedSchemaError as exc:
        raise ConfigError(f"AVRO_SCHEMA_FILE={path}: {exc}; fix or flatten the schema") from exc
    return schema


def parse_writer_schema(text: str) -> Any:
    """The parsed, checked schema of this JSON text; UnsupportedSchemaError for any failure.

    Whatever parsing or checking raises (fastavro's parser recurses, so a deep enough schema is a
    RecursionError; any bug of ours on hostile input) is a refusal of the schema: a registry id is
    then remembered as unsupported, asked once, its records dead-lettered as `unsupported_schema`,
    and a local file stops the start with a ConfigError, not a traceback."""
    try:
        schema = fastavro.parse_schema(json.loads(text))
    except Exception as exc:
        raise UnsupportedSchemaError(cut(f"not a valid Avro schema ({type(exc).__name__}: {exc})", 300)) from exc
    try:
        check_schema(schema)
    except UnsupportedSchemaError:
        raise
    except Exception as exc:
        raise UnsupportedSchemaError(cut(f"the schema cannot be checked ({type(exc).__name__}: {exc})", 300)) from exc
    return schema


def check_schema(schema: Any) -> None:
    """Raise UnsupportedSchemaError if decoding with this parsed schema could recurse without
    bound, nest deeper than MAX_SCHEMA_DEPTH, read items that take no bytes, or convert a logical
    type without bound (module docstring).

    The walk stops at the depth limit before it goes deeper: a schema nested past Python's stack
    (200 records each in a union is a few KB) is refused as too deep, never a RecursionError."""
    named = _named_types(schema)
    depth_of: dict[str, int] = {}  # named types already measured: a DAG of references stays linear
    least: dict[str, int] = {}  # their fewest bytes (`min_bytes`), likewise

    def too_deep() -> UnsupportedSchemaError:
        return UnsupportedSchemaError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")

    def depth(node: Any, defining: tuple[str, ...], level: int, frames: int) -> int:
        """The levels `node` holds, met at `level` levels and `frames` calls down."""
        if level > MAX_SCHEMA_DEPTH or frames > _MAX_CHECK_FRAMES:
            raise too_deep()
        frames += 1
        if isinstance(node, str):
            if node in PRIMITIVES:
                return 0
            if node in defining:
                raise UnsupportedSchemaError(f"the schema is recursive ({node[:64]} contains itself)")
            if node not in depth_of:
                if node not in named:
                    raise UnsupportedSchemaError(f"the schema names an undefined type {node[:64]!r}")
                depth_of[node] = depth(named[node], defining, level, frames)
            if level + depth_of[node] > MAX_SCHEMA_DEPTH:  # measured where it was met first, shallower
                raise too_deep()
            return depth_of[node]
        if isinstance(node, list):  # a union: as deep as its deepest branch
            return max((depth(branch, defining, level, frames) for branch in node), default=0)
        if not isinstance(node, dict):
            raise UnsupportedSchemaError("the schema holds something that is not a type")
        kind = node.get("type")
        if node.get("logicalType") == "decimal" and kind in ("bytes", "fixed"):
            try:
                check_decimal(node)
            except LogicalTypeError as exc:
                raise UnsupportedSchemaError(str(exc)) from exc
        if kind in ("record", "error"):
            name = node.get("name", "")
            if not all(isinstance(field, dict) and isinstance(field.get("name"), str)
                       for field in node.get("fields", ())):
                raise UnsupportedSchemaError(f"record {str(name)[:64]!r} has a field name that is not a string")
            inner = (*defining, name)
            found = 1 + max((depth(field.get("type"), inner, level + 1, frames) for field in node.get("fields", ())),
                            default=0)
            depth_of[name] = found
        elif kind == "array":
            found = 1 + depth(node.get("items"), defining, level + 1, frames)
            # after the depth: min_bytes recurses through what it measures, bounded only once checked
            if min_bytes(node.get("items"), named, known=least) == 0:
                raise UnsupportedSchemaError("an array's items take no bytes (a few bytes could claim billions)")
        elif kind == "map":
            found = 1 + depth(node.get("values"), defining, level + 1, frames)
        else:
            found = 0 if kind in PRIMITIVES or kind in ("enum", "fixed") else depth(kind, defining, level, frames)
        if level + found > MAX_SCHEMA_DEPTH:
            raise too_deep()
        return found

    depth(schema, (), 0, 0)


def _named_types(schema: Any) -> dict[str, Any]:
    """Every named type the parsed schema defines, wherever: a dict schema lists them, a top-level
    union does not (and a type defined in one branch can be used by name in a later one)."""
    named: dict[str, Any] = dict(schema.get("__named_schemas", {})) if isinstance(schema, dict) else {}
    nodes = [schema]
    while nodes:  # a loop, not recursion: the schema is a tree of JSON, as deep as its author made it
        node = nodes.pop()
        if isinstance(node, list):
            nodes.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "error", "enum", "fixed") and isinstance(node.get("name"), str):
                named.setdefault(node["name"], node)
            if kind in ("record", "error"):
                nodes.extend(field.get("type") for field in node.get("fields", ()) if isinstance(field, dict))
            elif kind in ("array", "map"):
                nodes.append(node.get("items" if kind == "array" else "values"))
            elif isinstance(kind, (dict, list)):
                nodes.append(kind)
    return named


Reader = Callable[[bytes, int], tuple[Any, int]]  # (payload, offset) -> (value, the offset after it)
BufferReader = Callable[[io.BytesIO], Any]

# fastavro's own record reader, under `schemaless_reader`: (buffer, writer, named schemas, reader,
# options). Per record, `schemaless_reader` compares the two schemas (a deep comparison when there
# is a reader schema), fills fresh named-schema tables by walking both and builds its options:
# about 1 us of the 6 a record of the default schema takes. `reader_for` does that once per
# schema pair. The function is not fastavro's public API, so it is used only if a probe at load
# reads a record through it exactly as `schemaless_reader` does; otherwise `schemaless_reader`.
_READ_DATA: Any = getattr(getattr(fastavro, "_read", None), "_read_data", None)
_OPTIONS = {"return_record_name": False, "return_record_name_override": False, "handle_unicode_errors": "strict",
            "return_named_type": False, "return_named_type_override": False}
_PROBE_SCHEMA = {"type": "record", "name": "Probe", "fields": [
    {"name": "s", "type": "string"}, {"name": "n", "type": ["null", "long"]},
    {"name": "m", "type": {"type": "map", "values": "string"}}]}
_PROBE = b"\x04ok\x02\x54\x02\x02k\x02v\x00"  # {"s": "ok", "n": 42, "m": {"k": "v"}}


def _direct(writer: Any, reader: Any) -> BufferReader | None:
    if _READ_DATA is None:
        return None
    if writer == reader:  # as schemaless_reader: no resolution into the same schema
        reader = None
    named: dict[str, dict[str, Any]] = {"writer": {}, "reader": {}}
    writer = fastavro.parse_schema(writer, named["writer"])
    if reader:
        reader = fastavro.parse_schema(reader, named["reader"])
    read_data, options = _READ_DATA, dict(_OPTIONS)

    def read(buffer: io.BytesIO) -> Any:
        return read_data(buffer, writer, named, reader, options)

    return read


def reader_for(writer: Any, reader: Any = None, reads: Collection[tuple[str, ...]] | None = None) -> Reader:
    """A function reading one record of `writer` (resolved into `reader`, if given) from a payload
    at an offset: (what `fastavro.schemaless_reader(buffer, writer, reader)` returns, the offset
    after it), or an exception where fastavro raises one.

    Without resolution (no reader schema, or the writer's own) a reader generated for the schema
    (avro_compiled.py: about half fastavro's time) if a probe at load reads exactly as fastavro;
    with resolution, or a schema that module leaves to fastavro, fastavro itself. `reads`: the
    record paths the mapper reads (`Mapper.fields_read`); a compiled reader leaves the other fields
    out of the record, fastavro reads them all."""
    if _COMPILED_WORKS and (not reader or reader == writer):
        try:
            return compile_reader(writer, reads)
        except Exception as exc:  # Unsupported, or anything Python refuses to compile: fastavro reads it
            log.info("Avro schema read by fastavro, not a compiled reader (%s)", str(exc)[:200])
    direct = _direct(writer, reader) if _DIRECT_WORKS else None
    if direct is None:
        return _from_buffer(lambda buffer: fastavro.schemaless_reader(buffer, writer, reader))
    return _from_buffer(direct)


def _from_buffer(read: BufferReader) -> Reader:
    def read_at(payload: bytes, offset: int) -> tuple[Any, int]:
        buffer = io.BytesIO(payload)
        if offset:
            buffer.seek(offset)
        return read(buffer), buffer.tell()

    return read_at


def _direct_works() -> bool:
    try:
        probe = _direct(fastavro.parse_schema(_PROBE_SCHEMA), None)
        if probe is None:
            return False
        buffer = io.BytesIO(_PROBE)
        expected = fastavro.schemaless_reader(io.BytesIO(_PROBE), fastavro.parse_schema(_PROBE_SCHEMA))
        return bool(probe(buffer) == expected == {"s": "ok", "n": 42, "m": {"k": "v"}}
                    and buffer.tell() == len(_PROBE))
    except Exception:  # another fastavro's internals: its public reader it is
        return False


_DIRECT_WORKS = _direct_works()
_COMPILED_WORKS = agrees_with_fastavro()


def _read(payload: bytes, offset: int, read: Reader) -> Mapping[str, Any]:
    try:
        record, end = read(payload, offset)
    except (EOFError, StopIteration) as exc:
        raise DecodeError("truncated Avro record") from exc
    except Exception as exc:  # fastavro raises bare ValueError, IndexError, UnicodeDecodeError...
        # A decoder's text may quote the record: cut where no part of a number is left (`cut`).
        raise DecodeError(cut(f"not Avro for this schema ({type(exc).__name__}: {exc})", 300)) from exc
    if end != len(payload):
        # Random bytes often decode "successfully" as a prefix; a real record uses every byte.
        raise DecodeError(f"not Avro for this schema ({len(payload) - end} bytes left over)")
    if record.__class__ is not dict and not isinstance(record, Mapping):  # a dict is the usual case, checked fast
        raise DecodeError("the Avro value is not a record")
    return record


class SchemalessDecoder:
    """Plain Avro (no header), written with the one local schema.

    Given the mapper, `recipient(value)` decodes and maps a record in one native pass where the
    native core takes it (consumer/ingest/fused.py); None: `decode`, then the mapper."""

    def __init__(self, schema: Any, reads: Collection[tuple[str, ...]] | None = None, mapper: Any = None) -> None:
        self.schema = schema
        self.mapper = mapper
        self._read = reader_for(schema, reads=reads)
        self._fused = fused_reader(schema, mapper, reader_for) if mapper is not None else None

    def decode(self, value: bytes) -> Mapping[str, Any]:
        return _read(value, 0, self._read)

    def recipient(self, value: bytes) -> Recipient | None:
        return None if self._fused is None else self._fused(value, 0)


class RegistryClient:
    """The Confluent REST subset the decoder needs: `GET /schemas/ids/{id}`, answers classified
    (module docstring)."""

    def __init__(self, url: str, *, verify: ssl.SSLContext | bool | str = True,
                 auth: tuple[str, str] | None = None) -> None:
        self.http = httpx.Client(base_url=url, timeout=REGISTRY_TIMEOUT_S, verify=verify, auth=auth,
                                 headers={"Accept": "application/vnd.schemaregistry.v1+json"})

    def schema(self, schema_id: int) -> Any:
        try:
            response = self.http.get(f"/schemas/ids/{schema_id}")
        except httpx.HTTPError as exc:
            raise RegistryError(f"schema registry unreachable ({type(exc).__name__}); check SCHEMA_REGISTRY_URL "
                                "and the network", kind="unreachable") from exc
        status = response.status_code
        if status == 404:
            raise UnknownSchemaError(f"schema id {schema_id} is not in the registry")
        if status in (401, 403):
            raise RegistryError(f"schema registry refused this consumer (HTTP {status}); check its credentials "
                                "and the registry's ACLs", kind="permission")
        if status != 200:
            raise RegistryError(f"schema registry answered HTTP {status} for id {schema_id}", kind="server")
        try:
            body = response.json()
            text = body["schema"]
            schema_type = body.get("schemaType", "AVRO")
            if not isinstance(text, str):
                raise TypeError("`schema` is not a string")
        except Exception as exc:  # a proxy's error page answering 200: the registry's trouble, not the record's
            raise RegistryError(f"schema registry answered 200 without a schema for id {schema_id} "
                                f"({type(exc).__name__}); is SCHEMA_REGISTRY_URL the registry?", kind="server") from exc
        if schema_type != "AVRO":
            raise UnsupportedSchemaError(f"schema id {schema_id} is {str(schema_type)[:32]}, not Avro")
        try:
            return parse_writer_schema(text)
        except UnsupportedSchemaError as exc:
            raise UnsupportedSchemaError(f"schema id {schema_id}: {exc}") from exc

    def close(self) -> None:
        self.http.close()


class RegistryDecoder:
    """Confluent wire format; the writer schema comes from the registry by id, cached.

    With a reader schema (AVRO_SCHEMA_FILE) records are resolved into it, so producers can
    evolve their schema (add fields with defaults, drop fields) without breaking the mapping.
    """

    def __init__(self, registry: RegistryClient, reader_schema: Any | None = None,
                 clock: Callable[[], float] = time.monotonic, reads: Collection[tuple[str, ...]] | None = None,
                 mapper: Any = None) -> None:
        self.registry = registry
        self.reader_schema = reader_schema
        self.reads = reads
        self.mapper = mapper
        # Schema id -> its native reader (consumer/ingest/fused.py), for the ids loaded without a
        # resolution whose schema and mapping it takes; bounded as `_readers`.
        self._fused: dict[int, FusedReader] = {}
        self.clock = clock
        # Schema id -> the reader of its records (the writer schema resolved into the reader schema),
        # at most MAX_SCHEMA_READERS, the first loaded evicted first (`_remember`). Decode runs per
        # record, so a hit stays one plain dict's `get`: an OrderedDict's costs about 15 ns more, a
        # move to the end (an LRU) more again. A hot id evicted is loaded again, once.
        self._readers: dict[int, Reader] = {}
        # Ids the registry said do not exist, until when not to ask again (oldest first).
        self._unknown: OrderedDict[int, float] = OrderedDict()
        # Ids whose schema is refused for good (not Avro, recursive, ...), with the reason.
        self._unsupported: OrderedDict[int, str] = OrderedDict()
        self._tokens = float(REGISTRY_BURST)
        self._tokens_at = clock()
        self._lock = threading.Lock()

    def decode(self, value: bytes) -> Mapping[str, Any]:
        if len(value) < _HEADER.size:
            raise DecodeError("shorter than the 5-byte Confluent wire format header")
        magic, schema_id = _HEADER.unpack_from(value)
        if magic != MAGIC_BYTE:
            raise DecodeError(f"not Confluent wire format (first byte {magic}, expected 0)")
        read = self._readers.get(schema_id)
        if read is None:
            read = self._fetch(schema_id)
        return _read(value, _HEADER.size, read)

    def recipient(self, value: bytes) -> Recipient | None:
        """The record decoded and mapped natively, if its schema id is loaded and planned; None:
        `decode` it (which loads the id), then map it."""
        if len(value) < _HEADER.size or value[0] != MAGIC_BYTE:
            return None
        fused = self._fused.get(_HEADER.unpack_from(value)[1])
        return None if fused is None else fused(value, _HEADER.size)

    def _fetch(self, schema_id: int) -> Reader:
        with self._lock:
            # Another thread may have loaded it while this one waited for the lock.
            read = self._readers.get(schema_id)
            if read is not None:
                return read
            now = self.clock()
            refused = self._unsupported.get(schema_id)
            if refused is not None:
                raise UnsupportedSchemaError(refused)
            until = self._unknown.get(schema_id)
            if until is not None and now < until:
                raise DecodeError(f"schema id {schema_id} is not in the registry")
            self._spend_token(now)
            try:
                writer = self.registry.schema(schema_id)
                try:
                    read = reader_for(writer, self.reader_schema, self.reads)
                except Exception as exc:  # a checked schema fastavro still cannot take: refused as well
                    raise UnsupportedSchemaError(cut(f"schema id {schema_id}: no reader for it "
                                                     f"({type(exc).__name__}: {exc})", 300)) from exc
            except UnknownSchemaError:
                _remember(self._unknown, schema_id, now + UNKNOWN_ID_TTL_S)
                raise
            except UnsupportedSchemaError as exc:
                _remember(self._unsupported, schema_id, str(exc))
                log.warning("%s; its records are dead-lettered as unsupported_schema", exc)
                raise
            self._unknown.pop(schema_id, None)
            _remember(self._readers, schema_id, read, MAX_SCHEMA_READERS)
            # A native reader goes with its id's reader: an id evicted is asked of the registry
            # again on both paths, never answered natively from a plan kept longer.
            for evicted in [known for known in self._fused if known not in self._readers]:
                del self._fused[evicted]
            if self.mapper is not None and (not self.reader_schema or self.reader_schema == writer):
                fused = fused_reader(writer, self.mapper, reader_for)
                if fused is not None:
                    _remember(self._fused, schema_id, fused, MAX_SCHEMA_READERS)
            log.info("schema id %d loaded from the registry", schema_id)
            return read

    def _spend_token(self, now: float) -> None:
        self._tokens = min(float(REGISTRY_BURST), self._tokens + (now - self._tokens_at) * REGISTRY_REQUESTS_PER_S)
        self._tokens_at = now
        if self._tokens < 1:
            wait = (1 - self._tokens) / REGISTRY_REQUESTS_PER_S
            raise RegistryError(f"more than {REGISTRY_REQUESTS_PER_S:.0f} registry requests per second; waiting",
                                kind="busy", retry_after_s=wait)
        self._tokens -= 1


def _remember(cache: dict[int, Any], schema_id: int, value: Any, limit: int = MAX_REMEMBERED_IDS) -> None:
    """`value` for `schema_id`, the newest entry of `cache`; past `limit` entries, the oldest go.
    A dict (an OrderedDict too) iterates in insertion order: the first key is the oldest."""
    cache.pop(schema_id, None)  # inserted again: the newest
    cache[schema_id] = value
    while len(cache) > limit:
        del cache[next(iter(cache))]


def build_decoder(registry: RegistryConnection | None, schema_file: Path | None,
                  reads: Collection[tuple[str, ...]] | None = None, mapper: Any = None) -> Decoder:
    """Confluent framing through the registry (its URL without credentials, basic auth, TLS from
    consumer/config/registry.py), or plain Avro with the schema file; `reads` as in `reader_for`;
    `mapper`: the mapper the native core may map for (consumer/ingest/fused.py), None for none."""
    if registry is not None:
        reader = load_schema_file(schema_file) if schema_file else None
        return RegistryDecoder(RegistryClient(registry.url, verify=registry.verify, auth=registry.auth), reader,
                               reads=reads, mapper=mapper)
    return SchemalessDecoder(load_schema_file(schema_file or default_schema_file()), reads, mapper)
