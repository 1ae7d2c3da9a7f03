"""In-memory state for unit tests and single-process tools: the same contracts as the Redis
implementations (tests/contract/ runs both), with no server.

They are faithful models of the Lua scripts (`lua/claim.lua`, `lua/settle.lua`,
`lua/acquire.lua`, `lua/pause.lua`), not shortcuts: a sender unit test on these fakes exercises
the same decisions a fleet makes on Redis. State is per object: share one object between the
"replicas" of a test to model one Redis.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from consumer.config.windows import RateWindow
from consumer.state.arming import Arming
from consumer.state.dead_letters import MAX_PARTITION_MARKS, Mark, Origin, merged, oversize, scores
from consumer.state.dedup import (
    LEGACY_ATTEMPT,
    ClaimRequest,
    ClaimStatus,
    ClaimStatuses,
    Settlement,
    new_owner,
    new_tag,
)
from consumer.state.dedup_layout import SLICES
from consumer.state.limiter import (
    GRACE_MS,
    LEGACY_HORIZON_MS,
    MIN_HORIZON_MS,
    STEP_TOLERANCE_MS,
    Grant,
    fence_hold_ms,
    pace_lead_ms,
)
from consumer.state.redis import stored_number
from consumer.state.trip import Step

# As claim.lua's parse_claim: a claim that replaced an unknown mark records its attempt
# ("c|<tag>|u|<attempt>|<ms>"); any other claim is "c|<tag>|<ms>".
_CLAIM_OVER = re.compile(r"c\|(.*?)\|u\|(.*)\|([0-9]+)", re.S)
_CLAIM = re.compile(r"c\|(.*)\|([0-9]+)", re.S)
_OWN_OVER = re.compile(r"u\|(.*)\|[0-9]+", re.S)
# A pending claim (claim.lua, "Values"): its time, the value's last field, begins with '0'
_PENDING = re.compile(r"\|0[0-9]*\Z")
# A recorded claim lapsed by a replica of the former build: "u|<tag>|u|<attempt>", the claim's tag first
_LAPSED_RECORD = re.compile(r"u\|(.*?)\|u\|", re.S)


def _parse_claim(value: str) -> tuple[str, str | None, int] | None:
    """A claim value's owner tag, the attempt whose unknown mark it replaced, and when it was
    taken; None for a malformed claim."""
    match = _CLAIM_OVER.fullmatch(value)
    if match:
        return match.group(1), match.group(2), int(match.group(3))
    match = _CLAIM.fullmatch(value)
    return (match.group(1), None, int(match.group(2))) if match else None


def _replaced(value: str, mine: str) -> str | None:
    """The attempt whose unknown mark the caller's own claim `value` replaced (None: none)."""
    match = _OWN_OVER.fullmatch(value, len(mine))
    return match.group(1) if match else None


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Entry:
    value: str
    expires_at: int


