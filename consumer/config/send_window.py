"""SEND_WINDOW: the hours in which a request may leave for Pisano (issue 13, quiet hours).

Grammar (one time zone for the whole window, written last):

    SEND_WINDOW := RULE ( ";" RULE )* ZONE  |  "always"
    RULE        := [ DAYS ] RANGE ( "," RANGE )*
    DAYS        := DAY | DAY "-" DAY, comma-separated   (Mon Tue Wed Thu Fri Sat Sun; a range may wrap: Fri-Mon)
    RANGE       := HH:MM "-" HH:MM                      (24:00 ends a day)
    ZONE        := an IANA time zone (Europe/Istanbul, UTC); not Etc/GMT+N or Etc/GMT-N, whose sign
                   is inverted (Etc/GMT+3 is UTC-03:00)

    09:00-21:00 Europe/Istanbul
    09:00-12:00,13:00-21:00 Europe/Istanbul
    Mon-Fri 09:00-21:00; Sat 10:00-14:00 Europe/Istanbul
    Fri 22:00-02:00 UTC                  (crosses midnight: Friday 22:00 to Saturday 02:00)

A rule without days applies every day. Times are the zone's wall clock, so a window follows
daylight saving time: `09:00-21:00 Europe/Berlin` opens at 09:00 local in summer and in winter.
On the day clocks go back an hour that exists twice is inside a range if its wall time is; on the
day they go forward, the skipped hour is simply never seen. A range that crosses midnight belongs
to the day it starts on. Ranges are half-open: `09:00-21:00` is open at 09:00:00, closed at 21:00:00.

`always` (no quiet hours) lets a campaign override a destination's or the fleet's window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EXAMPLE = "e.g. '09:00-21:00 Europe/Istanbul' or 'Mon-Fri 09:00-21:00; Sat 10:00-14:00 Europe/Istanbul'"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_DAY_SPEC = re.compile(r"^[A-Za-z]{3}(-[A-Za-z]{3})?(,[A-Za-z]{3}(-[A-Za-z]{3})?)*$")
MINUTES_PER_DAY = 24 * 60
# Etc/GMT+3 is three hours *behind* UTC: a window written with one for "UTC+3" would open six
# hours off, at night. Refused (any case), but for a zero offset, which is UTC whatever its sign.
_POSIX_OFFSET_ZONE = re.compile(r"^etc/gmt(?P<sign>[+-])(?P<hours>\d{1,2})$", re.IGNORECASE)


class SendWindowError(ValueError):
    """A SEND_WINDOW that does not parse; the message says what to write instead."""


@dataclass(frozen=True)
class SendWindow:
    """Open intervals per weekday (Monday 0), in minutes of the zone's local day, half-open."""

    text: str
    zone: ZoneInfo | None  # None: `always`
    intervals: tuple[tuple[tuple[int, int], ...], ...] = ()

    @property
    def always(self) -> bool:
        return self.zone is None

    def is_open(self, epoch_ms: int) -> bool:
        if self.zone is None:
            return True
        local = datetime.fromtimestamp(epoch_ms / 1000, self.zone)
        minute = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 60e6
        return any(start <= minute < end for start, end in self.intervals[local.weekday()])

    def __str__(self) -> str:
        return self.text


ALWAYS = SendWindow("always", None)


def parse_send_window(text: str) -> SendWindow:
    """Parse a SEND_WINDOW (module docstring); SendWindowError naming the part at fault."""
    cleaned = " ".join(text.split())
    if cleaned.lower() == "always":
        return ALWAYS
    if not cleaned:
        raise SendWindowError(f"empty; write the hours and a time zone, {EXAMPLE}, or 'always'")
    body, _, zone_name = cleaned.rpartition(" ")
    if not body:
        raise SendWindowError(f"{cleaned!r} has no time zone; end it with one, {EXAMPLE}")
    inverted = _POSIX_OFFSET_ZONE.match(zone_name)
    if inverted and int(inverted["hours"]):
        sign, hours = inverted["sign"], int(inverted["hours"])
        actual = f"UTC{'-' if sign == '+' else '+'}{hours:02d}:00"
        raise SendWindowError(f"{zone_name!r} is {actual}: the sign of the Etc/GMT zones is inverted (POSIX), "
                              "so it is easily the opposite of what was meant; end the window with the place's "
                              f"zone instead, such as Europe/Istanbul for UTC+03:00 ({EXAMPLE})")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SendWindowError(f"{zone_name!r} is not a time zone; end the window with an IANA zone such as "
                              f"Europe/Istanbul or UTC ({EXAMPLE})") from None
    per_day: list[list[tuple[int, int]]] = [[] for _ in DAYS]
    for rule in body.split(";"):
        rule = rule.strip()
        if not rule:
            raise SendWindowError(f"an empty rule between ';' in {cleaned!r}; {EXAMPLE}")
        days, ranges = _split_rule(rule)
        for start, end in ranges:
            for day in days:
                if end > start:
                    per_day[day].append((start, end))
                else:  # crosses midnight: the rest of its day, then the next day's morning
                    per_day[day].append((start, MINUTES_PER_DAY))
                    if end:
                        per_day[(day + 1) % 7].append((0, end))
    return SendWindow(cleaned, zone, tuple(tuple(sorted(day)) for day in per_day))


def _split_rule(rule: str) -> tuple[list[int], list[tuple[int, int]]]:
    parts = rule.split()
    if len(parts) > 2:
        raise SendWindowError(f"{rule!r}: a rule is [DAYS] RANGES with no spaces inside each, such as "
                              "'Mon-Fri 09:00-12:00,13:00-21:00'")
    days = _days(parts[0]) if len(parts) == 2 else list(range(7))
    return days, [_range(item, rule) for item in parts[-1].split(",")]


def _days(spec: str) -> list[int]:
    if not _DAY_SPEC.match(spec):
        raise SendWindowError(f"{spec!r} is not a list of days; write days as Mon, Tue, Wed, Thu, Fri, Sat, Sun, "
                              "ranges such as Mon-Fri, or lists such as Sat,Sun")
    days: list[int] = []
    for item in spec.split(","):
        first, _, last = item.partition("-")
        start = _day(first)
        stop = _day(last) if last else start
        day = start
        while True:
            if day not in days:
                days.append(day)
            if day == stop:
                break
            day = (day + 1) % 7
    return days


def _day(name: str) -> int:
    try:
        return DAYS.index(name.lower())
    except ValueError:
        raise SendWindowError(f"{name!r} is not a day; write Mon, Tue, Wed, Thu, Fri, Sat or Sun") from None


def _range(item: str, rule: str) -> tuple[int, int]:
    match = _RANGE.match(item)
    if not match:
        raise SendWindowError(f"{item!r} in {rule!r} is not a range HH:MM-HH:MM such as 09:00-21:00")
    start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise SendWindowError(f"{item!r}: hours run 00-23 (24:00 only as an end), minutes 00-59")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise SendWindowError(f"{item!r} is empty; a whole day is 00:00-24:00, and no sending at all is a "
                              "window without that day")
    return start, end
