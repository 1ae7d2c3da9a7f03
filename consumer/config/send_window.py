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

`SendWindow.longest_closed` measures the longest stretch a window stays closed, in real time, over
the coming year: each week of wall-clock ranges laid over every change of the zone's UTC offset
that year. Daylight saving time makes a gap spanning the autumn change an hour longer than its
wall-clock length, and a range inside the hour skipped in spring does not open at all that week
(`Sun 02:00-03:00 Europe/Berlin`: two weeks closed, once a year); a flat hour of margin would miss
the latter. The settings weigh it against the stale limit at start (consumer/config/settings.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EXAMPLE = "e.g. '09:00-21:00 Europe/Istanbul' or 'Mon-Fri 09:00-21:00; Sat 10:00-14:00 Europe/Istanbul'"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_DAY_SPEC = re.compile(r"^[A-Za-z]{3}(-[A-Za-z]{3})?(,[A-Za-z]{3}(-[A-Za-z]{3})?)*$")
MINUTES_PER_DAY = 24 * 60
_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
# How far `longest_closed` looks: a year of the zone's offset changes, and two weeks more so that
# a gap spanning the last of them is seen whole.
_SPAN_MS = (366 + 14) * _DAY_MS
# Etc/GMT+3 is three hours *behind* UTC: a window written with one for "UTC+3" would open six
# hours off, at night. Refused (any case), but for a zero offset, which is UTC whatever its sign;
# also under the tz database's `posix/` and `right/` copies, which the system's zoneinfo loads as
# well (`posix/Etc/GMT+3` went through).
_POSIX_OFFSET_ZONE = re.compile(r"^((posix|right)/)?etc/gmt(?P<sign>[+-])(?P<hours>\d{1,2})$", re.IGNORECASE)


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

    def longest_closed(self, start_ms: int | None = None) -> tuple[int, int | None]:
        """The longest time the window stays closed at a stretch, in milliseconds of real time, over
        the year from `start_ms` (now by default), and the instant that gap begins (None: never
        closed). For start-up: about 9,000 look-ups of the zone's offset (some 20 ms), once per zone
        and hour; then a few milliseconds per window."""
        if self.zone is None:
            return 0, None
        start = (int(time.time() * 1000) // _HOUR_MS * _HOUR_MS if start_ms is None
                 else start_ms // _MINUTE_MS * _MINUTE_MS)
        end = start + _SPAN_MS
        opened: list[tuple[int, int]] = []
        for first, last, offset in _offset_stretches(self.zone, start, end):
            # While the offset holds, wall time is real time plus it: the window's wall-clock ranges
            # of each local day it covers, clipped to the stretch, moved back by it.
            wall_first, wall_last = first + offset, last + offset
            for day in range(wall_first // _DAY_MS, (wall_last - 1) // _DAY_MS + 1):
                midnight = day * _DAY_MS
                for open_min, close_min in self.intervals[(day + 3) % 7]:  # 1970-01-01 was a Thursday
                    low = max(midnight + open_min * _MINUTE_MS, wall_first)
                    high = min(midnight + close_min * _MINUTE_MS, wall_last)
                    if low < high:
                        opened.append((low - offset, high - offset))
        opened.sort()
        longest, begins, closed_since = 0, None, start  # a gap cut by `start` counts as far as it is seen
        for low, high in opened:
            if low - closed_since > longest:
                longest, begins = low - closed_since, closed_since
            closed_since = max(closed_since, high)
        if end - closed_since > longest:
            longest, begins = end - closed_since, closed_since
        return longest, begins if longest else None

    def local_time(self, epoch_ms: int) -> str:
        """An instant as the window's wall clock, `Sat 14:00 Europe/Istanbul`; the weekday only when
        the window's days differ."""
        if self.zone is None:
            return datetime.fromtimestamp(epoch_ms / 1000).isoformat()
        local = datetime.fromtimestamp(epoch_ms / 1000, self.zone)
        day = "" if len(set(self.intervals)) == 1 else f"{DAYS[local.weekday()].capitalize()} "
        return f"{day}{local:%H:%M} {self.zone.key}"

    def __str__(self) -> str:
        return self.text


ALWAYS = SendWindow("always", None)


@lru_cache(maxsize=64)
def _offset_stretches(zone: ZoneInfo, start: int, end: int) -> tuple[tuple[int, int, int], ...]:
    """[first, last) stretches of real time over which the zone's UTC offset holds, with it.
    Sampled hourly, each change found to the second (no zone changes its offset twice in an hour)."""
    def offset_ms(epoch_ms: int) -> int:
        delta = datetime.fromtimestamp(epoch_ms / 1000, zone).utcoffset()
        return round(delta.total_seconds() * 1000) if delta is not None else 0

    stretches: list[tuple[int, int, int]] = []
    first, offset = start, offset_ms(start)
    at = start
    while at < end:
        step = min(at + _HOUR_MS, end)
        if offset_ms(step) != offset:
            low, high = at // 1000, step // 1000  # the change is in (low, high] seconds
            while high - low > 1:
                middle = (low + high) // 2
                if offset_ms(middle * 1000) == offset:
                    low = middle
                else:
                    high = middle
            stretches.append((first, high * 1000, offset))
            first, offset = high * 1000, offset_ms(high * 1000)
        at = step
    stretches.append((first, end, offset))
    return tuple(stretches)


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
