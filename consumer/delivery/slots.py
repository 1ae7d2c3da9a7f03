"""Reserving throttle slots for a destination's sender threads, and for requests outside them.

A slot's time arrives as a wait measured on Redis's clock, so only a duration crosses machines:
clock skew between replicas does not matter. That wait counts from the moment the script ran,
somewhere within the call's round trip, so a `Slot` carries both ends: a POST never leaves before
the later one, and its lateness counts from the earlier one (a reply held back would otherwise
make a POST late unseen). A slot further away than the horizon is refused
with its wait; then no thread of this sender asks again until the slot would be within reach,
so a replica holds no far slot and does not hammer Redis.

A *paced* reservation (a batch that is not full, `consumer/delivery/pacing.py`) first waits on
this process's clock for the fleet's next paced turn as the last answer gave it, so that it asks
Redis once per request; the script refuses a turn that is not due (another replica took it) with
the wait to the next one. While it waits, `turn_wait` may end the pace (a full batch came): the
request then takes the earliest allowed slot like any other.

`ready` is the one way to a POST: it renews the request's claims inside the slot's lead time,
then sleeps to the slot, so Redis round trips never push a POST past its slot; a request that
would still leave late takes a new slot and renews again (ARCHITECTURE.md invariants 2 and 3).
Its "go" carries the latest moment the POST may leave, which the client checks again at the wire
(`Readiness.leave_by`): what runs between the two comes out of the margin no more.
While it waits, for a slot or for the lead time, its heartbeat keeps its claims alive
(`consumer/delivery/heartbeat.py`; not from the renewal to the slot, where a beat would make the
POST late); a claim the heartbeat finds lost ends it as a failed renewal does.

A request outside the sender threads (the circuit's token probe, `check`'s probe and
`check --campaigns`' empty requests) counts at Pisano all the same: `send_in_slot` is its one way
there, with the same checks (the reply's lateness, the wake-up's, then the wire's) and the same
answer to a slot missed (a new slot, the missed one counted where there are metrics).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeVar

from consumer.delivery.heartbeat import Heartbeat
from consumer.delivery.outage import RedisOutage
from consumer.errors import SlotMissed, StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.limiter import Grant, Limiter

# Work for a request (taking its batch, claiming or renewing its ids, building its body) starts
# this long before its slot, so that at the slot only the POST remains: requests reach Pisano a
# steady moment after their slots, and the throttle margin only has to cover the network.
PREPARE_LEAD_S = 0.2
# A sleeping thread wakes a few milliseconds after its slot whatever it does; lateness below this
# is that noise, not preparation overrunning the slot (with PISANO_RATE_MARGIN_MS=0 every request
# would otherwise count as late and take slot after slot).
LATENESS_FLOOR_S = 0.02
# A sender whose connection pool holds no idle connection to Pisano sets one up this long before
# its slot (name lookup, TCP, TLS: a few round trips to a distant Pisano), until the renewal's lead.
CONNECT_LEAD_S = 1.0
LATE_LOG_EVERY_S = 60.0  # a machine too slow for the margin says so once a minute, not per slot
# A slot given up because its reply came back later than the lateness allowed stops this sender's
# reservations for this long, doubling while replies stay late (up to the most): every slot counts
# at Pisano, so a replica that cannot use its slots on time must not go on taking them from the
# replicas that can. A single late reply (a stall) costs the first; a Redis slow for this replica
# costs at most one slot per LATE_REPLY_PAUSE_MAX_S once the pause has grown.
# A request found late at the wire (its slot lost, `missed`) pauses them the same way: a replica
# short of CPU must not go on taking slots it cannot use either.
LATE_REPLY_PAUSE_S = 0.25
LATE_REPLY_PAUSE_MAX_S = 30.0
LATE_REPLY_POLL_S = 0.05  # meanwhile, how often the other threads look whether they may ask again

log = logging.getLogger(__name__)
# A renewal (or the claim) made at most this long before a POST leaves covers it: the claim's lease
# outlives the longest request by a margin (Settings.claim_lease_margin_ms, 10 s), so renewing
# nearer the slot buys nothing. Any nearer bound loses a request on a slow Redis: a renewal that
# overruns its slot's lead time makes the request take the next slot, which the limiter grants a
# lead time after that renewal; renewing for it would overrun it again, slot after slot.
RENEWAL_REACH_S = 2.0
# A paced request that has waited this many paces for a turn takes the earliest allowed slot, like
# a full batch: another replica's backlog reserves slot after slot, each the fleet's newest, and a
# turn a pace after the newest would never come (the windows still hold: only the pace is dropped).
PACE_PATIENCE_TURNS = 3
Ready = Literal["go", "refused", "stopped", "emptied"]
T = TypeVar("T")


class Readiness(NamedTuple):
    state: Ready
    # With "go" under a throttle: the latest moment the POST's first byte may leave in its slot,
    # checked at the wire (consumer/delivery/request_deadline.py). None: any time.
    leave_by: float | None = None


@dataclass(frozen=True)
class Slot:
    """A reserved slot on this process's monotonic clock: no later than `at`, no earlier than
    `at - doubt`. The limiter's script measured it as a wait from when it ran, which this process
    only knows lies between the call's sending and its reply's arrival (`Grant.round_trip_s`).
    A POST leaves no earlier than `at`, so never before its slot; it is late by how long after
    the earliest it leaves. A reply that came back late (this process descheduled while Redis
    answered, a congested link) is doubt, not lateness: counted from `at` alone, the POST would
    reach Pisano that much after its slot, unseen, among the requests of later slots."""

    at: float
    doubt: float = 0.0
    # The slot on the fleet's clock, as the limiter granted it (None: not the limiter's, e.g. a
    # test's): compared with the fleet's pause (`inside_pause`).
    fleet_ms: int | None = None

    def late_s(self, now: float) -> float:
        """How long after the slot's earliest possible moment `now` is."""
        return now - self.at + self.doubt

    def leave_by(self, allowed_s: float | None) -> float | None:
        """The latest moment a request may leave in this slot, `allowed_s` late (None: any time)."""
        return None if allowed_s is None else self.at - self.doubt + allowed_s

    @classmethod
    def of(cls, grant: Grant) -> Slot:
        """A granted slot on this process's clock: its wait counted from the reply's arrival,
        doubted by the call's round trip."""
        return cls(grant.received_at + grant.wait_s, grant.round_trip_s, grant.slot_ms)

    def inside_pause(self, limiter: Limiter) -> bool:
        """Whether a 429 paused the fleet, after this slot was granted, past it: the limiter grants
        no slot inside a pause it knows, so only a pause begun later can cover one (both on the
        fleet's clock, so no round trip's doubt enters the comparison)."""
        return self.fleet_ms is not None and self.fleet_ms < limiter.paused_until_ms()


