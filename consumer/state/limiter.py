"""One throttle for the whole fleet: an exact multi-window limiter shared in Redis.

Every replica reserves each request's slot from the same Lua script (`lua/acquire.lua`), which
reads the time from Redis, so the replicas' clocks never matter. A reservation is one round
trip; the caller then waits for its slot on its own (the wait comes back with the grant), so no
one polls Redis. A slot further away than the horizon is refused with its wait, so a replica
pauses instead of holding a far slot.

A 429 pauses the token's limiter for everyone (`lua/pause.lua`). Every reply carries the pause's
end, and so does the claims' round trip before each POST (`stage_pause_read`): another replica's
pause is known before the POST, not only at the next heartbeat.

A *paced* reservation (`acquire(pace_ms=...)`, a batch that is not full: consumer/delivery/pacing.py)
also keeps `pace_ms` after the fleet's newest reservation; its turn is refused (`Grant.paced`)
rather than reserved when it lies further ahead than `PACE_LEAD_SHARE` of the pace, so a full
batch is never queued behind a small one. The windows are checked the same way for both.

If Redis loses the state or rolls it back, the slots it forgot still count at Pisano. The
script then fences the fleet (see `lua/acquire.lua`): when a loss is proven, no slot for
horizon + longest period + margin; when the state is only in doubt (a new state, another Redis,
no heartbeat for a while), no slot for a short grace, during which every live replica reports
the epoch and reservation count it knows. That report must not depend on a replica being busy,
so each replica runs `LimiterHeartbeat`, which asks every limiter's script each second. A state
further ahead of Redis's clock than any slot is granted (the clock stepped back) holds the fleet
as a proven loss does, then starts a new log: never refused forever behind a slot in the future.
Redis's clock stepping *forward* would make every slot look older than it is, and every window
count too few: each call sends the script's clock of its previous reply and the monotonic time
since, the script measures the step against it and takes it out of the fleet's clock at once
(meta `skew`, 'step' in `lua/acquire.lua`): no fence, no extra round trip.

`Limiter` is the contract: `RedisLimiter` (the fleet's), `NoLimiter` for PISANO_RATE_LIMITS=off,
and `consumer.state.memory.MemoryLimiter` for unit tests; the Redis and memory ones pass
tests/contract/test_limiter_contract.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import NoScriptError

from consumer.config.windows import RateWindow
from consumer.errors import StateStoreError
from consumer.operations.threads import LongLivedThread, long_lived
from consumer.state.accounts import AccountRecord
from consumer.state.redis import (
    AccountKey,
    Call,
    Keys,
    load_script,
    stored_number,
    stored_text,
    token_fingerprint,
    translated,
)
from consumer.state.trip import Step

log = logging.getLogger(__name__)

# How long the fleet is held when the state is in doubt, and how often every replica reports to
# the limiter: the grace must cover a heartbeat, a Redis round trip and some scheduling slack.
GRACE_MS = 5_000
HEARTBEAT_S = 1.0
# A paced turn at most this share of the pace ahead is reserved at once (the caller waits for it
# on its own clock): enough to absorb a round trip and a wake-up's lateness, so a sender that
# waited for the turn it was told is granted it in one call.
PACE_LEAD_SHARE = 0.125
# The shortest horizon in effect (a smaller THROTTLE_HORIZON_MS, which may be 0, counts as this): a
# sender's slot is never sooner than its preparation's lead (consumer/delivery/slots.py, 200 ms),
# so a shorter horizon would refuse every slot as too far, forever. Every call of the script,
# heartbeats included, passes the same horizon; the script holds a proven loss (and judges a slot
# too far ahead to be real: its 'clock' fence) by the longest horizon any live caller passed.
MIN_HORIZON_MS = 500
# The longest horizon any version grants slots at: THROTTLE_HORIZON_MS's bound (settings.py reads it
# from here; check and preflight use 60 s). The previous version never records its horizon, so a
# slot it reserved is judged by this one, never taken for a clock step (and dropped) below it: sent
# to lua/acquire.lua on every call (ARGV[10], its LEGACY_HORIZON), the one place it is written.
LEGACY_HORIZON_MS = 3_600_000
# Redis's clock gaining more than this over a caller's interval (its previous reply's arrival to
# this call's sending, on the monotonic clock) is a forward step, taken out of the fleet's clock
# ('step' in lua/acquire.lua). The gain measured includes the two latencies in between, so this
# must be above a normal round trip with room (a spike beyond it costs the fleet that spike, once);
# a step within it goes unmeasured and shortens each window by at most this much, which the margin
# (PISANO_RATE_MARGIN_MS, 500 ms by default) absorbs. ntpd steps only beyond 128 ms.
STEP_TOLERANCE_MS = 100
# A pause sent again to the keys the limiter moved to while it was on its way (`RedisLimiter.pause`)
# at most this many times in all.
PAUSE_TRIES = 3

_FENCES = {
    "lost": "the throttle state was lost (Redis restarted without data, flushed, or its keys deleted)",
    "rolled_back": "the throttle state was rolled back (an older snapshot, or a failover that lost writes)",
    "new": "a new throttle state (first use, or a loss no live replica has reported yet)",
    "doubt": "the throttle state is in doubt (another Redis, or no heartbeat for a while)",
    "clock": "the throttle state lies ahead of Redis's clock, further than any slot is granted: Redis's clock "
             "stepped back (a failover to a node whose clock is behind, an NTP step) or the state was written by "
             "hand; its slots were dropped. Check the clocks and NTP of the Redis hosts",
}


@dataclass(frozen=True)
class Grant:
    """A reserved slot (`granted`), or a refusal: the next slot is beyond the horizon, the
    fleet is fenced (`held`) after the state may have lost reservations, or a paced request's
    turn is not due yet (`paced`). Ask again in `wait_s`.

    `wait_s` counts from when the state was read, which this process only knows lies within the
    call's round trip: at most `round_trip_s` before the answer came back (`received_at`, on the
    monotonic clock; an in-process limiter answers at once)."""

    granted: bool
    wait_s: float
    slot_ms: int
    held: bool = False
    paced: bool = False
    received_at: float = field(default_factory=time.monotonic)
    round_trip_s: float = 0.0


def pace_lead_ms(pace_ms: int) -> int:
    """How far ahead a paced turn is reserved rather than refused (plus the caller's preparation)."""
    return int(pace_ms * PACE_LEAD_SHARE)


class Limiter(Protocol):
    """A throttle: reserve a slot per request, pause everyone after a 429."""

    windows: tuple[RateWindow, ...]
    margin_ms: int

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        """Reserve the earliest allowed slot, or refuse with its wait when beyond the horizon.
        `pace_ms` > 0: a paced request, also no earlier than the newest reservation + pace_ms.
        `prepare_ms`: no slot before now + prepare_ms (the caller's preparation time)."""

    def heartbeat(self) -> None:
        """Report what this replica knows of the state (it fences the fleet if the state lost it)."""

    def pause(self, seconds: float) -> float:
        """No slot for anyone before `seconds` from now (Pisano answered 429). Returns how long
        the fleet stays paused from when the state was read: this pause, or a longer one already
        set (another replica's 429), which a retry waits out too (its budget counts it)."""

    def paused_until_ms(self) -> int:
        """The end of the newest pause this replica knows of, on the fleet's clock (`Grant.slot_ms`'s):
        from its own pauses, every reply of the script, heartbeats included (so at most a
        heartbeat old), and the reads staged in the claims' trips (`stage_pause_read`); no round
        trip. A slot granted before it lies inside the pause when its `slot_ms` is below this:
        consumer/delivery/slots.py gives it up (0: no pause known)."""

    def stage_pause_read(self) -> Step[None]:
        """The pause's end read as a step of a round trip made anyway (consumer/state/trip.py):
        the claims' trip before a POST carries it (consumer/delivery/claims.py), so a pause another
        replica set since this one's last reply is known right before the POST, for no round trip
        of its own. Noted as a reply's is (`paused_until_ms`)."""

    def utilisation(self) -> dict[RateWindow, float]:
        """Share of each window's limit reserved in the window ending now."""


class NoLimiter:
    """PISANO_RATE_LIMITS=off: every request may leave at once (an on-premises Pisano)."""

    windows: tuple[RateWindow, ...] = ()
    margin_ms = 0

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        return Grant(granted=True, wait_s=0.0, slot_ms=0)

    def heartbeat(self) -> None:
        pass

    def pause(self, seconds: float) -> float:
        return 0.0

    def paused_until_ms(self) -> int:
        return 0

    def stage_pause_read(self) -> Step[None]:
        return Step.answered(None)  # nothing to ask: no pause without a throttle

    def utilisation(self) -> dict[RateWindow, float]:
        return {}


def fence_hold_ms(windows: Sequence[RateWindow], *, margin_ms: int, horizon_ms: int) -> int:
    """How long a proven loss holds the fleet: a lost slot may lie `horizon` ahead of the loss,
    and counts in every window for one longest period (plus the margin) after it."""
    return horizon_ms + max(w.period_ms for w in windows) + margin_ms


class RedisLimiter:
    def __init__(
        self,
        client: Any,
        keys: Keys,
        token: str,
        windows: tuple[RateWindow, ...],
        *,
        margin_ms: int,
        horizon_ms: int,
        grace_ms: int = GRACE_MS,
        account: AccountRecord | None = None,
    ) -> None:
        if not windows:
            raise ValueError("a RedisLimiter needs at least one window; use NoLimiter for 'off'")
        self.client = client
        self.windows = windows
        self.margin_ms = margin_ms
        self.horizon_ms = max(horizon_ms, MIN_HORIZON_MS)
        self.grace_ms = grace_ms
        self._key_names = keys
        self._keys = list(keys.limiter(token))
        # The destination's record of the fingerprint its state is keyed by, followed on each
        # heartbeat (consumer/state/accounts.py): None for a limiter of no destination (tests).
        self._account = account
        self._fingerprint = token if isinstance(token, AccountKey) else token_fingerprint(token)
        self._window_args = [v for w in windows for v in (w.limit, w.period_ms)]
        self._acquire = load_script(client, "acquire")
        self._pause = load_script(client, "pause")
        self._utilisation = load_script(client, "utilisation")
        self._lock = threading.Lock()
        # What this replica knows of the state: its epoch and the highest reservation number
        # Redis gave us in it. A state without them, or behind them, lost reservations.
        self._epoch = ""
        self._seq = 0
        # The fleet clock's `now` of our newest reply, and when it came back (monotonic s): the
        # evidence the next call sends, against which the script measures a forward step.
        self._reply: tuple[int, float] | None = None
        # The fleet's pause's end as the replies showed it (fleet clock ms: `paused_until_ms`), and
        # when the reply it was last taken from came back (monotonic): `_paused`.
        self._paused_until: tuple[int, float] = (0, 0.0)

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        """Reserve the earliest allowed slot (paced: not before its turn): one round trip."""
        status, wait_ms, slot_ms, sent, received = self._run(reserve=True, pace_ms=pace_ms, prepare_ms=prepare_ms)
        return Grant(granted=status == 1, wait_s=max(0, wait_ms) / 1000, slot_ms=slot_ms, held=status == 3,
                     paced=status == 4, received_at=received, round_trip_s=received - sent)

    def heartbeat(self) -> None:
        """Tell the state what we know of it, whether or not we are sending (one round trip, two
        with the destination's record)."""
        if self._account is not None:
            self._follow_account(self._account)
        self._run(reserve=False)

    def _follow_account(self, account: AccountRecord) -> None:
        recorded = account.follow(self._fingerprint)
        if recorded == self._fingerprint:
            return
        # Another fingerprint was recorded after the record was lost (with the state: FLUSHALL, a
        # restart without data). Count where the fleet counts; the epoch we knew stays ours, so
        # the next call proves the loss on those keys too and holds the fleet.
        keys = list(self._key_names.limiter(AccountKey(recorded)))
        with self._lock:
            self._keys, self._fingerprint = keys, recorded
            self._reply = None  # the other keys' clock has a skew of its own
            self._paused_until = (0, 0.0)  # and a pause of its own, learned at the next reply
        log.warning("destination %s: its throttle state is recorded under another token fingerprint (Redis lost "
                    "its data and a replica started with a rotated token); this replica's limiter moves there",
                    account.destination, extra={"reason": "account_moved"})

    def pause(self, seconds: float) -> float:
        """Stop the whole fleet's slots for `seconds` (a 429 from Pisano); how long it stays paused."""
        paused_s = seconds
        for _ in range(PAUSE_TRIES):
            with self._lock:
                keys, reply = self._keys, self._reply
            sent = time.monotonic()
            until, now = self._paused_by(keys, reply, seconds)
            paused_s = max(0, int(until) - int(now)) / 1000
            if self._paused(until, sent, time.monotonic(), keys):
                break
            # The heartbeat moved this limiter to another token's keys while the pause was on its
            # way (`_follow_account`): the fleet counts there now, so the pause goes there too
            # (found by review: it paused only the keys just left). A move is rare: once, mostly;
            # bounded all the same (the next 429 pauses the keys of that moment).
        log.warning("Pisano throttled us: fleet paused for %.1fs", seconds, extra={"wait_ms": round(seconds * 1000)})
        return paused_s

    def _paused_by(self, keys: list[str], reply: tuple[int, float] | None, seconds: float) -> tuple[Any, Any]:
        """lua/pause.lua's answer, {pause end, now}: with the step's evidence, as `_run` sends it
        (the script takes the step out before it reads the clock)."""
        return tuple(self._evaluated(self._pause, keys, lambda: [
            max(1, round(seconds * 1000)), *_step_evidence(reply, time.monotonic())]))

    def paused_until_ms(self) -> int:
        return self._paused_until[0]

    def _paused(self, raw: Any, sent: float, received: float, keys: list[str]) -> bool:
        """Note the pause's end a reply showed (its call sent at `sent`, its reply back at
        `received`, monotonic); False when `keys` are no longer this limiter's (a reply of the
        keys just left, `_follow_account`: another state, another clock), noting nothing.

        Redis runs the calls one at a time, yet this replica only knows that each ran within its
        round trip. A call sent after the reply the end was taken from came back ran after it:
        its end is the newer one, taken as it is, even when lower (a clock stepped back brings a
        pause's end back too, lua/acquire.lua: a larger end kept from before would make every
        slot granted after it look inside a pause, each given up in turn). A call sent before may
        have run before: its reply may show the end from before a pause that reply came back
        after (another thread's reservation, the heartbeat, crossing this replica's own 429), so
        the later end of the two is kept. Not the order of arrival (found by review: such a
        reply put the older end back for up to a second, and a request holding a slot inside the
        pause left into it), nor a stamp on the fleet's clock (it goes back with Redis's clock).
        A later end kept for nothing costs a slot given up, until the next call sent after it."""
        until = int(raw or 0)
        with self._lock:
            if keys is not self._keys:
                return False
            end, since = self._paused_until
            if sent >= since:
                self._paused_until = (until, received)
            elif until > end:
                self._paused_until = (until, since)
            return True

    def stage_pause_read(self) -> Step[None]:
        """Read the fleet's pause's end in a round trip made anyway (the claims' before a POST:
        consumer/delivery/claims.py), and note it: a pause another replica set since this one's
        last reply is then known right before the POST, with no round trip of its own. One HGET
        of the meta key, in the trip's pipeline (on a cluster, to the meta key's master, sent with
        the other masters' packets: still one round trip)."""
        with self._lock:
            keys = self._keys
        sent = time.monotonic()

        def read(replies: list[Any]) -> None:
            until = 0 if replies[0] is None else stored_number(stored_text(replies[0]))
            if until is not None:  # a value no version writes (by hand): the next script's reply says
                self._paused(until, sent, time.monotonic(), keys)

        return Step.remote("the throttle's pause", self.client,
                           [Call([keys[1]], ["pause_until"], command="HGET")], read)

    def utilisation(self) -> dict[RateWindow, float]:
        """Share of each window's limit reserved in the window ending now (for metrics)."""
        with translated("reading the limiter"):
            _seconds, _micros, *counts = self._utilisation(keys=self._keys, args=[w.period_ms for w in self.windows])
        return {w: int(count) / w.limit for w, count in zip(self.windows, counts, strict=True)}

    def _evaluated(self, script: Any, keys: list[str], args: Callable[[], list[Any]]) -> Any:
        """A script's reply, its arguments read by `args` last before each sending. Not
        Script.__call__'s reload, which sends the same arguments again: the step's evidence is read
        anew after a NOSCRIPT reload (found by review: its round trips were taken for a step)."""
        with translated("the throttle"):
            try:
                return self.client.evalsha(script.sha, len(keys), *keys, *args())
            except NoScriptError:
                script.sha = self.client.script_load(script.script)
                return self.client.evalsha(script.sha, len(keys), *keys, *args())

    def _run(self, *, reserve: bool, pace_ms: int = 0,
             prepare_ms: int = 0) -> tuple[int, int, int, float, float]:
        """(status, wait ms, slot ms, when the call was sent, when its answer came back)."""
        with self._lock:
            epoch, seq_seen, keys, reply = self._epoch, self._seq, self._keys, self._reply

        sent = 0.0

        def args() -> list[Any]:
            # Read for each sending, the step's evidence with them (`_step_evidence`).
            nonlocal sent
            sent = time.monotonic()  # the last sending's: its state read comes after this
            return [epoch, seq_seen, self.margin_ms, self.horizon_ms, self.grace_ms, 1 if reserve else 0,
                    max(0, pace_ms), pace_lead_ms(pace_ms) + max(0, prepare_ms), max(0, prepare_ms),
                    LEGACY_HORIZON_MS, *_step_evidence(reply, sent), *self._window_args]

        result = self._evaluated(self._acquire, keys, args)
        status, wait_ms, raw_epoch, slot_ms, seq, raw_event, now_ms, stepped_ms = result[:8]
        # The pause's end (lua/acquire.lua); a reply without it (a test's script) says no pause.
        paused_until = result[8] if len(result) > 8 else 0
        received = time.monotonic()
        self._paused(paused_until, sent, received, keys)
        new_epoch, event = stored_text(raw_epoch), stored_text(raw_event)
        with self._lock:
            if keys is not self._keys:
                pass  # an answer of the keys we just left (`_follow_account`): not what we know of the new ones
            else:
                if new_epoch != self._epoch:
                    self._epoch, self._seq = new_epoch, int(seq)
                else:
                    self._seq = max(self._seq, int(seq))
                if self._reply is None or received >= self._reply[1]:
                    self._reply = (int(now_ms), received)
        if int(stepped_ms):
            # Up to the step: a reply held up (a replica starved of CPU) reads the same, and is
            # taken out too, which only slows the fleet once (lua/acquire.lua, 'step').
            log.warning("Redis's clock ran %.3fs ahead of this replica's between two calls: a forward step of "
                        "Redis's clock (a failover to a node whose clock is ahead, an NTP step) or a reply held up "
                        "that long (a replica short of CPU, a slow network); taken out of the throttle's clock, no "
                        "window is affected. If it recurs, check the clocks and NTP of the Redis hosts and the "
                        "replicas' CPU", int(stepped_ms) / 1000, extra={"reason": "clock_step"})
        if event in _FENCES:
            # The fleet holds from now; say why and for how long (no token: keys carry a fingerprint).
            log.warning("%s: no throttle slot for anyone for %.1fs", _FENCES[event], max(0, wait_ms) / 1000,
                        extra={"reason": event, "wait_ms": wait_ms})
        return int(status), int(wait_ms), int(slot_ms), sent, received

    def _call(self, script: Any, args: list[Any], keys: list[str] | None = None) -> Any:
        with translated("the throttle"):
            return script(keys=self._keys if keys is None else keys, args=args)



class LimiterHeartbeat:
    """Every second, each limiter reports what this replica knows of its state, busy or idle:
    a loss only a quiet replica can prove is then proven within the grace (`lua/acquire.lua`)."""

    def __init__(self, limiters: Sequence[Limiter], interval_s: float = HEARTBEAT_S) -> None:
        self.limiters = list(limiters)
        self.interval_s = interval_s
        self._stop = threading.Event()
        # As long-lived as the process, so watched (`long_lived`: a build watches it): a dead one
        # leaves a lost throttle state unproven (consumer/operations/health.py).
        self._thread = long_lived(self._run, name="limiter-heartbeat", role="limiter_heartbeat")

    @property
    def thread(self) -> LongLivedThread:
        """The beating thread, for the liveness watch (consumer/operations/health.py)."""
        return self._thread

    def start(self) -> None:
        if self.limiters:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)  # a beat in flight ends within the socket timeout

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for limiter in self.limiters:
                try:
                    limiter.heartbeat()
                except StateStoreError:
                    pass  # Redis down: the senders report it; the next beat tries again
                except Exception:  # the heartbeat must outlive any surprise, or fences go unproven
                    log.exception("limiter heartbeat error; continuing")


def _step_evidence(reply: tuple[int, float] | None, sending: float) -> list[Any]:
    """What a script needs to measure a forward step of Redis's clock (lua/acquire.lua, 'step'):
    our previous reply's fleet clock, the monotonic ms from its arrival to `sending` (read last
    before sending: anything later only makes the gain larger, safe; anything earlier, a reload's
    round trips, would be a false step), and the tolerance. Nothing measured on a first call."""
    if reply is None:
        return ["", "", STEP_TOLERANCE_MS]
    return [reply[0], int((sending - reply[1]) * 1000), STEP_TOLERANCE_MS]
