"""Pacing: when a request whose batch is not full should leave.

Sending each batch as soon as it is due, at the earliest slot the windows allow, spends a steady
trickle's budget on tiny batches: on Pisano's cloud (20/5s, 40/25s, 80/125s, 160/625s) the fleet
uses the 160 requests of a 625-second window in its first minutes, then nothing can leave until
the window slides, and an event waits up to seven minutes (README, "Pacing").

The policy. A request is *urgent* when the batch it will carry is full (or the batcher flushes
for a shutdown or a rebalance); it takes the earliest allowed slot, as before, so a backlog leaves
in full batches back to back and a spike leaves at once from the burst budget. Any other request
is *paced*: besides the windows, it keeps one pace after the newest reservation of the fleet
(every replica and campaign on the token), with

    pace = max over windows of (period + margin) / (limit x PISANO_PACE_SHARE)

i.e. the sustainable rate of the binding (longest) window, times the share. Below 1, the share
leaves the rest of every window free for spikes: paced requests alone never exhaust a window.
The wait for the turn happens before the batch is taken, so the batch keeps filling: each paced
request carries whatever arrived since the last one. While it waits, a batch that fills makes
the request urgent at once; one that waited `slots.PACE_PATIENCE_TURNS` paces is paced no more
(another replica's backlog can keep every turn out of reach).

The limiter stays the exact guard: the pace is one more lower bound on a slot, enforced in the
same script and round trip (`consumer/state/lua/acquire.lua`), so it holds fleet-wide, and a
paced turn is never reserved ahead (a full batch is never queued behind a small one).
Campaigns still take turns at take time (`batching.Batcher`), so the paced requests are shared
among them like every other.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence

from consumer.config.windows import RateWindow
from consumer.delivery.batching import Batcher
from consumer.delivery.slots import Slot, SlotReserver

STOP_CHECK_S = 0.5  # a thread waiting for its turn notices a stop within this


def pace_interval_ms(windows: Sequence[RateWindow], margin_ms: int, share: float) -> int:
    """The fleet's spacing of paced requests; 0 when pacing is off (share 0, or no throttle)."""
    if share <= 0 or not windows:
        return 0
    return max(math.ceil((w.period_ms + margin_ms) / (w.limit * share)) for w in windows)


class Pacer:
    """Decides, for each slot a sender thread is about to reserve, whether it is paced or urgent,
    and counts the urgent slots whose full batch has not been taken yet (so one full batch makes
    one urgent slot, not one per thread)."""

    def __init__(self, batcher: Batcher, slots: SlotReserver, stop: threading.Event) -> None:
        self.batcher = batcher
        self.slots = slots
        self.stop = stop
        self._lock = threading.Lock()
        self._urgent = 0

    @property
    def pacing(self) -> bool:
        return self.slots.pace_ms > 0

    def reserve(self) -> tuple[Slot | None, bool]:
        """A slot for the due batch a thread promised: (its time or None if stopping, urgent).
        An urgent slot must be given back with `taken` once its batch is taken (or not)."""
        if not self.pacing:
            return self.slots.reserve(), False
        urgent = self._claim_urgent()
        state = {"urgent": urgent}

        def turn_wait(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while (remaining := deadline - time.monotonic()) > 0 and not self.stop.is_set():
                with self._lock:
                    seen = self._urgent
                # In slices: a stop does not wake the batcher's condition.
                if not self.batcher.wait_for_full(self.stop, min(remaining, STOP_CHECK_S), more_than=seen):
                    continue
                if self._claim_urgent():
                    state["urgent"] = True
                    return True
            return False

        try:
            slot = self.slots.reserve() if urgent else self.slots.reserve(turn_wait)
        except BaseException:
            self.taken(state["urgent"])
            raise
        return slot, state["urgent"]

    def taken(self, urgent: bool) -> None:
        """The batch of an urgent slot was taken (or the slot given up)."""
        if urgent:
            with self._lock:
                self._urgent = max(0, self._urgent - 1)

    def _claim_urgent(self) -> bool:
        with self._lock:
            if self.batcher.full_requests() > self._urgent:
                self._urgent += 1
                return True
            return False
