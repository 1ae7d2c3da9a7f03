"""The throttle window syntax shared by the limiter, the settings and the simulator.

`PISANO_RATE_LIMITS` is a comma list of `N/Ts` items: at most N requests in any T-second
interval, all windows at once (Pisano's cloud: `20/5s,40/25s,80/125s,160/625s`). `off` means
no throttle, for on-premises installations that removed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PISANO_CLOUD_LIMITS = "20/5s,40/25s,80/125s,160/625s"
CLOUD_LONGEST_MS = 625_000  # its longest window's period (a test keeps it equal to the limits)
EXPECTED_FORM = "N/Ts,... (e.g. 20/5s,40/25s; T may also end in ms or m) or 'off'"

_ITEM = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000}
# Bounds of what the shared limiter counts (its Redis script's integers), far beyond any real
# throttle: Pisano's longest window is 625 s. A larger number is no throttle at all: write `off`.
MAX_LIMIT = 1_000_000
MAX_PERIOD_MS = 86_400_000


@dataclass(frozen=True, order=True)
class RateWindow:
    """At most `limit` requests in any interval of `period_ms` milliseconds."""

    limit: int
    period_ms: int

    def __str__(self) -> str:
        if self.period_ms % 1000 == 0:
            return f"{self.limit}/{self.period_ms // 1000}s"
        return f"{self.limit}/{self.period_ms}ms"


def parse_rate_limits(text: str) -> tuple[RateWindow, ...]:
    """Parse `N/Ts,...`; an empty tuple means no throttle. Raises ValueError on anything else."""
    if text.strip().lower() == "off":
        return ()
    windows = []
    for item in text.split(","):
        match = _ITEM.match(item)
        if not match:
            raise ValueError(f"{item.strip()!r} is not N/Ts")
        limit, amount, unit = int(match[1]), float(match[2]), match[3]
        period_ms = round(amount * _UNIT_MS[unit])
        if limit < 1 or period_ms < 1:
            raise ValueError(f"{item.strip()!r} needs N >= 1 and T > 0")
        if limit > MAX_LIMIT or period_ms > MAX_PERIOD_MS:
            raise ValueError(f"{item.strip()!r} needs N at most {MAX_LIMIT} and T at most 1440m (for no "
                             "throttle, write 'off')")
        windows.append(RateWindow(limit, period_ms))
    if len({w.period_ms for w in windows}) != len(windows):
        raise ValueError("two windows have the same period")
    return tuple(sorted(windows, key=lambda w: w.period_ms))


def format_rate_limits(windows: tuple[RateWindow, ...]) -> str:
    return ",".join(str(w) for w in windows) if windows else "off"
