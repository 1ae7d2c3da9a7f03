"""Keeping a waiting request's claims alive (ARCHITECTURE.md invariant 2).

A request holds its claims while it waits: for its slot's lead time, for a slot beyond the horizon
or behind a fence, in its backoff between attempts, and, while its batch is bisected, while
another part of the batch is sent. Its heartbeat renews the claims it still holds whenever a
period has passed since the last beat, from inside those waits (one loop on the sender's thread:
no thread of its own), so a live replica's claims never lapse however long it waits, and the lease
need only outlive one request (Settings.claim_lease_ms). A SIGKILLed replica's claims lapse after
that lease instead of after every retry it might have made.

The period is a quarter of the lease: two beats in a row may fail and the third still lands before
the lease ends. The renewal before each POST (`SlotReserver.ready`) stays the gate; a beat only
keeps the claims alive until it, and ends a request early when it finds one lost (a gate renewal
that finds one lost says so too, `found_lost`: it renews every claim the batch holds, as a beat):
- a claim lost (another attempt's now, delivered, or lapsed into an unknown mark): the request
  ends unsent, as when the gate renewal fails ("refused");
- Redis unreachable: not a reason to give up. The next beat comes a period later, the gate
  renewal decides as always; said once per request, never retried in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Renewing every lease/3 would let two failed beats in a row end the lease exactly as the third
# comes; every lease/4, the third lands a quarter lease before it ends.
BEATS_PER_LEASE = 4


def beat_period_s(lease_ms: int) -> float:
    return lease_ms / 1000 / BEATS_PER_LEASE


class Heartbeat:
    """The waits of one batch's requests while its claims are held.

    `beat` renews every claim still held: True renewed, False one is lost (do not send), None
    Redis did not answer. Without one (`beat=None`), the waits only watch `stop`."""

    def __init__(self, stop: threading.Event, beat: Callable[[], bool | None] | None = None,
                 period_s: float = 0.0, since: float | None = None) -> None:
        self.stop = stop
        self._beat = beat
        self.period_s = period_s
        # The claims were taken at `since` (monotonic): the first beat is a period after.
        self._due_at = (time.monotonic() if since is None else since) + period_s
        self.lost = False  # a beat found a claim lost: the request must not be sent
        self._said = False

    def wait(self, seconds: float) -> bool:
        """Sleep `seconds`, beating whenever one is due. True if cut short: stopping, or a claim
        lost (`lost`), like `threading.Event.wait`."""
        if self._beat is None:
            return self.stop.wait(max(0.0, seconds))
        end = time.monotonic() + seconds
        while not self.lost:
            if self.stop.is_set():
                return True
            now = time.monotonic()
            # A due beat comes first, even in a wait too short to sleep: requests that follow one
            # another with no wait between them (bisection without a throttle) still beat for
            # the groups not yet sent.
            if now >= self._due_at:
                self._beating(now)
                continue
            if now >= end:
                return False
            if self.stop.wait(min(end, self._due_at) - now):
                return True
        return True

    def found_lost(self) -> None:
        """The renewal before a POST found a claim lost: as a beat that found it, every request of
        the batch still to come ends unsent at once, reserving no slot."""
        if not self.lost:
            log.warning("a request's claim was lost at the renewal before its POST (lapsed, or taken by another "
                        "attempt): not sent, nor are the batch's requests still to come")
        self.lost = True

    def renewed(self) -> None:
        """Every claim the beats renew was just renewed (the renewal before a POST): the next beat
        is a period from now."""
        self._due_at = time.monotonic() + self.period_s

    def _beating(self, now: float) -> None:
        assert self._beat is not None
        # Counted from the beat's start, whatever its answer: a failed one is tried again a period
        # later, not at once (Redis is not hammered while it is away).
        self._due_at = now + self.period_s
        renewed = self._beat()
        if renewed is None:
            if not self._said:
                self._said = True
                log.warning("could not renew the claims of a waiting request (Redis unreachable): trying again "
                            "every %.0fs; the renewal before its POST decides whether it is sent", self.period_s)
        elif not renewed:
            self.lost = True
            log.warning("a waiting request's claim was lost (lapsed, taken by another attempt, or gone from "
                        "Redis): not sent under it; its events go round again and are claimed afresh")
