"""A record reader generated for one Avro writer schema (issue 14: decode once, cheaply).

fastavro dispatches on the type of every field of every record and reads through a file object:
about 5 us a record of the default schema, a third of the poll loop. `compile_reader` walks a
parsed schema once and generates Python source for a reader of exactly that schema: straight-line
code per field, the one-byte varint inline, dicts built directly, reading `(payload, offset)` and
returning `(value, end)`, so no BytesIO per record. Compiled once per schema.

What it promises (tests/unit/ingest/test_avro_compiled.py checks it against fastavro):
- A value it returns is what fastavro returns for the same bytes, with the same bytes used.
  Logical types go through fastavro's own converters (`fastavro.read.LOGICAL_READERS`, looked up
  when the reader is compiled), called as fastavro calls them; the four timestamps, where that
  table holds the converter fastavro ships, are its same sum written inline (`_INLINE_TIMESTAMPS`).
  A decimal's converter is bounded first (avro_logical.py: no more bytes than its precision needs),
  in fastavro's table as here, so both refuse an oversized decimal with the same error.
- Where fastavro raises, it raises: EOFError when the bytes end early, ValueError otherwise (or
  what a logical converter raises). It is stricter on three invalid inputs fastavro reads anyway:
  a negative union or enum index (fastavro indexes its list from the end), a varint longer than
  10 bytes (fastavro's 64-bit shift overflows into an arbitrary value) and a block count of
  -2**63 (fastavro negates it into the same negative count and reads no item).
- A block count larger than the bytes left fails at once: every item takes at least a byte
  (avro.check_schema refuses arrays of items that take none; map keys are strings), so a few
  bytes claiming 2**60 items cannot loop.
- Given the record paths a mapping reads (`compile_reader(writer, reads)`), the fields on none of
  them are left out of their records, but read and checked all the same: what a path finds, the
  bytes used and the errors are those of the whole reader (tests hold it to that).
- Nothing from the schema becomes code: names, symbols, sizes and converters are arguments of
  the generated factory; the source holds only identifiers and numbers generated here, so a
  hostile registry schema cannot inject code.

A schema it does not handle (recursive, too deep, odd sizes) raises Unsupported; the caller keeps
fastavro for it.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro

from consumer.ingest.avro_logical import DECIMAL_KEYS, bounded_decimal

CompiledReader = Callable[[bytes, int], tuple[Any, int]]

MAX_DEPTH = 64  # avro.check_schema allows 32 levels; deeper is not ours to read
MAX_UNION_BRANCHES = 100  # a chain of `elif`s; longer ones stay with fastavro
MAX_LINES = 30_000  # about 0.5 s to compile; a schema of thousands of fields would stall the poll loop longer
_HELPER_INDENT = 12  # deeper code goes into its own function: Python nests at most 20 loops, 100 indents
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_MASK64 = (1 << 64) - 1


class Unsupported(Exception):
    """This schema is read by fastavro instead."""


def _long(b: bytes, p: int) -> tuple[int, int]:
    """A zigzag varint at p (the multi-byte case; the generated code inlines one byte)."""
    c = b[p]
    p += 1
    n = c & 0x7F
    shift = 7
    while c & 0x80:
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
        c = b[p]
        p += 1
        n |= (c & 0x7F) << shift
        shift += 7
    n &= _MASK64  # as fastavro's unsigned 64-bit accumulator, read as signed
    return (n >> 1) ^ -(n & 1), p


def _size(b: bytes, p: int) -> tuple[int, int]:
    """A length of bytes or a string (the case the generated code does not inline)."""
    n, p = _long(b, p)
    if n < 0:
        raise ValueError(f"negative length {n}")
    return n, p


_RUNTIME = {"_long": _long, "_size": _size, "_float": struct.Struct("<f").unpack_from,
            "_double": struct.Struct("<d").unpack_from, "_StructError": struct.error, "_timedelta": timedelta}

# fastavro's timestamp converters are `epoch + timedelta(microseconds=value [* 1000])`; the same
# sum is written inline (milliseconds as timedelta's fourth argument: exact for integers) where
# LOGICAL_READERS still holds the converter fastavro ships: (that converter, epoch, argument prefix).
_SHIPPED: Any = getattr(fastavro, "_logical_readers", None)
_INLINE_TIMESTAMPS: dict[str, tuple[Any, datetime, str]] = {
    key: (getattr(_SHIPPED, function, None), epoch, prefix) for key, function, epoch, prefix in (
        ("long-timestamp-millis", "read_timestamp_millis", datetime(1970, 1, 1, tzinfo=UTC), "0, "),
        ("long-local-timestamp-millis", "read_local_timestamp_millis", datetime(1970, 1, 1), "0, "),
        ("long-timestamp-micros", "read_timestamp_micros", datetime(1970, 1, 1, tzinfo=UTC), ""),
        ("long-local-timestamp-micros", "read_local_timestamp_micros", datetime(1970, 1, 1), ""))
    if getattr(_SHIPPED, function, None) is not None}


def compile_reader(writer: Any, reads: Collection[tuple[str, ...]] | None = None) -> CompiledReader:
    """A reader of one value of this writer schema (parsed or not): `read(payload, offset)` returns
    `(value, end)` or raises (module docstring).

    `reads`: the record paths the caller reads (field names from the top record down, as a
    mapping's dotted paths), or None for all. A record field on none of them is left out of its
    dict. It is still read and checked as it would be (the same bytes, the same errors: a record
    is dead-lettered or not whatever the mapping reads), but a timestamp left out is checked against
    datetime's range instead of converted: the conversion was a sixth of the default schema's
    read. Records inside arrays, maps and shared named types are read whole."""
    named: dict[str, Any] = {}
    parsed = fastavro.parse_schema(writer, named)
    gen = _Generator(named, None if reads is None else frozenset(map(tuple, reads)))
    gen.count_uses(parsed)
    body: list[str] = []
    value = gen.emit(parsed, body, 3, 0)
    if len(body) + sum(map(len, gen.helpers)) > MAX_LINES:
        if reads is not None:  # a field left out can take more lines: the whole reader may fit
            return compile_reader(writer)
        raise Unsupported(f"the reader would take over {MAX_LINES} lines")
    lines = [f"def _make({', '.join(gen.params)}):"]
    for helper in gen.helpers:
        lines += helper
    lines += ["    def read(b, p):",
              "        if b.__class__ is not bytes:",
              "            b = bytes(b)",
              "        L = len(b)",
              "        try:"]
    lines += body or ["            pass"]
    lines += ["        except (IndexError, _StructError):",
              "            raise EOFError('the value ends early') from None",
              f"        return {value}, p",
              "    return read"]
    namespace: dict[str, Any] = dict(_RUNTIME)
    exec(compile("\n".join(lines), "<avro reader>", "exec"), namespace)
    read: CompiledReader = namespace["_make"](*gen.args)
    return read


class _Generator:
    """Source lines reading each node; every value from the schema becomes a factory argument."""

    def __init__(self, named: dict[str, Any], scope: frozenset[tuple[str, ...]] | None = None) -> None:
        self.named = named
        # The paths still read below the record being generated (None: all of it), and whether
        # the value being generated is left out (read, checked, not kept).
        self.scope = scope
        self.dropping = False
        self.params: list[str] = []
        self.args: list[Any] = []
        self.helpers: list[list[str]] = []
        self.named_helpers: dict[str, str] = {}
        self.uses: Counter[str] = Counter()
        self.least: dict[str, int] = {}  # `min_bytes` of the named types measured so far
        self.defining: list[str] = []
        self.serial = 0

    def count_uses(self, node: Any) -> None:
        """How often each named type is used: one used twice is a helper function, not inlined
        twice (a DAG of references would otherwise grow the code exponentially)."""
        if isinstance(node, list):
            for branch in node:
                self.count_uses(branch)
        elif isinstance(node, str):
            if node not in PRIMITIVES:
                self.uses[node] += 1
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                self.uses[str(node.get("name"))] += 1
            if kind in ("record", "error"):
                for field in node.get("fields", ()):
                    self.count_uses(field.get("type") if isinstance(field, dict) else None)
            elif kind == "array":
                self.count_uses(node.get("items"))
            elif kind == "map":
                self.count_uses(node.get("values"))

    def const(self, value: Any) -> str:
        name = f"C{len(self.args)}"
        self.params.append(name)
        self.args.append(value)
        return name

    def var(self, prefix: str = "v") -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def emit(self, node: Any, out: list[str], indent: int, depth: int) -> str:
        """Append lines that read one value of `node` at `p` (advancing it); return the
        expression that holds the value afterwards."""
        if depth > MAX_DEPTH:
            raise Unsupported("the schema nests too deep")
        if isinstance(node, str):
            if node in PRIMITIVES:
                return self.primitive(node, out, indent)
            if node in self.defining:
                raise Unsupported(f"the schema is recursive ({node!r})")
            if node not in self.named:
                raise Unsupported("the schema names an undefined type")
            return self.named_type(node, self.named[node], out, indent, depth)
        if isinstance(node, list):
            if indent > _HELPER_INDENT:
                return self.call(self.helper(node, depth), out, indent)
            return self.union(node, out, indent, depth)
        if not isinstance(node, dict):
            raise Unsupported("the schema holds something that is not a type")
        kind = node.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = node.get("name")
            if not isinstance(name, str):
                raise Unsupported("a named type without a name")
            return self.named_type(name, node, out, indent, depth)
        if kind == "array" or kind == "map":
            if indent > _HELPER_INDENT:
                return self.call(self.helper(node, depth), out, indent)
            scope, self.scope = self.scope, None  # a dotted path does not index items: they are read whole
            try:
                value = (self.array(node, out, indent, depth) if kind == "array"
                         else self.map(node, out, indent, depth))
            finally:
                self.scope = scope
        elif isinstance(kind, str) and kind in PRIMITIVES:
            value = self.primitive(kind, out, indent)
        else:
            raise Unsupported("an unknown type")
        return self.logical(node, value, out, indent)

    def named_type(self, name: str, node: Any, out: list[str], indent: int, depth: int) -> str:
        if self.uses[name] > 1 or indent > _HELPER_INDENT:
            helper = self.named_helpers.get(name)
            if helper is None:
                helper = self.named_helpers[name] = self.helper(node, depth, name)
            return self.call(helper, out, indent)
        self.defining.append(name)
        try:
            return self.named_body(node, out, indent, depth)
        finally:
            self.defining.pop()

    def named_body(self, node: dict[str, Any], out: list[str], indent: int, depth: int) -> str:
        kind = node.get("type")
        pad = "    " * indent
        if kind in ("record", "error"):
            pairs = []
            scope, dropping = self.scope, self.dropping
            try:
                for field in node.get("fields", ()):  # read in order; the dict built once they all are
                    kept = self.enter(field["name"], scope, dropping)
                    value = self.emit(field["type"], out, indent, depth + 1)
                    if kept:
                        pairs.append(f"{self.const(field['name'])}: {value}")
            finally:
                self.scope, self.dropping = scope, dropping
            return self.logical(node, "{" + ", ".join(pairs) + "}", out, indent)
        if kind == "enum":
            symbols = tuple(node.get("symbols", ()))
            index = self.varint(out, indent)
            count = self.const(len(symbols))
            out.append(f"{pad}if {index} < 0 or {index} >= {count}:")
            out.append(f"{pad}    raise ValueError(f'enum index {{{index}}} out of range')")
            return self.logical(node, f"{self.const(symbols)}[{index}]", out, indent)
        if kind == "fixed":
            size = node.get("size")
            if type(size) is not int or size < 0:
                raise Unsupported("a fixed type whose size is not a count")
            value = self.var()
            out.append(f"{pad}e = p + {self.const(size)}")
            out.append(f"{pad}if e > L:")
            out.append(f"{pad}    raise EOFError('the value ends early')")
            out.append(f"{pad}{value} = b[p:e]")
            out.append(f"{pad}p = e")
            return self.logical(node, value, out, indent)
        raise Unsupported("an unknown named type")

    def enter(self, name: str, scope: frozenset[tuple[str, ...]] | None, dropping: bool) -> bool:
        """Set the scope of the record field `name` (in a record read with `scope`); whether the
        field is kept in the record's dict."""
        if scope is None or dropping:
            self.scope = None
            return True
        below = frozenset(path[1:] for path in scope if path and path[0] == name)
        self.scope = None if () in below else below or None
        self.dropping = not below
        return bool(below)

    def helper(self, node: Any, depth: int, name: str | None = None) -> str:
        """A function reading `node`, defined once in the factory: `f(b, p, L)` -> (value, p).
        It reads the whole value (it may be called where other paths are read)."""
        function = self.var("h")
        body: list[str] = []
        if name is not None:
            self.defining.append(name)
        scope, dropping = self.scope, self.dropping
        self.scope, self.dropping = None, False
        try:
            value = self.named_body(node, body, 2, depth) if name is not None else self.emit(node, body, 2, depth)
        finally:
            self.scope, self.dropping = scope, dropping
            if name is not None:
                self.defining.pop()
        self.helpers.append([f"    def {function}(b, p, L):", *body, f"        return {value}, p"])
        return function

    def call(self, function: str, out: list[str], indent: int) -> str:
        value = self.var()
        out.append(f"{'    ' * indent}{value}, p = {function}(b, p, L)")
        return value

    def primitive(self, kind: str, out: list[str], indent: int, into: str | None = None) -> str:
        pad = "    " * indent
        if kind == "null":
            return "None"
        if kind in ("int", "long"):
            return self.varint(out, indent, into)
        value = into or self.var()
        if kind == "boolean":
            out.append(f"{pad}{value} = b[p] != 0")
            out.append(f"{pad}p += 1")
        elif kind == "float":
            out.append(f"{pad}{value} = _float(b, p)[0]")
            out.append(f"{pad}p += 4")
        elif kind == "double":
            out.append(f"{pad}{value} = _double(b, p)[0]")
            out.append(f"{pad}p += 8")
        else:  # bytes, string: a length, then that many bytes
            out.append(f"{pad}c = b[p]")
            out.append(f"{pad}if c & 0x81:")  # several bytes, or negative
            out.append(f"{pad}    n, p = _size(b, p)")
            out.append(f"{pad}else:")
            out.append(f"{pad}    n = c >> 1")
            out.append(f"{pad}    p += 1")
            out.append(f"{pad}e = p + n")
            out.append(f"{pad}if e > L:")
            out.append(f"{pad}    raise EOFError('the value ends early')")
            out.append(f"{pad}{value} = b[p:e].decode()" if kind == "string" else f"{pad}{value} = b[p:e]")
            out.append(f"{pad}p = e")
        return value

    def varint(self, out: list[str], indent: int, into: str | None = None) -> str:
        pad = "    " * indent
        value = into or self.var()
        out.append(f"{pad}c = b[p]")
        out.append(f"{pad}if c & 0x80:")
        out.append(f"{pad}    {value}, p = _long(b, p)")
        out.append(f"{pad}else:")
        out.append(f"{pad}    {value} = (c >> 1) ^ -(c & 1)")
        out.append(f"{pad}    p += 1")
        return value

    def union(self, branches: list[Any], out: list[str], indent: int, depth: int) -> str:
        if not branches or len(branches) > MAX_UNION_BRANCHES:
            raise Unsupported("a union fastavro is left to read")
        pad = "    " * indent
        code, value = self.var("i"), self.var()
        # The branch index stays zigzag-coded (branch n is 2n): one byte is compared as it is.
        out.append(f"{pad}{code} = b[p]")
        out.append(f"{pad}if {code} & 0x80:")
        out.append(f"{pad}    {code}, p = _long(b, p)")
        out.append(f"{pad}    {code} = ({code} << 1) ^ ({code} >> 63)")
        out.append(f"{pad}else:")
        out.append(f"{pad}    p += 1")
        for number, branch in enumerate(branches):
            out.append(f"{pad}{'if' if number == 0 else 'elif'} {code} == {2 * number}:")
            if isinstance(branch, str) and branch in PRIMITIVES and branch != "null":
                self.primitive(branch, out, indent + 1, into=value)  # straight into the union's value
            else:
                out.append(f"{pad}    {value} = {self.emit(branch, out, indent + 1, depth + 1)}")
        out.append(f"{pad}else:")
        out.append(f"{pad}    raise ValueError(f'union index {{({code} >> 1) ^ -({code} & 1)}} out of range')")
        return value

    def blocks(self, out: list[str], indent: int, count: str, min_item_bytes: int) -> None:
        """The loop head of an array or a map: blocks of `count` items until a count of 0."""
        pad = "    " * indent
        out.append(f"{pad}while {count}:")
        out.append(f"{pad}    if {count} < 0:")  # a negative count is followed by the block's size, unused
        out.append(f"{pad}        {count} = -{count}")
        out.append(f"{pad}        _, p = _long(b, p)")
        if min_item_bytes:
            out.append(f"{pad}    if {count} > L - p:")
            out.append(f"{pad}        raise EOFError(f'a block of {{{count}}} items, {{L - p}} bytes left')")
        out.append(f"{pad}    for _ in range({count}):")

    def block_end(self, out: list[str], indent: int, count: str) -> None:
        inner: list[str] = []
        again = self.varint(inner, indent + 1)
        out += inner
        out.append(f"{'    ' * (indent + 1)}{count} = {again}")

    def array(self, node: dict[str, Any], out: list[str], indent: int, depth: int) -> str:
        pad = "    " * indent
        value = self.var()
        out.append(f"{pad}{value} = []")
        count = self.varint(out, indent)
        self.blocks(out, indent, count, min_bytes(node.get("items"), self.named, known=self.least))
        item = self.emit(node.get("items"), out, indent + 2, depth + 1)
        out.append(f"{pad}        {value}.append({item})")
        self.block_end(out, indent, count)
        return value

    def map(self, node: dict[str, Any], out: list[str], indent: int, depth: int) -> str:
        pad = "    " * indent
        value = self.var()
        out.append(f"{pad}{value} = {{}}")
        count = self.varint(out, indent)
        self.blocks(out, indent, count, 1)  # a key is a string: at least its length byte
        key = self.primitive("string", out, indent + 2)
        item = self.emit(node.get("values"), out, indent + 2, depth + 1)
        out.append(f"{pad}        {value}[{key}] = {item}")
        self.block_end(out, indent, count)
        return value

    def logical(self, node: Any, value: str, out: list[str], indent: int) -> str:
        """fastavro's conversion of a logical type, where it converts: a dict schema with a true
        `logicalType` whose "type-logicalType" is in LOGICAL_READERS, called (value, schema, None).
        Timestamps are converted inline, as fastavro's own converter does (a third faster)."""
        if not isinstance(node, dict) or not node.get("logicalType"):
            return value
        key = f"{node['type']}-{node['logicalType']}"
        convert = fastavro.read.LOGICAL_READERS.get(key)
        if convert is None:
            return value
        if key in DECIMAL_KEYS:  # bounded before it converts (avro_logical.py); already so in fastavro's table
            convert = bounded_decimal(convert)
        converted = self.var()
        pad = "    " * indent
        inline = _INLINE_TIMESTAMPS.get(key)
        if inline is not None and convert is inline[0]:
            conversion = f"{self.const(inline[1])} + _timedelta(0, 0, {inline[2]}{value})"
            if self.dropping:  # left out: converted only where the conversion raises, to raise as it does
                low, high = _timestamp_range(inline[1], inline[2])
                out.append(f"{pad}if not {self.const(low)} <= {value} <= {self.const(high)}:")
                out.append(f"{pad}    {conversion}")
                return value
            out.append(f"{pad}{converted} = {conversion}")
        else:
            out.append(f"{pad}{converted} = {self.const(convert)}({value}, {self.const(node)}, None)")
        return converted


def _timestamp_range(epoch: datetime, prefix: str) -> tuple[int, int]:
    """The numbers `epoch + timedelta(0, 0, <prefix>number)` converts without overflowing:
    datetime's range in milliseconds (prefix "0, ") or microseconds since `epoch`."""
    unit = timedelta(milliseconds=1) if prefix else timedelta(microseconds=1)
    first, last = datetime.min.replace(tzinfo=epoch.tzinfo), datetime.max.replace(tzinfo=epoch.tzinfo)
    return -((epoch - first) // unit), (last - epoch) // unit


def min_bytes(node: Any, named: Mapping[str, Any], seen: frozenset[str] = frozenset(),
              known: dict[str, int] | None = None) -> int:
    """0 if a value of this type can take no bytes, else 1: all that matters to the schema check
    (an array of such items is refused) and to the compiled reader (an item count is then bounded
    by the bytes left).

    `known`: the named types measured so far, by name (one walk of a schema shares it). A type
    used at several places is measured once: a chain of records each holding the previous one
    twice (once inline, once by name) is a few hundred bytes of JSON, and measured once per use it
    would take 2**levels steps, stalling the poll loop that fetched it from the registry."""
    known = {} if known is None else known
    if isinstance(node, str):
        if node in PRIMITIVES:
            return 0 if node == "null" else 1
        if node in seen or node not in named:
            return 1  # recursion and undefined names are refused by the schema check itself
        if node not in known:
            known[node] = min_bytes(named[node], named, seen | {node}, known)
        return known[node]
    if isinstance(node, list) or not isinstance(node, dict):
        return 1  # a union's branch index takes a byte
    kind = node.get("type")
    if kind in ("record", "error"):
        name = str(node.get("name"))
        if name in known:
            return known[name]
        found = min(1, sum(min_bytes(field.get("type"), named, seen | {name}, known)
                           for field in node.get("fields", ())))
        known[name] = found
        return found
    if kind == "fixed":  # a size that is not a whole number fails every read: counted as a byte
        size = node.get("size")
        return min(1, int(size)) if isinstance(size, int) else 1  # bool too: fastavro reads `false` as 0
    if isinstance(kind, str) and kind not in PRIMITIVES and kind not in ("array", "map", "enum"):
        return min_bytes(kind, named, seen, known)  # {"type": "SomeNamedType"}
    return 0 if kind == "null" else 1


_PROBE_SCHEMA = {"type": "record", "name": "Probe", "fields": [
    {"name": "s", "type": "string"}, {"name": "b", "type": "bytes"}, {"name": "i", "type": "int"},
    {"name": "l", "type": "long"}, {"name": "f", "type": "float"}, {"name": "d", "type": "double"},
    {"name": "t", "type": "boolean"}, {"name": "z", "type": "null"},
    {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
    {"name": "x", "type": {"type": "fixed", "name": "F", "size": 3}},
    {"name": "u", "type": ["null", "long", "string", "F"]},
    {"name": "m", "type": {"type": "map", "values": ["null", "E"]}},
    {"name": "a", "type": {"type": "array", "items": {"type": "record", "name": "R", "fields": [
        {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "lms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "lus", "type": {"type": "long", "logicalType": "local-timestamp-micros"}}]}}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}}]}
_PROBE_STAMPS = (0, -1, 1, 1764740000123, -62135596800000, 253402300799999, 2**40 + 7)
_PROBE_VALUE = {
    "s": "ğüş 📱", "b": b"\x00\xff", "i": -2**31, "l": 2**63 - 1, "f": 1.1, "d": -2.5e-300, "t": True, "z": None,
    "e": "B", "x": b"abc", "u": "text", "m": {"k": None, "j": "A", "": "B"},
    "a": [{"ms": n, "lms": n // 3, "us": n * 999, "lus": -n * 7} for n in _PROBE_STAMPS],
    "day": 20_000, "dec": b"\x01\x02", "id": "ae51458c-9e82-417f-8f1d-e074891ea5c1"}


def agrees_with_fastavro() -> bool:
    """Whether a reader compiled here reads a probe of every type exactly as the installed fastavro
    does (the same values, types and bytes used): if a future fastavro reads differently, the
    caller keeps fastavro rather than silently changing what records decode to."""
    import io  # only for the probe

    try:
        schema = fastavro.parse_schema(_PROBE_SCHEMA)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, _PROBE_VALUE)
        payload = b"\x07" + buffer.getvalue()
        expected = fastavro.schemaless_reader(io.BytesIO(payload[1:]), schema)
        value, end = compile_reader(schema)(payload, 1)
        return end == len(payload) and _same(value, expected)
    except Exception:  # another fastavro: its own reader it is
        return False


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (True is not 1, 1.0 is not 1, -0.0 is not 0.0,
    Decimal("1.0") is not Decimal("1.00"), an aware datetime keeps its zone)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and repr(a) == repr(b)
