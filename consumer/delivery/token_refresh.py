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
by then). A refresh still under way is waited for again, never started twice: a hung source
costs one stuck thread, not one per refusal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from consumer.config.tokens import TokenSource

log = logging.getLogger(__name__)

# A token file is read in microseconds and a secret store answers in well under a second; ten
# seconds is a source in trouble, and short of any lease (Settings.claim_lease_ms) even unbeaten.
TOKEN_REFRESH_WAIT_S = 10.0
# How often the wait looks whether the refresh is done (a 401 with a rotation is rare: a few ms
# late is nothing), between the heartbeat's beats.
POLL_S = 0.01


class TokenRefresh:
    def __init__(self, tokens: TokenSource, destination: str) -> None:
        self.tokens = tokens
        self.destination = destination
        self._lock = threading.Lock()
        self._done: threading.Event | None = None  # the refresh under way or last made

    def __call__(self, wait: Callable[[float], bool], bound_s: float = TOKEN_REFRESH_WAIT_S) -> bool | None:
        """Read the source again, waiting with `wait` (the heartbeat's: True when cut short) up to
        `bound_s`. True: the source answered (its current token is the newest); False: it did not in
        time; None: the wait was cut short (stopping, a claim lost) before it answered, which says
        nothing of the token (the caller must not take the refusal as final)."""
        with self._lock:
            done = self._done
            if done is None or done.is_set():
                done = self._done = threading.Event()
                threading.Thread(target=self._refresh, args=(done,), daemon=True,
                                 name=f"token-refresh-{self.destination}").start()
        end = time.monotonic() + bound_s
        while not done.is_set():
            left = end - time.monotonic()
            if left <= 0:
                log.error("destination %s: %s did not answer within %.0fs after Pisano refused the token a request "
                          "carried; the refusal stands (the circuit opens until a probe passes). Check the token "
                          "source: it must answer promptly", self.destination, _source(self.tokens), bound_s)
                return False
            if wait(min(POLL_S, left)):
                return True if done.is_set() else None
        return True

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
