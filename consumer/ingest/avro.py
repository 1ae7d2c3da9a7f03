"""Avro decoding: plain Avro with a local schema, or Confluent wire format via a schema registry.

Schemas are parsed once (the local one at start, registry ones the first time their id is
seen) and fastavro errors become DecodeError, so a record that does not decode is dead-lettered
instead of crashing the consumer or being retried forever. A registry that cannot be reached is
a RegistryError instead: the record is fine, the registry is not, so it is retried later.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import fastavro
import httpx

from consumer.config.resources import default_schema_file
from consumer.errors import ConfigError, DecodeError, RegistryError

log = logging.getLogger(__name__)

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")  # Confluent wire format: magic byte, 4-byte big-endian schema id
REGISTRY_TIMEOUT_S = 2.0  # asked from the poll loop: a hanging registry must not stall it for long


class UnknownSchemaError(DecodeError):
    """The registry says this schema id does not exist."""


class Decoder(Protocol):
    def decode(self, value: bytes) -> Mapping[str, Any]: ...


def load_schema_file(path: Path) -> Any:
    try:
        return fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"AVRO_SCHEMA_FILE={path}: cannot read it ({exc.strerror})") from exc
    except (ValueError, fastavro.schema.SchemaParseException) as exc:
        raise ConfigError(f"AVRO_SCHEMA_FILE={path}: not a valid Avro schema ({exc})") from exc


def _read(payload: bytes, offset: int, writer: Any, reader: Any) -> Mapping[str, Any]:
    buffer = io.BytesIO(payload)
    buffer.seek(offset)
    try:
        record = fastavro.schemaless_reader(buffer, writer, reader)
    except (EOFError, StopIteration) as exc:
        raise DecodeError("truncated Avro record") from exc
    except Exception as exc:  # fastavro raises bare ValueError, IndexError, UnicodeDecodeError...
        raise DecodeError(f"not Avro for this schema ({type(exc).__name__}: {exc})"[:300]) from exc
    if buffer.tell() != len(payload):
        # Random bytes often decode "successfully" as a prefix; a real record uses every byte.
        raise DecodeError(f"not Avro for this schema ({len(payload) - buffer.tell()} bytes left over)")
    if not isinstance(record, Mapping):
        raise DecodeError("the Avro value is not a record")
    return record


class SchemalessDecoder:
    """Plain Avro (no header), written with the one local schema."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema

    def decode(self, value: bytes) -> Mapping[str, Any]:
        return _read(value, 0, self.schema, None)


class RegistryClient:
    """The Confluent REST subset the decoder needs: `GET /schemas/ids/{id}`."""

    def __init__(self, url: str, *, verify: bool | str = True) -> None:
        self.http = httpx.Client(base_url=url, timeout=REGISTRY_TIMEOUT_S, verify=verify,
                                 headers={"Accept": "application/vnd.schemaregistry.v1+json"})

    def schema(self, schema_id: int) -> Any:
        try:
            response = self.http.get(f"/schemas/ids/{schema_id}")
        except httpx.HTTPError as exc:
            raise RegistryError(f"schema registry unreachable ({type(exc).__name__})") from exc
        if response.status_code == 404:
            raise UnknownSchemaError(f"schema id {schema_id} is not in the registry")
        if response.status_code != 200:
            raise RegistryError(f"schema registry answered HTTP {response.status_code} for id {schema_id}")
        try:
            body = response.json()
            if body.get("schemaType", "AVRO") != "AVRO":
                raise DecodeError(f"schema id {schema_id} is {body['schemaType']}, not Avro")
            return fastavro.parse_schema(json.loads(body["schema"]))
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"schema id {schema_id} is not a usable Avro schema ({exc})"[:300]) from exc

    def close(self) -> None:
        self.http.close()


class RegistryDecoder:
    """Confluent wire format; the writer schema comes from the registry by id, cached.

    With a reader schema (AVRO_SCHEMA_FILE) records are resolved into it, so producers can
    evolve their schema (add fields with defaults, drop fields) without breaking the mapping.
    """

    def __init__(self, registry: RegistryClient, reader_schema: Any | None = None) -> None:
        self.registry = registry
        self.reader_schema = reader_schema
        self._writers: dict[int, Any] = {}
        self._unknown: set[int] = set()  # ids the registry said do not exist: do not ask again
        self._lock = threading.Lock()

    def decode(self, value: bytes) -> Mapping[str, Any]:
        if len(value) < _HEADER.size:
            raise DecodeError("shorter than the 5-byte Confluent wire format header")
        magic, schema_id = _HEADER.unpack_from(value)
        if magic != MAGIC_BYTE:
            raise DecodeError(f"not Confluent wire format (first byte {magic}, expected 0)")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._fetch(schema_id)
        return _read(value, _HEADER.size, writer, self.reader_schema)

    def _fetch(self, schema_id: int) -> Any:
        with self._lock:
            if schema_id in self._unknown:
                raise DecodeError(f"schema id {schema_id} is not in the registry")
            try:
                writer = self.registry.schema(schema_id)
            except UnknownSchemaError:
                # Only the registry's own "no such id" is remembered; a schema that did not parse
                # (a proxy's error page answering 200, say) is asked for again next time.
                if len(self._unknown) < 10_000:  # garbage ids must not grow memory without bound
                    self._unknown.add(schema_id)
                raise
            self._writers[schema_id] = writer
            log.info("schema id %d loaded from the registry", schema_id)
            return writer


def build_decoder(registry_url: str | None, schema_file: Path | None) -> Decoder:
    if registry_url:
        reader = load_schema_file(schema_file) if schema_file else None
        return RegistryDecoder(RegistryClient(registry_url), reader)
    return SchemalessDecoder(load_schema_file(schema_file or default_schema_file()))
