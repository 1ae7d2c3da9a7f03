"""Reading a destination's token source again on a request's path (`Attempts`, after Pisano refused
the token a request carried), without letting the source hold the request.

The source may be foreign code (PISANO_TOKEN_PROVIDER: a secret store's client), and it may hang.
The request waiting for it holds its batch's claims, so the wait must be the heartbeat's, as every
other wait of such a request is (consumer/delivery/heartbeat.py); and it must be bounded, since a
provider that never answers would otherwise hold the request, and its partition, for good. Only
both are correct: a bound alone lets the claims lapse when it is longer than a lease near its
floor, beats alone leave a hang stuck forever. So the source is read on a thread of its own, and
the request waits for it with the heartbeat up to TOKEN_REFRESH_WAIT_S; a source still busy then
counts as unchanged (the refused token was the current one: the request's refusal stands, the
circuit opens as for any refused token, and its probe later tries whatever token the source has
by then).

A read answers a request's refusal only if it began after that refusal came back (`refused_at`,
monotonic): during a rotation, a read begun earlier may have found the old token still in place
(request A refused, its read begun; request B sent with the old token, refused too): taken as
B's answer, B's refusal would stand on a stale read, B dead-lettered and the circuit opened, where
a read now gives the new token and B succeeds on its retry. That holds for a read begun while B's
POST was in flight too: a token regenerated in Pisano is revoked at once and reaches the source
a moment later, maybe after that read and before B's refusal came back. So a read begun after the
refusal came back, under way or finished, is reused (no read of its own); one begun earlier and
still under way is
waited for first (one thread reads the source at a time: a hung source costs one stuck thread, not
one per refusal), then a new one is begun, or joined if another request began it meanwhile. Both
waits share the request's one bound. A read's beginning is taken before its thread starts, never
later than the source is actually read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from consumer.config.tokens import TokenSource

log = logging.getLogger(__name__)

# A token file is read in microseconds and a secret store answers in well under a second; ten
# seconds is a source in trouble, and short of any lease (Settings.claim_lease_ms) even unbeaten.
TOKEN_REFRESH_WAIT_S = 10.0
# How often the wait looks whether the refresh is done (a 401 with a rotation is rare: a few ms
# late is nothing), between the heartbeat's beats.
POLL_S = 0.01


class _Read:
    """One read of the source: when it began (monotonic, taken before its thread starts) and
    whether it has answered."""

    __slots__ = ("began", "done")

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.done = threading.Event()


class TokenRefresh:
    def __init__(self, tokens: TokenSource, destination: str) -> None:
        self.tokens = tokens
        self.destination = destination
        self._lock = threading.Lock()
        self._read: _Read | None = None  # the read under way or last made

    def __call__(self, wait: Callable[[float], bool], bound_s: float = TOKEN_REFRESH_WAIT_S, *,
                 refused_at: float) -> bool | None:
        """Read the source again for a request whose refusal came back at `refused_at` (monotonic),
        waiting with `wait` (the heartbeat's: True when cut short) up to `bound_s` in all. True: a
        read begun after the refusal answered (the source's current token is the newest); False: none
        did in time; None: the wait was cut short (stopping, a claim lost) before one answered,
        which says nothing of the token (the caller must not take the refusal as final)."""
        end = time.monotonic() + bound_s
        while True:
            read, answers = self._read_for(refused_at)
            waited = self._wait(read, wait, end)
            if waited == "late":
                log.error("destination %s: %s did not answer within %.0fs after Pisano refused the token a request "
                          "carried; the refusal stands (the circuit opens until a probe passes). Check the token "
                          "source: it must answer promptly", self.destination, _source(self.tokens), bound_s)
                return False
            if waited == "cut short":
                # A read that answers this request may have answered meanwhile; an older one never does.
                return True if answers and read.done.is_set() else None
            if answers:
                return True
            # A read begun before the refusal has answered: now one that answers this request.

    def _read_for(self, refused_at: float) -> tuple[_Read, bool]:
        """The read to wait for, and whether it answers a refusal that came back at `refused_at`:
        one begun after it (under way or finished), else a new one, unless one begun earlier is
        still under way (then that one, not answering: the source is read by one thread at a time)."""
        with self._lock:
            read = self._read
            if read is not None and read.began > refused_at:
                return read, True
            if read is not None and not read.done.is_set():
                return read, False
            read = self._read = _Read()  # begun now, after the refusal: it answers (whatever the clock's grain)
            threading.Thread(target=self._refresh, args=(read.done,), daemon=True,
                             name=f"token-refresh-{self.destination}").start()
            return read, True

    @staticmethod
    def _wait(read: _Read, wait: Callable[[float], bool],
              end: float) -> Literal["done", "late", "cut short"]:
        while not read.done.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return "late"
            if wait(min(POLL_S, left)):
                return "cut short"
        return "done"

    def _refresh(self, done: threading.Event) -> None:
        try:
            self.tokens.refresh()
        except Exception:  # a source is to never raise (RefreshingToken does not); a foreign one might
            log.exception("destination %s: %s failed while read again", self.destination, _source(self.tokens))
        finally:
            done.set()


def _source(tokens: TokenSource) -> str:
    """The setting that names the source (never the token)."""
    return str(getattr(tokens, "source", "the token source"))
