"""Typed attributes: a mapping attribute may declare the type Pisano's customer schema gives it
(README, "Typed attributes"), and its value is converted to that type's one written form.

| type     | accepted values                                                  | sent as               |
|----------|------------------------------------------------------------------|-----------------------|
| string   | any scalar (the default; what a plain `name: path` means)        | as it is              |
| integer  | int, a whole float or decimal, a string of digits (sign allowed) | `42`                  |
| float    | int, float, decimal, a decimal string (`12.50`, `-1e3`)          | `12.5`, `12.50`       |
| boolean  | bool, 0/1, `true`/`false`/`1`/`0` in any case                    | `true`, `false`       |
| date     | an Avro `date`, a timestamp, `2024-09-17`                        | `2024-09-17`          |
| datetime | an Avro `timestamp-millis`/`-micros`, `2024-09-17 04:59:35` or ISO 8601 | `2024-09-17 04:59:35` |

Values go to Pisano as strings: the vendor's reference shows attribute values only as strings,
and Pisano's customer schema parses these forms. Timestamps with a zone (Avro timestamps are UTC)
are written in the mapping's `time_zone` (default UTC); a date of a timestamp is its date there.
A value that cannot be converted is never sent in a guessed form: the event is dead-lettered as
`invalid_event` naming the attribute. A missing value (null) leaves the attribute out, as before.
Converters are built once per attribute at load; the string type keeps the plain fast path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from consumer.errors import ConfigError, InvalidEventError

TYPES = ("string", "integer", "float", "boolean", "date", "datetime")
_INT_LIMIT = 2**63
MAX_DECIMAL_EXPONENT = 1024  # mapping.MAX_ATTRIBUTE_CHARS: a longer attribute is refused at intake anyway
# mapping.MAX_ATTRIBUTE_CHARS (not imported: the mapping imports this module): a float written
# longer is refused here as a float naming its attribute, not at intake as "not a JSON scalar".
MAX_WRITTEN_CHARS = 1024
_INTEGER = re.compile(r"^[+-]?[0-9]{1,19}\Z")
_DECIMAL = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?\Z")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})

Converter = Callable[[Any], str]


def time_zone(name: Any) -> tzinfo:
    if name is None or name == "UTC":
        return UTC
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"mapping time_zone: {name!r} is not an IANA time zone such as UTC or "
                          "Europe/Istanbul") from None


def converter(kind: str, zone: tzinfo, where: str) -> Converter:
    """The converter of a declared type; its errors name `where` (e.g. custom_attributes.amount)."""
    if kind == "integer":
        return lambda value: _integer(value, where)
    if kind == "float":
        return lambda value: _float(value, where)
    if kind == "boolean":
        return lambda value: _boolean(value, where)
    if kind == "date":
        return lambda value: _date(value, zone, where)
    if kind == "datetime":
        return lambda value: _datetime(value, zone, where)
    raise ConfigError(f"mapping {where}: type {kind!r} is not one of {', '.join(TYPES)}")


def _refuse(where: str, value: Any, kind: str) -> InvalidEventError:
    # The value itself is not shown: attributes may hold personal data (a name, an email).
    shown = type(value).__name__ if not isinstance(value, str) else f"a string of {len(value)} characters"
    return InvalidEventError(f"{where}: {shown} is not a valid {kind}")


def _integer(value: Any, where: str) -> str:
    if type(value) is int:
        number = value
    elif isinstance(value, bool):
        raise _refuse(where, value, "integer")
    elif _whole(value):
        number = int(value)
    elif isinstance(value, str) and _INTEGER.match(value.strip()):
        number = int(value.strip())
    else:
        raise _refuse(where, value, "integer")
    if not -_INT_LIMIT <= number < _INT_LIMIT:
        raise _refuse(where, value, "integer (64 bits)")
    return str(number)


def _whole(value: Any) -> bool:
    """An int subclass, or a float or decimal with nothing after the point (a decimal of more
    than 19 digits is not one: `int()` of 1e999999 takes seconds, and no 64-bit integer has them)."""
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    return (isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 19
            and value == value.to_integral_value())


def _float(value: Any, where: str) -> str:
    written = _float_written(value, where)
    if len(written) > MAX_WRITTEN_CHARS:  # a Decimal near MAX_DECIMAL_EXPONENT, a string of 1100 digits
        raise _refuse(where, value, f"float (at most {MAX_WRITTEN_CHARS} characters written)")
    return written


def _float_written(value: Any, where: str) -> str:
    if isinstance(value, bool):
        raise _refuse(where, value, "float")
    if isinstance(value, int):
        if not -_INT_LIMIT <= value < _INT_LIMIT:
            raise _refuse(where, value, "float")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse(where, value, "float")
        # Its shortest exact digits (repr's), written positionally as a decimal string is: repr
        # alone writes 1e16 as "1e+16", a second form of the type (at most some 330 characters).
        return format(Decimal(repr(value)), "f")
    if isinstance(value, Decimal):  # Avro decimal: its scale is kept (12.50 stays 12.50)
        # Written out, an exponent is that many characters (1e999999999: a gigabyte): one past
        # what an attribute may hold is refused before it is written.
        if not value.is_finite() or abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
            raise _refuse(where, value, "float")
        return format(value, "f")
    if isinstance(value, str) and _DECIMAL.match(value.strip()):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            raise _refuse(where, value, "float") from None
        return format(parsed, "f")
    raise _refuse(where, value, "float")


def _boolean(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) is int and value in (0, 1):
        return "true" if value else "false"
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return "true"
        if word in _FALSE:
            return "false"
    raise _refuse(where, value, "boolean")


def _moment(value: Any, zone: tzinfo) -> datetime | None:
    """A datetime in `zone` from a datetime or an ISO 8601 string; None if it is neither, or if
    it is not in datetime's range in `zone` (a time at its bounds moved by the zone's offset)."""
    moment = _parsed(value)
    if moment is None or moment.tzinfo is None:  # a naive time is taken as written, in the mapping's zone
        return moment
    try:
        return moment.astimezone(zone)  # an aware one is converted to it
    except OverflowError:
        return None


def _parsed(value: Any) -> datetime | None:
    """The datetime a value holds, as written (aware or naive); None if it holds none."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and 10 < len(value.strip()) <= 40:
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def _date(value: Any, zone: tzinfo, where: str) -> str:
    if type(value) is date:
        return value.isoformat()
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise _refuse(where, value, "date") from None
    moment = _moment(value, zone)
    if moment is None:
        raise _refuse(where, value, "date (YYYY-MM-DD)")
    return moment.date().isoformat()


