"""How long a thread holds the interpreter while another waits for it: 10 ms in the consumer.

The poll loop runs Python for every record; the sender threads mostly wait on Redis and Pisano,
and each time a reply arrives the sender needs the interpreter back. At CPython's default of
5 ms the handovers between them cost about a tenth of the process's CPU under load (per-thread
CPU of a 300,000-event backlog, median of five to eight runs each: 21.0 us/event at 5 ms,
19.6 at 10 ms, 17.7 at 20 ms; README, "Benchmarks").

Not longer, because a sender's wait for the interpreter is part of how late its POST leaves after
its throttle slot: a wait before the lateness check makes the request take another slot past
LATENESS_FLOOR_S (20 ms, consumer/delivery/slots.py), and a wait after it comes out of
PISANO_RATE_MARGIN_MS. A handover waits at most one interval per thread ahead of it.
"""

from __future__ import annotations

import sys

SWITCH_INTERVAL_S = 0.01


def hand_over_less_often() -> None:
    """Call once, in the consumer's own process (not in a library user's)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