def lateness_allowed_s(limiter: Limiter) -> float | None:
    """How late after its slot a request may leave: half of PISANO_RATE_MARGIN_MS, never below
    LATENESS_FLOOR_S (None: no throttle, any time is fine)."""
    return max(LATENESS_FLOOR_S, limiter.margin_ms / 2000) if limiter.windows else None


def late_pause_s(before: int) -> float:
    """The pause after a slot given up as late when `before` were given up in a row before it:
    LATE_REPLY_PAUSE_S, doubled by each, up to LATE_REPLY_PAUSE_MAX_S."""
    return min(LATE_REPLY_PAUSE_MAX_S, LATE_REPLY_PAUSE_S * 2.0 ** min(before, 16))


@dataclass(frozen=True)
class NoSlot:
    """Why a request outside the sender threads found no slot it could use within its time."""

    why: str


def send_in_slot(limiter: Limiter, within_s: float, send: Callable[[float | None], T], *,
                 warm: Callable[[float], object] | None = None,
                 wasted: Callable[[], object] | None = None) -> T | NoSlot:
    """The one way to Pisano for a request outside the sender threads (the circuit's token probe,
    `check`'s probe, `check --campaigns`' empty requests): reserve a slot, waiting out fences and
    far slots, sleep to it, then `send(leave_by)`, the latest moment its first byte may leave
    (PisanoClient.send checks it at the wire, as a sender's). A slot that cannot be used on time
    (`sleep_to_slot`: its reply came back, or this thread woke, too late; or the request was late
    at the wire, SlotMissed: nothing left) is given up, counted by `wasted`, and the request
    takes another, as a sender's does, while `within_s` lasts: a missed slot is no answer from
    Pisano. `warm`: sets up a connection to Pisano before a slot (PisanoClient.warm).
    Returns what `send` returned (anything it raises but SlotMissed passes), or NoSlot: why no
    slot served within `within_s`."""
    deadline = time.monotonic() + within_s
    given_up = 0  # slots given up so far: the wait before the next doubles with each
    while True:
        grant = limiter.acquire()
        if not grant.granted:
            if time.monotonic() + grant.wait_s > deadline:
                return NoSlot(f"no throttle slot within {within_s:.0f}s (next in {grant.wait_s:.0f}s); "
                              "try again later")
            time.sleep(min(grant.wait_s, 5.0) or 0.05)
            continue
        ready = sleep_to_slot(grant, limiter, warm=warm)
        if ready.state == "go":
            try:
                return send(ready.leave_by)
            except SlotMissed:
                pass  # nothing of it left; its slot is lost all the same
        if wasted is not None:
            wasted()
        if time.monotonic() > deadline:
            return NoSlot(f"no throttle slot usable on time within {within_s:.0f}s: the request could not leave "
                          "within half of PISANO_RATE_MARGIN_MS of its slot (Redis slow to answer, a connection "
                          "to Pisano slow to set up, or a busy machine); check Redis's latency and the way to "
                          "Pisano, or raise PISANO_RATE_MARGIN_MS")
        # Not the next slot at once: while Redis's replies come back late (or this machine wakes
        # late) every slot asked for would be given up too, each one taken from the fleet's budget
        # for nothing, as fast as Redis answers. A wait as a sender's (`SlotReserver._late_reply`).
        time.sleep(min(late_pause_s(given_up), max(0.0, deadline - time.monotonic())))
        given_up += 1


