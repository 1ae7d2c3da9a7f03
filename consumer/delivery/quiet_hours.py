"""Quiet hours: a destination's send windows, consulted by its batcher and its sender (issue 13).

    campaign's window (CAMPAIGN_SEND_WINDOWS) > destination's (destinations.<name>.send_window) > SEND_WINDOW

Outside its window a campaign is *held*: the batcher neither counts its events as due nor hands
out its batches (`Batcher(holds=...)`), so no throttle slot is spent on it and no request leaves.
Its events stay buffered up to MAX_BUFFERED_EVENTS / MAX_BUFFERED_BYTES; past those the poll
loop's backpressure pauses the partitions and the rest waits in Kafka. Nothing held has an
outcome, so nothing held is committed. When the window opens, the held campaigns are due at once
(their events are older than BATCH_MAX_WAIT_MS) and drain in full batches, slot after slot,
inside the throttle. Events that grew older than MAX_EVENT_AGE meanwhile end as `expired` at
admission (consumer/delivery/admission.py), as any event that waited.

Two instants are checked. A batch is taken only if its window is still open CLOSING_LEAD_MS
later, since its request leaves a moment after the take (the slot's lead time, its claims): a
request does not straddle the closing. And each attempt is checked just before its POST
(`sending_allowed`): a retry whose backoff ran past the closing is not sent; its events go back
and wait for the next opening (consumer/delivery/attempts.py).

The clock is SEND_WINDOW_CLOCK (consumer/state/clock.py): the system clock, or, for tests and
demos, a shared clock in Redis that the simulator reads too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from consumer.config.send_window import SendWindow
from consumer.operations.metrics import Metrics
from consumer.state.clock import WallClock

log = logging.getLogger(__name__)

CLOSING_LEAD_MS = 1000
CACHE_MS = 100
DESTINATION_SCOPE = "destination"  # the `window` label of the destination's own window


class QuietHours:
    def __init__(self, destination: str, default: SendWindow | None, campaigns: Mapping[str, SendWindow],
                 clock: WallClock, metrics: Metrics | None = None) -> None:
        self.destination = destination
        self.default = default
        self.campaigns = dict(campaigns)
        self.clock = clock
        self.metrics = metrics
        self._states: dict[str, bool] = {}  # scope -> last seen open, for the log and the gauge
        self._cache: dict[str, tuple[int, bool]] = {}  # window text -> (now // CACHE_MS, held)
        self._scopes = {scope: w for scope, w in [(DESTINATION_SCOPE, default), *self.campaigns.items()]
                        if w is not None and not w.always}

    def __bool__(self) -> bool:
        return any(not w.always for w in (self.default, *self.campaigns.values()) if w is not None)

    def window(self, campaign: str) -> SendWindow | None:
        return self.campaigns.get(campaign, self.default)

    def holds(self, campaign: str) -> bool:
        """True while the campaign's window is closed, or closes within CLOSING_LEAD_MS."""
        window = self.window(campaign)
        if window is None or window.always:
            return False
        now = self.clock.now_ms()
        # The batcher asks for every campaign on every look at its queues: an answer serves for
        # CACHE_MS per window (a window's edges are whole minutes; CLOSING_LEAD_MS covers this).
        bucket = now // CACHE_MS
        cached = self._cache.get(window.text)
        if cached is not None and cached[0] == bucket:
            return cached[1]
        held = not (window.is_open(now) and window.is_open(now + CLOSING_LEAD_MS))
        self._cache[window.text] = (bucket, held)
        for scope, scoped in self._scopes.items():
            if scoped.text == window.text:
                self._seen(scope, window, not held)
        return held

    def sending_allowed(self, campaign: str) -> bool:
        """Whether a request of the campaign may leave now (checked just before each POST)."""
        window = self.window(campaign)
        return window is None or window.is_open(self.clock.now_ms())

    def _seen(self, scope: str, window: SendWindow, is_open: bool) -> None:
        if self._states.get(scope) == is_open:
            return
        self._states[scope] = is_open
        if self.metrics is not None:
            self.metrics.send_window_open.labels(self.destination, scope).set(1 if is_open else 0)
        what = "its campaigns" if scope == DESTINATION_SCOPE else f"campaign {scope}"
        if is_open:
            log.info("send window open (%s): %s of destination %s may be sent", window, what, self.destination)
        else:
            log.info("send window closed (%s): %s of destination %s wait, unsent and uncommitted",
                     window, what, self.destination)
