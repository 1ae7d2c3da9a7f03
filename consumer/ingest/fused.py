"""Decode and map a record in one native pass (native/, Rust): the poll loop's per-record core.

Decoding builds a dict of the record and mapping walks it; for the common case (the declarative
mapping's plain dotted paths, a phone already in E.164) both are a few microseconds of Python per
record, the larger part of the consumer's CPU (issue 14). `fused_reader` plans, once per writer
schema, a native reader that decodes the Avro and fills the mapping's fields straight from the
bytes, and builds the Recipient.

What it promises (tests/unit/ingest/test_fused.py holds it to this against the Python path):
- A Recipient it returns is the one the Python decoder and `DeclarativeMapper` give for the same
  bytes. Anything else it answers None, and the record is decoded and mapped in Python as before:
  bytes Python might read differently or refuse (the native reader is stricter, never looser:
  native/src/avro.rs), a phone that needs the parser (not E.164, or a calling code several regions
  share), a value the mapping converts (a float, a timestamp, a nested record), an event id or a
  campaign Python would refuse. So every error message, dead-letter reason and metric stays
  Python's, and the recipient check (consumer/ingest/intake.py) still runs on what it returns.
- It plans only for what it takes whole: the declarative mapper itself (not a subclass), dotted
  paths only (no `$kafka.*`, no JMESPath), string attributes, `campaign_id` (no route table), no
  `event_time`, an E.164 phone format; a schema without resolution into a reader schema, whose
  logical types are the timestamps, dates and times (their valid range found from Python's own
  reader at plan time), with no record naming a field twice and no fixed whose size is not a
  count. Otherwise, or if planning fails at all, `fused_reader` answers None, says why once in the
  log, and every record goes through Python. tests/unit/ingest/test_fused_differential.py fuzzes
  the two paths against each other (schemas, mappings, bytes).
- A map key written twice counts as in Python's dict: the last value (native/src/avro.rs).
- A panic in the native core answers None (caught in Rust): PyO3 would raise a BaseException the
  intake does not catch.
- `NATIVE_INTAKE=off` turns it off; without the native module built it is off (said at start-up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from consumer.ingest.mapping import DeclarativeMapper, Recipient, _attribute, _dotted_steps
from consumer.ingest.phones import _COUNTRY_CODES, validity_rule

try:  # built by `make install` (native/); the consumer works without it, slower
    import pisano_native as _native
except ImportError:  # pragma: no cover - depends on the build
    _native = None  # type: ignore[assignment]
pisano_native = _native

log = logging.getLogger(__name__)

FusedReader = Callable[[bytes, int], Recipient | None]  # (payload, offset) -> Recipient, or None: Python's turn
MAX_PLAN_NODES = 20_000  # a schema reusing named types at every level expands past this: Python reads it
_PLAN_KEYS = {"event_id", "phone", "phone_region", "phone_format", "phone_foreign", "campaign_id",
              "custom_attributes", "built_in_responses", "time_zone"}
_PRIMITIVE_NODES = {"null": ("null",), "boolean": ("boolean",), "float": ("float",), "double": ("double",),
                    "bytes": ("bytes",), "string": ("string",)}
_INT64 = (-(2**63), 2**63 - 1)
# Logical types whose converted value is a range of the raw integer: the rest (decimal, uuid)
# convert bytes or text, and a schema holding one is read by Python.
_RANGED_LOGICAL = {"int-date", "int-time-millis", "long-time-micros", "long-timestamp-millis",
                   "long-timestamp-micros", "long-local-timestamp-millis", "long-local-timestamp-micros"}
# The valid range of each logical type, by (Python's reader, "type-logicalType"): found once per
# process (a few milliseconds for all of them), not for every schema id the registry serves.
_RANGES: dict[tuple[Callable[[Any], Any], str], tuple[int, int]] = {}


_PLAN_FAILED = "the native core could not be planned"


class Unplanned(Exception):
    """What the native core does not take whole: every record goes through Python."""


def available() -> bool:
    return pisano_native is not None


def records_mapped() -> int:
    """Records the native core has decoded and mapped in this process, every plan together."""
    return 0 if pisano_native is None else pisano_native.records_mapped()


def fused_reader(writer: Any, mapper: Any, reader_of: Callable[[Any], Any]) -> FusedReader | None:
    """The native reader of records written with `writer` and mapped by `mapper`, or None (the
    reason logged) when the native core cannot take them. `reader_of(schema)`: the Python reader
    of a schema (consumer/ingest/avro.py's `reader_for`), asked for the range of each logical type."""
    fused, reason = _planned(writer, mapper, reader_of)
    if fused is None:
        if reason is not None:  # a failure of the planner itself is worth a warning: it was not foreseen
            log.log(logging.WARNING if reason.startswith(_PLAN_FAILED) else logging.INFO,
                    "records decoded and mapped in Python, not natively: %s", reason)
        return None
    log.info("records decoded and mapped natively where the native core takes them (pisano_native %s)",
             pisano_native.__version__)
    recipient: FusedReader = fused.recipient
    return recipient


def why_not(writer: Any, mapper: Any, reader_of: Callable[[Any], Any]) -> str | None:
    """Why the records of `writer` mapped by `mapper` go through Python, not the native core; None
    if the native core takes them (`pisano-sms check` says which)."""
    if pisano_native is None:
        return "the native core (pisano_native) is not installed; `make install` builds it"
    return _planned(writer, mapper, reader_of)[1]


def why_not_mapping(mapper: Any) -> str | None:
    """Why no record mapped by `mapper` goes through the native core, whatever its schema (a
    registry's schemas are known only when their records come); None if some may."""
    if pisano_native is None:
        return "the native core (pisano_native) is not installed; `make install` builds it"
    try:
        _mapping_paths(mapper)
    except Unplanned as exc:
        return str(exc)
    return None


def _planned(writer: Any, mapper: Any, reader_of: Callable[[Any], Any]) -> tuple[Any, str | None]:
    """(the native core's plan, None), or (None, why not); (None, None) without the module."""
    if pisano_native is None:
        return None, None
    try:
        paths = _mapping_paths(mapper)
        slots: dict[tuple[str, ...], int] = {}
        for steps in paths.values():
            slots.setdefault(steps, len(slots))
        for _, steps in (*paths.custom, *paths.built_in):
            slots.setdefault(steps, len(slots))
        plan = _Planner(writer, list(slots.items()), reader_of)
        return pisano_native.Fused(
            plan.root, plan.symbols, len(slots), (slots[paths.event_id], slots[paths.phone], slots[paths.campaign]),
            [(name, slots[steps]) for name, steps in paths.custom],
            [(name, slots[steps]) for name, steps in paths.built_in],
            mapper.phones.output == "e164_digits", list(_COUNTRY_CODES), validity_rule, Recipient), None
    except Unplanned as exc:
        return None, str(exc)
    except Exception as exc:  # a schema the planner did not foresee: its records are Python's, never its failure
        return None, f"{_PLAN_FAILED} ({type(exc).__name__}: {str(exc)[:200]})"


class _Paths:
    def __init__(self, event_id: tuple[str, ...], phone: tuple[str, ...], campaign: tuple[str, ...],
                 custom: list[tuple[str, tuple[str, ...]]], built_in: list[tuple[str, tuple[str, ...]]]) -> None:
        self.event_id, self.phone, self.campaign = event_id, phone, campaign
        self.custom, self.built_in = custom, built_in

    def values(self) -> tuple[tuple[str, ...], ...]:
        return self.event_id, self.phone, self.campaign


def _mapping_paths(mapper: Any) -> _Paths:
    if type(mapper) is not DeclarativeMapper:  # a subclass or a plug-in may map in code of its own
        raise Unplanned(f"the mapper is {type(mapper).__name__}, not the declarative mapping")
    spec = mapper.spec
    other = sorted(set(spec) - _PLAN_KEYS)
    if other:
        raise Unplanned(f"the mapping uses {', '.join(other)}")
    if mapper.phones.output not in ("e164", "e164_digits"):
        raise Unplanned(f"phone_format {mapper.phones.output}")
    if not spec.get("campaign_id"):
        raise Unplanned("the mapping has no campaign_id path")

    def steps(key: str, expression: Any) -> tuple[str, ...]:
        found = _dotted_steps(expression) if isinstance(expression, str) else None
        if found is None:
            raise Unplanned(f"{key} is not a plain dotted path")
        return found

    def attributes(key: str) -> list[tuple[str, tuple[str, ...]]]:
        out = []
        for name, value in (spec.get(key) or {}).items():
            path, kind = _attribute(key, name, value)
            if kind != "string":
                raise Unplanned(f"{key}.{name} is typed {kind}")
            out.append((str(name), steps(f"{key}.{name}", path)))
        return out

    return _Paths(steps("event_id", spec["event_id"]), steps("phone", spec["phone"]),
                  steps("campaign_id", spec["campaign_id"]), attributes("custom_attributes"),
                  attributes("built_in_responses"))


Slots = list[tuple[tuple[str, ...], int]]  # (the steps left to the value, the slot it fills)


class _Planner:
    """The writer schema (fastavro's parsed form) as plan nodes, `(kind, slots, *arguments)`,
    expanded at each place a type is used with the mapping paths that go through it."""

    def __init__(self, writer: Any, paths: Slots, reader_of: Callable[[Any], Any]) -> None:
        from consumer.ingest.avro import _named_types  # avro imports this module

        self.named = _named_types(writer)
        self.reader_of = reader_of
        self.symbols: list[str] = []
        # Where each enum's symbols start in `symbols`, by the enum's schema: an enum used at many
        # places (a named type reused through records reused) lists its symbols once, not per use.
        self._enums: dict[int, tuple[Any, int]] = {}
        self.nodes = 0
        # Counted before it is expanded: a few KB of named types each used twice by the next
        # expand past the bound, and expanding up to it took 40 times as long as Python's reader.
        if self.size(writer, {}, ()) > MAX_PLAN_NODES:
            raise Unplanned(f"the schema expands past {MAX_PLAN_NODES} nodes")
        self.root = self.node(writer, paths)
        if self.root[0] != "record":
            raise Unplanned("the schema's top level is not a record")

    def size(self, schema: Any, sizes: dict[str, int], defining: tuple[str, ...]) -> int:
        """The nodes `node` makes of `schema` at most (a map's values twice: the values no path
        names, and one key's a path names), each named type measured once (`sizes`)."""
        if isinstance(schema, list):
            return 1 + sum(self.size(branch, sizes, defining) for branch in schema)
        if isinstance(schema, str):
            if schema not in self.named:
                return 1
            if schema not in sizes:
                if schema in defining:
                    raise Unplanned(f"the schema is recursive ({schema[:64]!r})")
                sizes[schema] = self.size(self.named[schema], sizes, (*defining, schema))
            return sizes[schema]
        if not isinstance(schema, dict):
            return 1
        kind, name = schema.get("type"), schema.get("name")
        if kind in ("record", "error"):
            inner = (*defining, name) if isinstance(name, str) else defining
            found = 1 + sum(self.size(field.get("type"), sizes, inner) for field in schema.get("fields", ())
                            if isinstance(field, dict))
            if isinstance(name, str):
                sizes.setdefault(name, found)
            return found
        if kind == "array":
            return 1 + self.size(schema.get("items"), sizes, defining)
        if kind == "map":
            return 1 + 2 * self.size(schema.get("values"), sizes, defining)
        if isinstance(kind, (list, dict)) or (isinstance(kind, str) and kind in self.named):
            return self.size(kind, sizes, defining)
        return 1

    def node(self, schema: Any, paths: Slots) -> tuple[Any, ...]:
        self.nodes += 1
        if self.nodes > MAX_PLAN_NODES:
            raise Unplanned(f"the schema expands past {MAX_PLAN_NODES} nodes")
        here = [slot for steps, slot in paths if not steps]
        if isinstance(schema, list):
            return ("union", [], [self.node(branch, paths) for branch in schema])
        if isinstance(schema, str):
            if schema in _PRIMITIVE_NODES:
                return (_PRIMITIVE_NODES[schema][0], here)
            if schema in ("int", "long"):
                return ("long", here, *_INT64, False)
            if schema not in self.named:
                raise Unplanned(f"the schema names a type it does not define ({schema[:64]!r})")
            return self.node(self.named[schema], paths)
        if not isinstance(schema, dict):
            raise Unplanned("the schema holds a node that is not a type")
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if isinstance(kind, str) and logical is not None:
            return self.logical(kind, logical, here, paths)
        if kind in ("record", "error"):
            names = [field["name"] for field in schema["fields"]]
            if len(set(names)) != len(names):  # fastavro reads it, its dict keeping the last field's value
                raise Unplanned(f"record {str(schema.get('name'))[:64]!r} names a field twice")
            fields = [self.node(field["type"], [(steps[1:], slot) for steps, slot in paths
                                                if steps and steps[0] == field["name"]])
                      for field in schema["fields"]]
            return ("record", here, fields)
        if kind == "enum":
            known = self._enums.get(id(schema))
            if known is None:  # the schema is kept beside its id: the id stays its own while planning
                known = self._enums[id(schema)] = (schema, len(self.symbols))
                self.symbols.extend(str(symbol) for symbol in schema["symbols"])
            return ("enum", here, known[1], len(schema["symbols"]))
        if kind == "fixed":
            size = schema["size"]
            if type(size) is not int or size < 0:  # fastavro reads 2.0 as no size and -1 as all the rest
                raise Unplanned(f"a fixed of size {str(size)[:32]}")
            return ("fixed", here, size)
        if kind == "array":
            return ("array", here, self.node(schema["items"], []))
        if kind == "map":
            keys = sorted({steps[0] for steps, _ in paths if steps})
            keyed = [(key, self.node(schema["values"], [(steps[1:], slot) for steps, slot in paths
                                                          if steps and steps[0] == key])) for key in keys]
            return ("map", here, self.node(schema["values"], []), keyed)
        if isinstance(kind, (str, list, dict)):
            return self.node(kind, paths)
        raise Unplanned("the schema holds a node of no known type")

    def logical(self, kind: str, logical: Any, here: list[int], paths: Slots) -> tuple[Any, ...]:
        from fastavro.read import LOGICAL_READERS

        key = f"{kind}-{logical}"
        if key not in LOGICAL_READERS:  # fastavro reads it as the plain type
            return self.node(kind, paths)
        if key not in _RANGED_LOGICAL:
            raise Unplanned(f"the schema has a {logical} logical type")
        found = _RANGES.get((self.reader_of, key))
        if found is None:
            found = self.valid_range(kind, logical)
            if len(_RANGES) >= 64:  # one reader of schemas in production; tests bring others
                _RANGES.clear()
            _RANGES[self.reader_of, key] = found
        return ("long", here, *found, True)

    def valid_range(self, kind: str, logical: str) -> tuple[int, int]:
        """The raw values Python's reader converts for this logical type, found by bisection from
        0 and checked around its bounds: each converter is monotonic, its errors past a calendar's
        or a clock's ends."""
        import fastavro

        from consumer.outcomes.receipts import avro_long

        schema = fastavro.parse_schema({"type": "record", "name": "Probe", "fields": [
            {"name": "v", "type": {"type": kind, "logicalType": logical}}]})
        read = self.reader_of(schema)

        def converts(value: int) -> bool:
            try:
                read(avro_long(value), 0)
            except Exception:
                return False
            return True

        def bound(inside: int, outside: int) -> int:
            while abs(outside - inside) > 1:
                middle = (inside + outside) // 2
                inside, outside = (middle, outside) if converts(middle) else (inside, middle)
            return inside

        if not converts(0):
            raise Unplanned(f"the {logical} logical type does not convert 0")
        lo = _INT64[0] if converts(_INT64[0]) else bound(0, _INT64[0])
        hi = _INT64[1] if converts(_INT64[1]) else bound(0, _INT64[1])
        samples = [lo, hi, lo // 2, hi // 2, lo + 1, hi - 1]
        if not all(converts(value) for value in samples) or \
                any(converts(value) for value in (lo - 1, hi + 1) if _INT64[0] <= value <= _INT64[1]):
            raise Unplanned(f"the {logical} logical type converts no single range of values")
        return lo, hi