def sleep_to_slot(grant: Grant, limiter: Limiter, sleep: Callable[[float], object] = time.sleep,
                  warm: Callable[[float], object] | None = None) -> Readiness:
    """For a request that takes its slot outside the sender threads (`send_in_slot`): sleep to
    the granted slot, setting up a connection before it as a sender does (`warm`, when given
    and under a throttle). "go": leave now, within the lateness allowed, the first byte not after
    its `leave_by`; "refused": the slot cannot be used on time (its reply came back, or this
    thread woke, later than that) and is given up, as `SlotReserver` gives it up: its request
    must not leave in it."""
    slot, allowed = Slot.of(grant), lateness_allowed_s(limiter)
    if allowed is not None and slot.doubt > allowed:
        return Readiness("refused")
    if warm is not None and allowed is not None:
        sleep(max(0.0, slot.at - CONNECT_LEAD_S - time.monotonic()))
        warm(slot.at - PREPARE_LEAD_S - time.monotonic())
    sleep(max(0.0, slot.at - time.monotonic()))
    if allowed is not None and slot.late_s(time.monotonic()) > allowed:
        return Readiness("refused")
    return Readiness("go", slot.leave_by(allowed))


class SlotReserver:
    def __init__(self, limiter: Limiter, metrics: Metrics, stop: threading.Event, outage: RedisOutage,
                 horizon_s: float, destination: str, max_lateness_s: float | None = None,
                 pace_ms: int = 0, warm: Callable[[float], None] | None = None) -> None:
        self.limiter = limiter
        # Sets up a connection to Pisano before a slot, given the time it may take (PisanoClient.warm).
        self.warm = warm
        self.metrics = metrics
        self.dm = metrics.destination(destination)
        self.stop = stop
        self.outage = outage
        self.horizon_s = horizon_s
        # How late after its slot a POST may still leave (None: no throttle, any time is fine).
        self.max_lateness_s = None if max_lateness_s is None else max(LATENESS_FLOOR_S, max_lateness_s)
        self._blocked_until = 0.0  # shared by the threads: the next slot is beyond the horizon until then
        # The fleet's pace (0: none) and its next paced turn as last seen (monotonic; shared by the threads).
        self.pace_ms = pace_ms if limiter.windows else 0
        self._turn_at = 0.0
        # With a throttle, no slot sooner than the preparation's lead: a request prepared after an
        # immediate slot (a claim of 5000 ids on a busy machine) would leave late and lose it.
        self._prepare_s = PREPARE_LEAD_S if max_lateness_s is not None else 0.0
        self._late_said_at = -LATE_LOG_EVERY_S
        self._paused_said_at = -LATE_LOG_EVERY_S  # when a slot inside a pause was last said (`_paused_over`)
        # Slots given up in a row for their late replies (shared by the threads), and when the
        # pause they set began: a call already under way then is no new evidence.
        self._late_replies = 0
        self._late_paused_at = -LATE_REPLY_PAUSE_MAX_S
        self._late_lock = threading.Lock()  # held by the one thread asking while replies come back late
        # Requests found late at the wire in a row (shared by the threads), and when their pause ends.
        self._misses = 0
        self._miss_pause_until = 0.0

    def reserve(self, turn_wait: Callable[[float], bool] | None = None,
                heartbeat: Heartbeat | None = None) -> Slot | None:
        """Reserve a slot (None if stopping, or if `heartbeat`, the waits of a request holding
        claims, found one lost). A slot whose reply took longer than the lateness allowed is given
        up at once: wherever the slot lies in that round trip, no POST can be sure to be on time;
        then this sender pauses its reservations (`_late_reply`), one thread asking at a time.

        `turn_wait`: a paced request (when the sender paces); it is called to wait up to that many
        seconds for the pace's turn and returns True if the request is no longer paced."""
        pace_ms = self.pace_ms if turn_wait is not None else 0
        patience_at = time.monotonic() + PACE_PATIENCE_TURNS * pace_ms / 1000
        wait = heartbeat.wait if heartbeat is not None else self.stop.wait
        while not self.stop.is_set() and not (heartbeat is not None and heartbeat.lost):
            blocked = self._blocked_until - time.monotonic()
            if blocked > 0:
                wait(min(blocked, 1.0))
                continue
            if pace_ms and time.monotonic() >= patience_at:
                pace_ms = 0  # waited long enough for a turn: no longer paced
            if pace_ms and turn_wait is not None:
                ahead = self._turn_at - self._prepare_s - time.monotonic()  # the turn's slot, less the lead
                if ahead > 0:
                    if turn_wait(min(ahead, max(0.0, patience_at - time.monotonic()))):
                        pace_ms = 0
                    continue
            # While replies come back late, one thread at a time asks: each late reply costs a slot.
            alone = self._late_replies > 0
            if alone and not self._late_lock.acquire(blocking=False):
                wait(LATE_REPLY_POLL_S)
                continue
            try:
                grant = self.limiter.acquire(pace_ms, round(self._prepare_s * 1000))
            except StateStoreError as exc:
                failed: StateStoreError | None = exc
            else:
                failed = None
            finally:
                if alone:  # before an outage's wait: another thread may ask meanwhile
                    self._late_lock.release()
            if failed is not None:
                self.outage.failed("throttle", failed, wait)  # a cluster's dedup masters may still answer
                continue
            self.outage.recovered()
            self.dm.throttle_fenced.set(1 if grant.held else 0)
            if grant.paced:  # another request took the turn: wait for the next one
                self._turn_at = max(self._turn_at, time.monotonic() + grant.wait_s)
                continue
            if not grant.granted:
                self.dm.throttle_refusals.inc()
                # A fence holds every slot until its end; a far slot comes within reach earlier.
                ahead = grant.wait_s if grant.held else grant.wait_s - self.horizon_s
                self._blocked_until = time.monotonic() + max(0.05, ahead)
                continue
            self.dm.throttle_slots.inc()
            self.metrics.throttle_wait.observe(grant.wait_s)
            slot = Slot.of(grant)
            if self.pace_ms:  # any reservation is the newest for a while: the next turn is a pace after it
                self._turn_at = max(self._turn_at, slot.at + self.pace_ms / 1000)
            if self.max_lateness_s is not None and slot.doubt > self.max_lateness_s:
                pause = self._late_reply(grant.received_at - grant.round_trip_s)
                self._wasted("a request's throttle slot came back %.0f ms after it was asked for (it may "
                             "have passed by as much)", slot.doubt,
                             f"it was given up, and this replica asks for no slot for {pause:.2f}s (longer while "
                             "replies stay late, so it takes no budget it cannot use)")
                continue
            self._late_replies = 0
            return slot
        return None

    def _late_reply(self, sent_at: float) -> float:
        """A slot given up for its late reply (its call sent at `sent_at`, monotonic): no
        reservation by this sender for a pause, doubled by each late reply to a call sent after
        the last pause began (calls already under way then, one per thread, are no new evidence).
        Returns the pause in effect."""
        now = time.monotonic()
        if sent_at >= self._late_paused_at:
            pause = late_pause_s(self._late_replies)
            self._late_replies += 1
            self._late_paused_at = now
            self._blocked_until = max(self._blocked_until, now + pause)
        return max(0.0, self._blocked_until - now)

    def _wasted(self, why: str, late_s: float, then: str = "it took a new slot") -> None:
        """A slot given up as (possibly) late: counted, and said once a minute. `why` ends with
        "%.0f ms", the lateness; `then` says what the request did instead."""
        self.dm.throttle_wasted.inc()
        now = time.monotonic()
        if now - self._late_said_at < LATE_LOG_EVERY_S:
            return
        self._late_said_at = now
        assert self.max_lateness_s is not None
        log.warning(why + ", more than the %.0f ms allowed (PISANO_RATE_MARGIN_MS / 2): " + then + ". "
                    "If throttle_slots_wasted_total keeps growing, the replica is short of CPU or Redis is slow: "
                    "give it CPU, or raise PISANO_RATE_MARGIN_MS", late_s * 1000, self.max_lateness_s * 1000)

    def _paused_over(self) -> None:
        """A slot a 429 paused the fleet over (reserved up to the horizon ahead, before the pause
        began) is given up, and the request takes a new one, which the limiter grants after the
        pause: sent in it, it would hear 429 and pause the fleet again, its events dead-lettered
        once their retries ran out. Not sent at the pause's end in the old slot either: the log
        counts it where it was granted, and windows ending later would not count it at all. The
        old slot stays in the log (counted, never used: no window can be exceeded by it), and is
        counted wasted. The claims are kept: `ready`'s waits for the new slot are the heartbeat's,
        and its renewal before the POST renews them when the new slot lies beyond their reach,
        as for a retry's slot."""
        self.dm.throttle_wasted.inc()
        now = time.monotonic()
        if now - self._paused_said_at >= LATE_LOG_EVERY_S:  # once a minute, as the late slots
            self._paused_said_at = now
            log.info("a request's throttle slot lies inside the fleet's pause after Pisano answered 429 (the slot "
                     "was reserved before the pause began): it was given up, and the request takes a slot after "
                     "the pause", extra={"reason": "slot_inside_pause"})

    def missed(self, error: SlotMissed) -> None:
        """A request found late at the wire (`ready`'s "go" came in time, its bytes would not
        have): not sent, its slot given up. This sender then asks for no slot for a pause, doubled
        by each miss after the pause ended, until a request leaves on time (`left`): misses during
        the pause are of slots reserved before it (one per thread), no new evidence."""
        assert self.max_lateness_s is not None
        now = time.monotonic()
        if now >= self._miss_pause_until:
            pause = late_pause_s(self._misses)
            self._misses += 1
            self._miss_pause_until = now + pause
            self._blocked_until = max(self._blocked_until, self._miss_pause_until)
        self._wasted("a request's first byte was ready %.0f ms after its throttle slot",
                     self.max_lateness_s + error.over_s,
                     f"it was not sent, and this replica asks for no slot for {self._miss_pause_until - now:.2f}s "
                     "(longer while its requests stay late, so it takes no budget it cannot use)")

    def left(self) -> None:
        """A request left in its slot (whatever its answer): the misses at the wire are no longer in a row."""
        self._misses = 0

    def ready(self, slot: Slot | None, renew: Callable[[], bool], *, fresh: float | None = None,
              heartbeat: Heartbeat | None = None, screen: Callable[[float], bool] | None = None,
              on_pause: Callable[[], bool] | None = None) -> Readiness:
        """Be ready to POST at `slot` (a new slot is reserved when None): sleep to the slot's
        lead time, `renew` the claims there, sleep to the slot. `fresh`: when (monotonic) the claims
        were taken for this slot; no renewal is needed while the POST leaves (at the slot, or now if
        that is later) within RENEWAL_REACH_S of them, nor of a renewal. Every sleep up to that
        renewal is the `heartbeat`'s: it keeps the claims alive meanwhile, and a claim it finds lost
        is "refused"; the sleep from it to the slot beats no more (it would make the POST late).

        If preparing overran the slot, or the thread woke from its sleep, more than
        `max_lateness_s` after it (a slow Redis, a busy CPU; counted from the slot's earliest
        possible moment, `Slot`), the request could reach Pisano after
        a later slot's request and break a window: it takes a new slot, and renews again only if
        that slot falls beyond the reach of the renewal just made.
        `screen`: the request's events weighed for their age (`admission.AgeScreen`), called with
        the longest the POST may still take to leave, after every wait but the last sleep to the
        slot (it may release claims: a Redis round trip, which must not make the POST late); False:
        no event is left to send.
        A slot a 429 paused the fleet over, after it was granted, is given up for one after the
        pause (`_paused_over`); `on_pause` is then called first (the request's `disarm`: its claims
        pending while it waits, so a replica killed meanwhile leaves its events free, not
        `ambiguous`), and the claims are renewed (armed) before the POST whatever their reach;
        False: the request must not be sent again ("refused").
        "go": POST now, its first byte not after `leave_by` (`missed` when it would be); "refused":
        a claim could not be renewed (do not send); "stopped"; "emptied": every event ended at the
        screen."""
        beats = heartbeat if heartbeat is not None else Heartbeat(self.stop)
        renewed_at = fresh
        while True:
            if slot is None:
                slot = self.reserve(heartbeat=beats)
                if slot is None:
                    return Readiness("refused" if beats.lost else "stopped")
            if slot.inside_pause(self.limiter):
                self._paused_over()
                slot = None
                if on_pause is not None:
                    if not on_pause():
                        return Readiness("refused")
                    renewed_at = None  # pending now: armed by the renewal before the POST
                continue
            # The connection is set up before the slot, not at it, where the wire's check would
            # find a request that had to set one up late (consumer/delivery/spare_connections.py).
            if self.warm is not None and self.max_lateness_s is not None:
                if beats.wait(max(0.0, slot.at - CONNECT_LEAD_S - time.monotonic())):
                    return Readiness("refused" if beats.lost else "stopped")
                self.warm(slot.at - PREPARE_LEAD_S - time.monotonic())
            # Reach counts to when the POST leaves: its slot, or now if preparing overran it (by
            # up to max_lateness_s, half of PISANO_RATE_MARGIN_MS, which the lease check ignores).
            renewing = renewed_at is None or max(slot.at, time.monotonic()) - renewed_at > RENEWAL_REACH_S
            if renewing and beats.wait(max(0.0, slot.at - PREPARE_LEAD_S - time.monotonic())):
                return Readiness("refused" if beats.lost else "stopped")
            # After the waits, before the renewal: an event too old by the time the POST may leave
            # is never sent, and its claim is released rather than renewed.
            if screen is not None:
                if not screen(max(0.0, slot.at - time.monotonic()) + (self.max_lateness_s or 0.0)):
                    return Readiness("emptied")
                # The screen may have taken long (its release retried through a Redis outage, up to
                # a minute): a POST planned within reach of the claims may no longer be. Without a
                # throttle no lateness check would catch it, and within max_lateness_s none does.
                renewing = renewing or renewed_at is None or \
                    max(slot.at, time.monotonic()) - renewed_at > RENEWAL_REACH_S
            if renewing:
                if not renew():
                    return Readiness("refused")
                renewed_at = time.monotonic()
            # Not the heartbeat's: the claims were renewed (or taken) within RENEWAL_REACH_S of
            # the POST, and a beat here (a Redis round trip) would make the POST late for its slot.
            if self.stop.wait(max(0.0, slot.at - time.monotonic())):
                return Readiness("stopped")
            # Checked after the last sleep, not before it: a thread given the CPU back late (a busy
            # machine) would otherwise POST late, after a later slot's request.
            late = slot.late_s(time.monotonic())
            if self.max_lateness_s is not None and late > self.max_lateness_s:
                self._wasted("a request was ready %.0f ms after its throttle slot", late)
                slot = None
                continue
            # Again at the slot: a 429 heard meanwhile (this replica's, or another's seen by the
            # limiter's heartbeat, at most a second old, or read by the claims' trip just made:
            # the first claim's or the renewal's, consumer/delivery/claims.py `pause_read`) paused
            # the fleet over it. Local, no round trip; given up at the loop's top, as a slot found
            # inside a pause there.
            if slot.inside_pause(self.limiter):
                continue
            return Readiness("go", slot.leave_by(self.max_lateness_s))