class MemoryDedup:
    """`RedisDedup` in memory. Marks expire as the Redis layout's time slices do (dedup_layout.py):
    a mark written in slice `now // slice_ms` is forgotten at that slice's end plus the horizon."""

    def __init__(self, *, lease_ms: int, horizon_s: int, clock: Callable[[], int] = _now_ms,
                 shared: dict[str, _Entry] | None = None,
                 tombstones: dict[tuple[str, str], int] | None = None) -> None:
        self.lease_ms = lease_ms
        self.horizon_ms = horizon_s * 1000
        self.slice_ms = math.ceil(self.horizon_ms / SLICES)
        self.clock = clock
        self.owner = new_owner()
        self._marks: dict[str, _Entry] = {} if shared is None else shared
        # (tag, event id) -> expires at: ids released with their attempt's tombstone (settle.lua's
        # field "x<tag>", which lives with its slice)
        self._tombstones: dict[tuple[str, str], int] = {} if tombstones is None else tombstones
        self._lock = threading.Lock()

    def replica(self) -> MemoryDedup:
        """Another process's view of the same store (its own owner id)."""
        return MemoryDedup(lease_ms=self.lease_ms, horizon_s=self.horizon_ms // 1000, clock=self.clock,
                           shared=self._marks, tombstones=self._tombstones)

    def new_tag(self) -> str:
        return new_tag(self.owner)

    def claim(self, tag: str, requests: Sequence[ClaimRequest], arming: Arming = Arming.ARM,
              renewal: bool = False) -> ClaimStatuses:
        now = self.clock()
        mine = f"c|{tag}|"
        out, attempts = [], []
        with self._lock:
            for request in requests:
                value = self._get(request.event_id, now)
                attempt: str | None = None
                over: str | None = None  # the attempt whose unknown mark the claim replaces
                pending = arming is Arming.PENDING  # as claim.lua: its time written with a leading '0'
                expired = False
                own = False  # the caller's claim, renewed
                if not renewal and self._tombstones and self._buried(tag, request.event_id, now):
                    status = ClaimStatus.HELD  # as claim.lua: this attempt's late first claim takes nothing
                elif value is None:
                    status = ClaimStatus.CLAIMED
                elif value.startswith(mine):  # a retry or renewal keeps what the first run replaced
                    status, over, own = ClaimStatus.CLAIMED, _replaced(value, mine), True
                    if arming is Arming.KEEP:
                        pending = _PENDING.search(value) is not None
                elif value == "d":
                    status = ClaimStatus.DELIVERED
                elif value == "u":
                    attempt = LEGACY_ATTEMPT
                elif value.startswith("u|"):
                    lapsed = _LAPSED_RECORD.match(value)  # as claim.lua: a former build's lapse of a recorded claim
                    attempt = lapsed.group(1) if lapsed else value[2:]
                else:
                    # As claim.lua's parse_claim: a malformed claim has no owner and time 0.
                    parsed = _parse_claim(value)
                    if parsed and parsed[0] in request.abandoned_by:
                        # as claim.lua: an attempt that gave it up unsent; what it replaced goes on
                        status, over = ClaimStatus.CLAIMED, parsed[1]
                    elif now - (parsed[2] if parsed else 0) < self.lease_ms:
                        status = ClaimStatus.HELD
                    elif parsed and _PENDING.search(value):
                        # as claim.lua: a lapsed pending claim sent nothing; what it replaced stands
                        if parsed[1]:
                            attempt, expired = parsed[1], True
                        else:
                            status = ClaimStatus.CLAIMED
                    else:
                        attempt, expired = parsed[0] if parsed else LEGACY_ATTEMPT, True
                if attempt is not None:
                    if request.replay_of and request.replay_of == attempt:
                        status, over = ClaimStatus.CLAIMED, attempt
                    elif attempt in request.abandoned_by:
                        # as claim.lua: what the lapsed claim replaced is lost; a replay assumes its own
                        status, over = ClaimStatus.CLAIMED, request.replay_of
                    else:
                        status = ClaimStatus.UNKNOWN
                        if expired and not renewal:  # a renewal writes nothing but its own claims
                            self._marks[request.event_id] = _Entry(f"u|{attempt}", self._expiry(now))
                if renewal and not own:
                    # as claim.lua's renewal mode: the caller's claim is gone, the id left as it is
                    if status is ClaimStatus.CLAIMED:
                        status = ClaimStatus.LOST
                elif status is ClaimStatus.CLAIMED:
                    stamp = f"0{now}" if pending else str(now)
                    value = f"{mine}u|{over}|{stamp}" if over else f"{mine}{stamp}"
                    self._marks[request.event_id] = _Entry(value, self._expiry(now))
                out.append(status)
                attempts.append(attempt if status is ClaimStatus.UNKNOWN and attempt is not None else "")
        return ClaimStatuses(out, attempts)

    def stage_claim(self, tag: str, requests: Sequence[ClaimRequest],
                    arming: Arming = Arming.ARM, renewal: bool = False) -> Step[ClaimStatuses]:
        return Step.local("the dedup claim", lambda: self.claim(tag, requests, arming, renewal))

    def stage_settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str],
                     tombstone: bool = False) -> Step[None]:
        if tombstone:
            return Step.local("the dedup update", lambda: self.settle(outcome, tag, event_ids, tombstone=True))
        return Step.local("the dedup update", lambda: self.settle(outcome, tag, event_ids))

    def settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str], tombstone: bool = False) -> None:
        now = self.clock()
        mine = f"c|{tag}|"
        with self._lock:
            for event_id in event_ids:
                value = self._get(event_id, now)
                if outcome is Settlement.RELEASED and tombstone:
                    self._tombstones[(tag, event_id)] = self._expiry(now)
                if outcome is Settlement.RELEASED:
                    if value is not None and value.startswith(mine):
                        over = _replaced(value, mine)
                        if over:  # as settle.lua: the unknown mark the claim replaced, and only that
                            self._marks[event_id] = _Entry(f"u|{over}", self._expiry(now))
                        else:
                            del self._marks[event_id]
                elif outcome is Settlement.DELIVERED:
                    self._marks[event_id] = _Entry("d", self._expiry(now))
                elif value != "d":
                    self._marks[event_id] = _Entry(f"u|{tag}", self._expiry(now))

    def state(self, event_id: str) -> str | None:
        with self._lock:
            return self._get(event_id, self.clock())

    def states(self, event_ids: Sequence[str]) -> list[str | None]:
        with self._lock:
            now = self.clock()
            return [self._get(event_id, now) for event_id in event_ids]

    def _expiry(self, now: int) -> int:
        return (now // self.slice_ms + 1) * self.slice_ms + self.horizon_ms

    def _buried(self, tag: str, event_id: str, now: int) -> bool:
        expires_at = self._tombstones.get((tag, event_id))
        if expires_at is not None and expires_at <= now:
            del self._tombstones[(tag, event_id)]
            return False
        return expires_at is not None

    def _get(self, event_id: str, now: int) -> str | None:
        entry = self._marks.get(event_id)
        if entry is None or entry.expires_at <= now:
            self._marks.pop(event_id, None)
            return None
        return entry.value


class MemoryPartitionMarks:
    """`consumer.state.dead_letters.PartitionMarks` in memory: per scope and partition, offset ->
    (fingerprint, score), each partition's marks gone `horizon_ms` after their last write (never: None).
    A load of more than `most` marks raises OversizeStateError, as Redis's (`read_sets`)."""

    def __init__(self, horizon_ms: int | None = None, clock: Callable[[], int] = _now_ms, *,
                 most: int = MAX_PARTITION_MARKS, what: str = "marks") -> None:
        self.horizon_ms = horizon_ms
        self.clock = clock
        self.most = most
        self.what = what
        self._sets: dict[tuple[str, str, int], tuple[dict[int, tuple[str, float]], float]] = {}
        self._lock = threading.Lock()

    def load(self, scope: str, tp: tuple[str, int]) -> dict[int, str]:
        return {offset: fingerprint for offset, (fingerprint, _) in self.load_scored(scope, tp).items()}

    def load_scored(self, scope: str, tp: tuple[str, int]) -> dict[int, tuple[str, float]]:
        with self._lock:
            marks = self._live((scope, *tp))
            if len(marks) > self.most:
                raise oversize(f"{scope}:{tp[0]}:{tp[1]}", len(marks), self.what, tp, self.most)
            return dict(marks)

    def mark(self, scope: str, origins: Sequence[Origin], scores: Sequence[float] | None = None) -> None:
        expires = math.inf if self.horizon_ms is None else self.clock() + self.horizon_ms
        with self._lock:
            for n, o in enumerate(origins):
                marks = self._live((scope, o.topic, o.partition))
                marks[o.offset] = (o.fingerprint, o.offset if scores is None else scores[n])
                self._sets[(scope, o.topic, o.partition)] = (marks, expires)

    def peek(self, scope: str, tp: tuple[str, int]) -> dict[int, tuple[str, float]]:
        """The partition's marks, unbounded: for lookups of some of them (Redis's ZMSCORE)."""
        with self._lock:
            return dict(self._live((scope, *tp)))

    def forget_below(self, scope: str, points: Mapping[tuple[str, int], int]) -> None:
        with self._lock:
            for tp, offset in points.items():
                marks = self._live((scope, *tp))
                for below in [n for n in marks if n < offset]:
                    del marks[below]

    def __len__(self) -> int:
        """How many marks are held (the memory they take)."""
        with self._lock:
            return sum(len(marks) for marks, _ in self._sets.values())

    def _live(self, key: tuple[str, str, int]) -> dict[int, tuple[str, float]]:
        marks, expires = self._sets.get(key, ({}, math.inf))
        if expires <= self.clock():
            del self._sets[key]
            return {}
        return marks


class MemoryDeadLetterMarks:
    """The dead-letter marks of `consumer.state.dead_letters.RedisDeadLetterMarks`, in memory: one
    group's for one dead-letter topic; `scoped` gives another's, in the same store."""

    def __init__(self, *, horizon_s: int, clock: Callable[[], int] = _now_ms, group: str = "",
                 dlq_topic: str = "", sets: MemoryPartitionMarks | None = None,
                 sending_sets: MemoryPartitionMarks | None = None, most: int = MAX_PARTITION_MARKS) -> None:
        self.sets = sets if sets is not None else MemoryPartitionMarks(
            horizon_s * 1000, clock, most=most, what="dead-letter marks")
        self.sending_sets = sending_sets if sending_sets is not None else MemoryPartitionMarks(
            horizon_s * 1000, clock, most=most, what="dead-letter marks")
        self.horizon_s = horizon_s
        self.scope = f"{group}:{dlq_topic}"

    def scoped(self, group: str, dlq_topic: str) -> MemoryDeadLetterMarks:
        return MemoryDeadLetterMarks(horizon_s=self.horizon_s, group=group, dlq_topic=dlq_topic, sets=self.sets,
                                     sending_sets=self.sending_sets)

    def seen(self, origins: Sequence[Origin]) -> list[bool]:
        loaded: dict[tuple[str, int], dict[int, str]] = {}
        for o in origins:
            if (o.topic, o.partition) not in loaded:  # a lookup, not a load: no bound (ZMSCORE's)
                loaded[(o.topic, o.partition)] = {offset: fingerprint for offset, (fingerprint, _)
                                                  in self.sets.peek(self.scope, (o.topic, o.partition)).items()}
        return [loaded[(o.topic, o.partition)].get(o.offset) == o.fingerprint for o in origins]

    def mark(self, origins: Sequence[Origin], reasons: Sequence[str] | None = None) -> None:
        self.sets.mark(self.scope, origins, scores(origins, reasons))

    def sending(self, origins: Sequence[Origin], reasons: Sequence[str]) -> None:
        self.sending_sets.mark(self.scope, origins, scores(origins, reasons))

    def load(self, tp: tuple[str, int]) -> dict[int, Mark]:
        return merged(self.sets.load_scored(self.scope, tp), self.sending_sets.load_scored(self.scope, tp))

    def forget_below(self, points: Mapping[tuple[str, int], int]) -> None:
        self.sets.forget_below(self.scope, points)
        self.sending_sets.forget_below(self.scope, points)

    def __len__(self) -> int:
        """Acknowledged marks held (those about to be produced: `sending_sets`)."""
        return len(self.sets)


@dataclass
class _LimiterData:
    """What Redis holds for one token: the log and the meta hash of `lua/acquire.lua`."""

    slots: list[int] = field(default_factory=list)
    epoch: str | None = None
    seq: int = 0
    fence_until: int = 0
    pause_until: int = 0
    beat: int = 0
    server: str = ""
    # The newest slot pushed, and how many entries of it the log ends with (at most keep): a log
    # without them lost reservations.
    last: int | None = None
    last_n: int = 1
    # The most entries, and the longest reach (period + margin), a live replica's windows need of
    # the log, with when one last said so (a replica with other windows keeps them).
    keep: tuple[int, int] | None = None
    reach: tuple[int, int] | None = None
    # The longest horizon a live caller uses, and when one last said so.
    horizon: tuple[int, int] | None = None
    # The seq this version's newest reservation was given (the previous version counts in `seq`
    # without it: while seq is past it, the newest slot may be one of its, at an unrecorded horizon).
    pushed: int | None = None
    # The last fence this version raised (another fence_until may be the previous version's).
    fenced: int | None = None
    # Subtracted from the clock: the fleet's clock, which a measured forward step does not move.
    skew: int = 0


@dataclass
class _LimiterState:
    """One "Redis": its data, and which server holds it (a restart or failover changes that)."""

    data: _LimiterData = field(default_factory=_LimiterData)
    server: str = "memory-0"
    lock: threading.Lock = field(default_factory=threading.Lock)

    # Losses, for the contract tests: the same events they cause on Redis.
    def snapshot(self) -> _LimiterData:
        with self.lock:
            return replace(self.data, slots=list(self.data.slots))

    def restore(self, data: _LimiterData) -> None:
        with self.lock:
            self.data = replace(data, slots=list(data.slots))

    def flush(self) -> None:
        with self.lock:
            self.data = _LimiterData()

    def restart(self) -> None:
        """Another server serves the same data (a restart that kept it, or a failover)."""
        with self.lock:
            self.server = f"memory-{int(self.server.rsplit('-', 1)[1]) + 1}"


class MemoryLimiter:
    """The exact multi-window limiter of `lua/acquire.lua`, first come first served, fence and pace included."""

    def __init__(self, windows: tuple[RateWindow, ...], *, margin_ms: int, horizon_ms: int,
                 grace_ms: int = GRACE_MS, clock: Callable[[], int] = _now_ms,
                 monotonic: Callable[[], float] | None = None, shared: _LimiterState | None = None) -> None:
        if not windows:
            raise ValueError("a MemoryLimiter needs at least one window; use NoLimiter for 'off'")
        self.windows = windows
        self.margin_ms = margin_ms
        self.horizon_ms = max(horizon_ms, MIN_HORIZON_MS)
        self.grace_ms = grace_ms
        self.clock = clock
        # The replica's own clock, against which a forward step of `clock` (Redis's) is measured:
        # a test's clock is also the true time, unless the test gives another (to step `clock`).
        self.monotonic = monotonic or (time.monotonic if clock is _now_ms else lambda: clock() / 1000)
        self.state = shared or _LimiterState()
        self._keep = max(w.limit for w in windows)
        self._reach = fence_hold_ms(windows, margin_ms=margin_ms, horizon_ms=0)
        self._epoch = ""
        self._seq = 0
        self._reply: tuple[int, float] | None = None  # as RedisLimiter's: the fleet clock's now, and when
        self.stepped = 0  # the last forward step this replica measured (RedisLimiter logs it)
        # The pause's end as this replica last learnt it (`paused_until_ms`), as RedisLimiter knows
        # it: from its own pauses, its replies and its staged reads, never from another replica's
        # pause before one of those.
        self._known_pause = 0

    def replica(self) -> MemoryLimiter:
        return MemoryLimiter(self.windows, margin_ms=self.margin_ms, horizon_ms=self.horizon_ms,
                             grace_ms=self.grace_ms, clock=self.clock, monotonic=self.monotonic, shared=self.state)

    def _now(self) -> int:
        """The fleet's clock, after taking out a forward step this call measures ('step' in
        lua/acquire.lua). Called under the state's lock; the reply is recorded by `_replied`."""
        data, reply = self.state.data, self._reply
        now = self.clock() - data.skew
        if reply is not None:
            gain = now - reply[0] - int((self.monotonic() - reply[1]) * 1000)
            if gain > STEP_TOLERANCE_MS:
                data.skew += gain
                now -= gain
                self.stepped = gain
        return now

    def _replied(self, now: int) -> None:
        self._reply = (now, self.monotonic())

    def acquire(self, pace_ms: int = 0, prepare_ms: int = 0) -> Grant:
        with self.state.lock:
            now = self._now()
            self._replied(now)
            data, keep, _reach = self._check(now)
            self._known_pause = data.pause_until
            if data.fence_until > now:
                return Grant(granted=False, wait_s=(data.fence_until - now) / 1000, slot_ms=data.fence_until,
                             held=True)
            slot = max(now + max(0, prepare_ms), data.pause_until, data.slots[-1] if data.slots else now)
            for window in self.windows:
                if len(data.slots) >= window.limit:
                    slot = max(slot, data.slots[-window.limit] + window.period_ms + self.margin_ms)
            if pace_ms > 0 and data.slots and data.slots[-1] + pace_ms > slot:
                turn = data.slots[-1] + pace_ms
                if turn - now > pace_lead_ms(pace_ms) + max(0, prepare_ms):
                    return Grant(granted=False, wait_s=(turn - now) / 1000, slot_ms=turn, paced=True)
                slot = turn
            wait = slot - now
            if wait > self.horizon_ms:
                return Grant(granted=False, wait_s=wait / 1000, slot_ms=slot)
            data.slots.append(slot)
            del data.slots[:-keep]
            data.last_n = min(data.last_n + 1, keep) if slot == data.last else 1
            data.last = slot
            data.seq += 1
            data.pushed = self._seq = data.seq
            return Grant(granted=True, wait_s=wait / 1000, slot_ms=slot)

    def heartbeat(self) -> None:
        with self.state.lock:
            now = self._now()
            self._replied(now)
            self._known_pause = self._check(now)[0].pause_until

    @staticmethod
    def _widest(stored: tuple[int, int] | None, own: int, lives: int, now: int) -> tuple[int, tuple[int, int]]:
        """The larger of ours and the stored need of a live replica (`widest` in lua/acquire.lua)."""
        if stored is not None and stored[0] > own and now - stored[1] <= lives:
            return stored[0], stored
        return own, (own, now)

    @staticmethod
    def _lacks_last(data: _LimiterData) -> bool:
        """The log no longer ends with the newest slot pushed, as often as it was (`log_lacks_last`)."""
        assert data.last is not None
        tail = data.slots[-1] if data.slots else -1
        if tail != data.last:
            return tail < data.last
        return len(data.slots) < data.last_n or data.slots[-data.last_n] != data.last

    def _check(self, now: int) -> tuple[_LimiterData, int, int]:
        """The fence of `lua/acquire.lua`: a proven loss holds the fleet, a doubt holds it briefly,
        a state further ahead than the clock allows (the clock stepped back) holds it and drops the
        log. Also the log's keep and reach that every live replica's windows need, and the longest
        horizon of a live caller."""
        data, caller_epoch, caller_seq = self.state.data, self._epoch, self._seq
        log_lives = (data.reach[0] if data.reach else 0) + self.horizon_ms + 60_000
        keep, stored_keep = self._widest(data.keep, self._keep, log_lives, now)
        reach, stored_reach = self._widest(data.reach, self._reach, log_lives, now)
        ahead, stored_ahead = self._widest(data.horizon, self.horizon_ms,
                                           (data.horizon[0] if data.horizon else 0) + 60_000, now)
        hold = ahead + reach
        # the previous version's slots, at a horizon it never recorded: up to any version's longest
        # (and its fence, held for that horizon): judged by the longest horizon of any version
        legacy_far = max(ahead, LEGACY_HORIZON_MS) + reach
        far_log = legacy_far if data.slots and data.pushed != data.seq else hold
        far_fence = legacy_far if data.fence_until > now and data.fenced != data.fence_until else hold

        def fence(until: int) -> None:
            if until > data.fence_until and until > now:
                data.fence_until = data.fenced = until

        if (data.slots and data.slots[-1] > now + far_log) or data.fence_until > now + far_fence + self.grace_ms:
            # Redis's clock stepped back, or the state was written by hand ('clock' in acquire.lua)
            data.fence_until = 0
            fence(now + max(far_log, far_fence))
            data.slots = []
            data.last, data.last_n = None, 1
            data.pushed = data.seq
            if data.beat > now and data.pause_until > now:  # less the step the last beat shows
                data.pause_until = max(now, data.pause_until - (data.beat - now))
        if data.epoch is None:
            data.epoch, data.seq = str(now), 0
            fence(now + (hold if caller_epoch else self.grace_ms))
        elif caller_epoch and caller_epoch != data.epoch:
            fence(now + hold)
        elif caller_seq > data.seq:
            fence(now + hold)
            data.seq = caller_seq
        elif data.last is not None and data.last + reach > now and self._lacks_last(data):
            fence(now + hold)  # the log alone was deleted or rolled back
            data.last, data.last_n = None, 1
        elif self.state.server != data.server or now - max(data.beat, data.fence_until) > self.grace_ms:
            fence(now + self.grace_ms)
        data.beat, data.server = now, self.state.server
        data.keep, data.reach, data.horizon = stored_keep, stored_reach, stored_ahead
        if data.epoch != caller_epoch:
            self._epoch, self._seq = data.epoch, data.seq
        else:
            self._seq = max(self._seq, data.seq)
        return data, keep, reach

    def pause(self, seconds: float) -> float:
        with self.state.lock:
            data = self.state.data
            # `_now`: a forward step not measured yet is taken out first, as lua/pause.lua does
            now = self._now()
            data.pause_until = max(data.pause_until, now + max(1, round(seconds * 1000)))
            self._known_pause = data.pause_until
            return (data.pause_until - now) / 1000

    def paused_until_ms(self) -> int:
        return self._known_pause

    def stage_pause_read(self) -> Step[None]:
        """The pause's end read in a trip made anyway (RedisLimiter's HGET), done in place."""

        def read() -> None:
            with self.state.lock:
                self._known_pause = self.state.data.pause_until

        return Step.local("the throttle's pause", read)

    def utilisation(self) -> dict[RateWindow, float]:
        # By binary search over the ascending log, as utilisation.lua does: the metrics read this
        # every few seconds and the log may hold a million slots.
        with self.state.lock:
            now, slots = self.clock() - self.state.data.skew, self.state.data.slots
            upto = bisect.bisect_right(slots, now)
            return {w: (upto - bisect.bisect_right(slots, now - w.period_ms, 0, upto)) / w.limit
                    for w in self.windows}


class MemoryCircuitStore:
    def __init__(self, clock: Callable[[], int] = _now_ms) -> None:
        self.clock = clock
        self._fields: dict[str, str] = {}
        self._cooldown_until = 0
        self._probe_until = 0
        self._probe_owner = ""
        self._lock = threading.Lock()

    def read(self) -> tuple[dict[str, str], int]:
        with self._lock:
            return dict(self._fields), self._cooldown_until - self.clock() if self._fields else -2

    def previous_cooldown_ms(self) -> int | None:
        with self._lock:
            value = self._fields.get("cooldown_ms")
        return stored_number(value)

    def write_open(self, fields: dict[str, str], cooldown_ms: int) -> None:
        with self._lock:
            self._fields = {**fields, "cooldown_ms": str(cooldown_ms)}
            self._cooldown_until = self.clock() + cooldown_ms
            self._probe_until = 0

    def try_probe(self, lease_ms: int) -> str | None:
        with self._lock:
            now = self.clock()
            if self._probe_until > now:
                return None
            self._probe_until, self._probe_owner = now + lease_ms, uuid.uuid4().hex
            return self._probe_owner

    def release_probe(self, owner: str) -> None:
        with self._lock:
            if self._probe_owner == owner and self._probe_until > self.clock():  # as Redis: a lapsed key is gone
                self._probe_until = 0

    def probe_held(self) -> bool:
        with self._lock:
            return self._probe_until > self.clock()

    def clear(self) -> None:
        with self._lock:
            self._fields, self._cooldown_until, self._probe_until = {}, 0, 0


class MemoryCircuitStores:
    """One MemoryCircuitStore per campaign (consumer.state.campaigns): share one object between
    the "replicas" of a test to model one Redis."""

    def __init__(self, clock: Callable[[], int] = _now_ms) -> None:
        self.clock = clock
        self._stores: dict[str, MemoryCircuitStore] = {}
        self._lock = threading.Lock()

    def __call__(self, campaign: str) -> MemoryCircuitStore:
        with self._lock:
            store = self._stores.get(campaign)
            if store is None:
                store = self._stores[campaign] = MemoryCircuitStore(self.clock)
            return store


class MemoryReceiptMarks(MemoryPartitionMarks):
    """The receipt marks of `consumer.state.receipt_marks.RedisReceiptMarks`, in memory (no expiry:
    a test's partitions are never abandoned)."""

    def __init__(self, horizon_ms: int | None = None, clock: Callable[[], int] = _now_ms, *,
                 most: int = MAX_PARTITION_MARKS) -> None:
        super().__init__(horizon_ms, clock, most=most, what="receipt marks")

    def receipted(self, group: str, tp: tuple[str, int]) -> dict[int, str]:
        return self.load(group, tp)
