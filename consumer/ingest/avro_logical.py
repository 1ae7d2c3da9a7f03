"""Avro logical types: what bounds their conversion (a record's bytes must not buy minutes of CPU).

fastavro converts a logical type after reading its underlying value, with the converter in
`fastavro.read.LOGICAL_READERS`; the compiled reader (avro_compiled.py) calls the same converters.
All but one take constant time on what a record can hold: date, time-millis, time-micros and the
timestamps read a 64-bit varint (datetime arithmetic, or an OverflowError); uuid is `UUID(text)`,
linear in the text. The exception is decimal (bytes or fixed): `int.from_bytes`, then an int to
Decimal conversion that is quadratic in the byte count (100 KB: 0.9 s, 1 MB: 86 s, holding the
GIL: the poll loop and the health probes stop, the pod is killed before it dead-letters the record).

So a decimal's conversion is bounded twice:
- by the schema (`check_decimal`, from avro.check_schema): precision a whole number from 1 to
  MAX_DECIMAL_PRECISION, scale from 0 to the precision (the Avro spec's rule; fastavro lets a
  precision of 0, a missing one, or a scale above the precision through);
- by the value (`bounded_decimal`): the Avro spec says the unscaled value fits its precision, so
  more significant bytes than `precision` digits take are refused before the conversion runs. The
  count ignores sign-extension bytes (a fixed is as wide as its size, whatever the value), and the
  scan that skips them is linear.

`install()` puts the bounded converter in fastavro's table itself: fastavro reads through that
table (schemas it reads, resolution into a reader schema), and the compiled reader looks its
converters up there, so the two raise the same error with the same message. Only the readers
are changed: fastavro's writers (samples, tests) keep their own table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import fastavro

# PostgreSQL's largest declared NUMERIC precision (Debezium carries it into the Avro schema);
# SQL Server's and Oracle's are 38, BigQuery's BIGNUMERIC 76. A decimal of 1000 digits takes
# 416 bytes and about 30 us to convert; the conversion's cost grows with the square of its size.
MAX_DECIMAL_PRECISION = 1000
DECIMAL_KEYS = ("bytes-decimal", "fixed-decimal")

Converter = Callable[[Any, Any, Any], Any]


class LogicalTypeError(ValueError):
    """A schema's logical type cannot be read within bounds (the caller refuses the schema)."""


def check_decimal(node: Mapping[str, Any]) -> None:
    """Raise LogicalTypeError unless this decimal's precision and scale are within the Avro spec
    and MAX_DECIMAL_PRECISION (module docstring)."""
    precision, scale = node.get("precision"), node.get("scale", 0)
    if type(precision) is not int or not 1 <= precision <= MAX_DECIMAL_PRECISION:
        raise LogicalTypeError(f"a decimal's precision must be a whole number from 1 to {MAX_DECIMAL_PRECISION}, "
                               f"not {str(precision)[:32]}")
    if type(scale) is not int or not 0 <= scale <= precision:
        raise LogicalTypeError(f"a decimal's scale must be a whole number from 0 to its precision {precision}, "
                               f"not {str(scale)[:32]}")


@lru_cache(maxsize=MAX_DECIMAL_PRECISION)
def decimal_bytes(precision: int) -> int:
    """The bytes of the two's-complement form of any unscaled value of `precision` digits:
    ceil((precision * log2(10) + 1) / 8), computed exactly."""
    largest: int = 10**precision - 1
    return (largest.bit_length() + 1 + 7) // 8


def significant_bytes(data: bytes) -> int:
    """The length of the shortest two's-complement form of the number `data` holds (big-endian),
    without converting it: sign-extension bytes skipped (linear, C speed)."""
    if not data:
        return 0
    negative = data[0] >= 0x80
    rest = data.lstrip(b"\xff" if negative else b"\x00")
    if not rest:
        return 1
    return len(rest) + ((rest[0] >= 0x80) != negative)  # a sign byte back if the top bit says otherwise


def bounded_decimal(convert: Converter) -> Converter:
    """`convert` (fastavro's decimal converter), refusing a value larger than its precision
    allows before converting it (module docstring)."""
    if getattr(convert, "bounded", False):
        return convert

    def read_decimal(data: Any, writer_schema: Any = None, reader_schema: Any = None) -> Any:
        precision = writer_schema.get("precision") if isinstance(writer_schema, Mapping) else None
        if type(precision) is not int or not 1 <= precision <= MAX_DECIMAL_PRECISION:
            raise ValueError(f"a decimal of precision {str(precision)[:32]} is not read")
        limit = decimal_bytes(precision)
        if len(data) > limit:
            size = significant_bytes(data)
            if size > limit:
                raise ValueError(f"a decimal of {size} significant bytes does not fit its precision of "
                                 f"{precision} digits (at most {limit} bytes)")
        return convert(data, writer_schema, reader_schema)

    read_decimal.bounded = True  # type: ignore[attr-defined]
    return read_decimal


def install() -> None:
    """Bound fastavro's decimal converters where fastavro and the compiled reader find them
    (idempotent)."""
    table = fastavro.read.LOGICAL_READERS
    for key in DECIMAL_KEYS:
        if key in table:
            table[key] = bounded_decimal(table[key])


install()