def _datetime(value: Any, zone: tzinfo, where: str) -> str:
    if isinstance(value, str) and _DATETIME.match(value.strip()):
        try:
            return _written(datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            raise _refuse(where, value, "datetime") from None
    moment = _moment(value, zone)
    if moment is None:
        raise _refuse(where, value, "datetime (YYYY-MM-DD HH:MM:SS)")
    return _written(moment)


def _written(moment: datetime) -> str:
    """`YYYY-MM-DD HH:MM:SS`, the year always of four digits: strftime's %Y writes year 1 as `1`
    (glibc), which Pisano's customer schema does not parse; isoformat pads it."""
    return moment.replace(tzinfo=None).isoformat(" ", "seconds")


def event_time_ms(value: Any, zone: tzinfo) -> int:
    """Epoch milliseconds of an event time: a datetime (Avro timestamp), an int of epoch
    milliseconds, or an ISO 8601 string; a naive time is read in the mapping's zone."""
    if type(value) is int:
        return value
    # An instant is not converted into the zone (only a naive time is read in it): at datetime's
    # bounds the conversion leaves its range, while the milliseconds are plain arithmetic.
    moment = _parsed(value)
    if moment is None:
        raise _refuse("event_time", value, "time (a timestamp, epoch milliseconds or ISO 8601)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp() * 1000)
