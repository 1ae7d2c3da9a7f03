"""Noticing that Redis lost the dedup or the contact state (README, "When Redis loses its data").

The delivered marks are what stop a second SMS, and the contact marks what stop a second survey
within a phone's cooldown. Redis can lose them with no caller seeing an error: a restart without
persistence, FLUSHALL, keys deleted by hand, a failover to a replica that had not received them.
Nothing can bring them back, but the operators must hear of it from the consumer, not from a
customer surveyed twice.

So each bucket (the 64 dedup buckets, and the contact cooldown's 64 when it is on) has an
*origin*: a hash `<bucket tag>:origin` in the bucket's own slot, written once and never expiring,
so it is lost, and moves in a reshard, together with the bucket's marks. Its field `since` holds
the writer's time and a random part; a dedup bucket's also holds the layout's copy in `#`, as
every slice hash does (dedup_layout.py restores a lost layout key from such a copy).

Each replica's health probe asks for every origin every ORIGIN_CHECK_INTERVAL_S, writing one where
none is (HSETNX, then HGET: of replicas racing to write one, the first wins and all read it; plain
commands pipelined, one round trip per master), and remembers what it saw. An origin that
vanished (this call wrote a new one) or changed (another replica wrote a new one) since this
replica saw it proves that the bucket's keys were lost in between. A first sight proves nothing
(a first start, an upgrade from a build without origins, a loss while no replica ran): it is only
remembered.

Redis can also go back to an earlier state that held the origins: a restart from its last RDB
snapshot (no AOF), a restore from a backup, a failover to a replica far behind. The marks written
since are gone, the origins are not. So each call also counts one more check in the origin
(HINCRBY `checks`, every replica's); a count read now no higher than the one this replica read at the
check before its last proves that Redis went back to before that check (its own two checks since
are gone). The check before the last, not the last: an AOF written every second, or a failover's
replication lag, loses the last second or so, which is not what this says.

What a replica saw last is also stamped on every commit of its group, so that a replica starting
after a loss while none ran can compare (witness.py).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import redis

from consumer.errors import StateStoreError
from consumer.state.redis import Call, run_calls, stored_text, translated
from consumer.state.redis_errors import describe
from consumer.state.witness import StateStamp, judge, parse_stamp, stamp_of, stamp_text

log = logging.getLogger(__name__)

ORIGIN_CHECK_INTERVAL_S = 10.0
READING = "reading the buckets' origins"
# `pisano-sms check` says which buckets of a state began this much later than its first: the first
# check writes every missing origin it reaches at once, so a much later one was written anew after
# its bucket's keys were lost. The margin also covers a master unreachable for minutes at that first
# start and the writers' clocks (each origin's `since` is its writer's) lying minutes apart.
LATER_BY_MS = 600_000
DEDUP = "dedup"
CONTACTS = "contacts"
_CONSEQUENCES = {
    DEDUP: ("an event delivered before then whose copy arrives again (an upstream duplicate, a replay, a record "
            "read again after a rebalance) may be sent a second SMS until DEDUP_HORIZON_S has passed; check "
            "the receipts or Pisano before replaying events of that time"),
    CONTACTS: "a phone contacted before then may be surveyed again within its cooldown",
}


def origin_key(tag: str) -> str:
    return f"{tag}:origin"


@dataclass(frozen=True)
class Buckets:
    """One state's buckets: their hash tags and, for the dedup state, the layout's copy."""

    state: str  # DEDUP or CONTACTS
    tags: Sequence[str]
    layout_copy: str = ""
    # How long a mark of this state matters (DEDUP_HORIZON_S, the longest contact cooldown): a
    # commit's stamp older than that witnesses nothing (witness.py).
    keeps_s: float = math.inf


class Origin(NamedTuple):
    """A bucket's origin as one call read it: `since`, and the checks counted so far."""

    since: str
    checks: int


@dataclass(frozen=True)
class Loss:
    """Buckets of one state whose keys were lost since this replica last saw them whole, or (with
    `rolled_back`) that Redis took back to a state older than `seen_at`."""

    state: str
    lost: int
    buckets: int
    seen_at: float  # wall-clock time of a check that saw them whole (for a rollback: a state newer)
    rolled_back: bool = False
    # Found by the stamp of a commit made before this replica started: lost while none watched.
    witnessed: bool = False

    def message(self) -> str:
        seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.seen_at))
        if self.witnessed and self.rolled_back:
            what = (f"Redis went back, while no replica watched, to a state of the {self.state} state older than "
                    f"the one the consumer group's offsets were committed under at {seen} (a restart from its last "
                    "snapshot without AOF, a restore from a backup, or a failover to a replica far behind)")
        elif self.witnessed:
            what = (f"Redis lost the {self.state} state of {self.lost} of {self.buckets} buckets while no replica "
                    f"watched: the consumer group's offsets were committed under origins, seen at {seen}, that are "
                    "gone (a restart without its data, FLUSHALL, keys deleted, a failover that lost writes, or a "
                    "new key prefix)")
        elif self.rolled_back:
            what = (f"Redis went back to a state of {self.lost} of {self.buckets} buckets of the {self.state} state "
                    f"older than {seen}, losing what was written after it (a restart from its last snapshot "
                    "without AOF, a restore from a backup, or a failover to a replica far behind)")
        else:
            what = (f"Redis lost the {self.state} state of {self.lost} of {self.buckets} buckets since {seen} "
                    "(their origin keys vanished: a restart without its data, FLUSHALL, keys deleted, or a "
                    "failover to a replica that had not received them)")
        return (f"{what}: {_CONSEQUENCES[self.state]}. Keep Redis's persistence on (appendonly yes) with replicas, "
                "and consider DEDUP_WAIT_REPLICAS (README, \"When Redis loses its data\")")


@dataclass(frozen=True)
class _Sight:
    """What this replica read of one origin at its last check that read it, and at the one before."""

    since: str
    checks: int
    at: float
    checks_before: int | None = None  # the baseline: a count read before (see OriginWatch.check)
    at_before: float = 0.0
    # Whether the check that read this had its writes on DEDUP_WAIT_REPLICAS replicas (always,
    # without the setting), and whether `since` ever was: with the setting, a failover loses no
    # mark relied on, so what the checks alone wrote and lost in it is no loss.
    replicated: bool = True
    durable: bool = True


class OriginStore(Protocol):
    def origins(self, buckets: Sequence[tuple[str, str]]) -> list[Origin | StateStoreError]:
        """The origin of each (origin key, layout copy), in order: as stored, or written now (with
        the copy, when not empty) where there is none, its check count one more; or why that one
        could not be read (one refused call must not blind the watch to the other buckets)."""

    def witnessed(self, key: str) -> str | None:
        """The stamp the last replica that compared kept (witness.py), or None; StateStoreError."""

    def keep_witnessed(self, key: str, stamp: str) -> None:
        """Keep this replica's stamp once it has compared (never expires); StateStoreError."""


def new_since() -> str:
    return f"{int(time.time() * 1000)}-{secrets.token_hex(8)}"


class RedisOrigins:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.cluster = isinstance(client, redis.RedisCluster)

    def origins(self, buckets: Sequence[tuple[str, str]]) -> list[Origin | StateStoreError]:
        calls: list[Call] = []
        spans = []  # each bucket's calls: [first, end)
        for key, layout_copy in buckets:
            first = len(calls)
            if layout_copy:  # first: a hash a scan for slice hashes finds always holds the layout
                calls.append(Call([key], ["#", layout_copy], command="HSETNX"))
            calls += [Call([key], ["since", new_since()], command="HSETNX"),
                      Call([key], ["checks", 1], command="HINCRBY"),
                      Call([key], ["since"], command="HGET")]
            spans.append((first, len(calls)))
        with translated(READING):
            replies = run_calls(self.client, calls, cluster=self.cluster, raise_errors=False)
        # Each bucket stands alone: a key of another type, or on a cluster a master down while the
        # others serve, leaves only its own bucket unread.
        found: list[Origin | StateStoreError] = []
        for first, end in spans:
            error = next((reply for reply in replies[first:end] if isinstance(reply, Exception)), None)
            if error is not None:
                found.append(StateStoreError(describe(error, READING)))
            else:  # `since` None only if the key was deleted between the commands: lost, as it is
                since = replies[end - 1]
                found.append(Origin("" if since is None else stored_text(since), int(replies[end - 2])))
        return found

    def witnessed(self, key: str) -> str | None:
        with translated(READING):
            stamp = self.client.get(key)
        return None if stamp is None else stored_text(stamp)

    def keep_witnessed(self, key: str, stamp: str) -> None:
        with translated("keeping the state's stamp"):
            self.client.set(key, stamp)


class MemoryOrigins:
    """`RedisOrigins` in memory, for unit tests: `lose` stands for Redis losing the keys,
    `snapshot` and `go_back` for Redis going back to an earlier state."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def origins(self, buckets: Sequence[tuple[str, str]]) -> list[Origin | StateStoreError]:
        with self._lock:
            found: list[Origin | StateStoreError] = []
            for key, copy in buckets:
                if key not in self.stored:
                    self.stored[key] = {"since": new_since(), **({"#": copy} if copy else {})}
                stored = self.stored[key]
                stored["checks"] = str(int(stored.get("checks", "0")) + 1)
                found.append(Origin(stored["since"], int(stored["checks"])))
            return found

    def witnessed(self, key: str) -> str | None:
        with self._lock:
            return self.stored.get(key, {}).get("stamp")

    def keep_witnessed(self, key: str, stamp: str) -> None:
        with self._lock:
            self.stored[key] = {"stamp": stamp}

    def snapshot(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {key: dict(fields) for key, fields in self.stored.items()}

    def go_back(self, snapshot: dict[str, dict[str, str]]) -> None:
        with self._lock:
            self.stored = {key: dict(fields) for key, fields in snapshot.items()}

    def lose(self, keys: Sequence[str] | None = None) -> None:
        with self._lock:
            for key in list(self.stored) if keys is None else keys:
                self.stored.pop(key, None)


def read_origins(client: Any, tags: Sequence[str]) -> list[str | None]:
    """Each bucket's origin as stored, None where there is none; read only (`pisano-sms check`)."""
    calls = [Call([origin_key(tag)], ["since"], command="HGET") for tag in tags]
    with translated(READING):
        replies = run_calls(client, calls, cluster=isinstance(client, redis.RedisCluster))
    return [None if reply is None else stored_text(reply) for reply in replies]


def origins_summary(state: str, origins: Sequence[str | None]) -> tuple[str, str | None]:
    """What `pisano-sms check` says of one state's origins, and a warning when some buckets began
    later than the others (their keys lost in between), else None."""
    began = sorted(ms for ms in (_since_ms(origin) for origin in origins if origin) if ms is not None)
    if not began:
        return f"{state} state: no origins yet (no replica of this release has checked it)", None
    missing = sum(origin is None for origin in origins)
    text = f"{state} state since {_iso(began[0])}" + (f" ({missing} of {len(origins)} buckets without an origin yet)"
                                                       if missing else "")
    later = [ms for ms in began if ms - began[0] > LATER_BY_MS]
    if not later:
        return text, None
    span = _iso(later[0]) if _iso(later[-1]) == _iso(later[0]) else f"{_iso(later[0])} to {_iso(later[-1])}"
    return text, (f"{len(later)} of {len(origins)} {state} buckets began at {span}"
                  + f", after the others: their keys were lost and begun anew since {_iso(began[0])} (a restart "
                  "without its data, FLUSHALL, keys deleted, a failover that lost writes), unless their master did not "
                  "answer the first checks for more than 10 minutes. A replica running then logged \"Redis lost the "
                  f"{state} state\" (README, \"When Redis loses its data\")")


def _since_ms(origin: str) -> int | None:
    head = origin.partition("-")[0]
    return int(head) if head.isdigit() and len(head) <= 15 else None


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


class OriginWatch:
    """What this replica saw of every bucket's origin, and the losses each check proves.

    `sources` give each state's buckets when asked (the dedup buckets are known once the layout is
    loaded); one that raises StateStoreError fails the check, asked again at the next."""

    def __init__(self, store: OriginStore, sources: Sequence[Callable[[], Buckets]],
                 clock: Callable[[], float] = time.time, replicated: Callable[[], None] | None = None,
                 witnessed_key: str = "") -> None:
        self.store = store
        # Where the replica that compared last keeps its stamp (witness.py): with it, a loss one
        # start said is not said again by the next, whose oldest commits may predate it.
        self.witnessed_key = witnessed_key
        self.sources = sources
        self.clock = clock
        # DEDUP_WAIT_REPLICAS's wait (raises StateStoreError when the replicas do not acknowledge)
        self.replicated = replicated
        # origin key -> what this replica last read of it, and when (a bucket left unread keeps
        # the time it was last read, so that a loss found later says since when truly)
        self._seen: dict[str, _Sight] = {}
        # Why the last check left buckets unread, None when it read them all: the probe says it
        # (a watch blind to some buckets must not look like one that found nothing lost).
        self.unread: str | None = None
        # The stamps of the group's commits, per state, once read (`witness`); the states compared
        # with them so far; and what this replica's commits stamp, None until every state is
        # compared (till then a commit keeps the stamp it replaces: witness.py).
        self._witnessed: Mapping[str, Sequence[StateStamp]] | None = None
        self._compared: set[str] = set()
        self._stamp: str | None = None
        # The stamp is kept in Redis after the first comparison, and again after every check that
        # finds a loss: with no record since (a quiet night), no commit carries the state this
        # replica saw after it, and the next start, over the stamps of commits from before, would
        # say the same loss again as one while no replica ran. Due until one of every state is kept.
        self._keep_due = True
        # Per state, until compared: the buckets (their indexes) whose loss this replica said, and
        # whether it said Redis went back. A state is compared once every bucket is read, maybe
        # long after the start (a master down): what it said meanwhile is not said again as lost
        # while no replica ran.
        self._said: dict[str, set[int]] = {}
        self._said_rolled_back: set[str] = set()

    def witness(self, stamps: Mapping[str, Sequence[StateStamp]]) -> None:
        """The stamps of the group's commits, read before consuming: compared with the first check
        that reads every bucket of a state."""
        self._witnessed = stamps

    @property
    def stamp(self) -> str | None:
        return self._stamp

    def check(self) -> list[Loss]:
        now = self.clock()
        # Read once: the loop's thread sets it (`witness`) while the probe's checks; compared in a
        # check that began without it, the stamps would go without the one kept in Redis.
        witnessed = self._witnessed
        states = [source() for source in self.sources]
        # The stamp kept in Redis, read by each check that may compare: a state is compared once
        # its every bucket is read, maybe long after the start, and the running replicas keep it
        # anew after every loss they say meanwhile. Unread (on a cluster, its master down), the
        # comparison waits; the check goes on.
        kept: Mapping[str, StateStamp] | None = {}
        comparing = not self._compared >= {state.state for state in states}
        if witnessed is not None and self.witnessed_key and comparing:
            try:
                kept = parse_stamp(self.store.witnessed(self.witnessed_key))
            except StateStoreError:
                kept = None
        keys = [[origin_key(tag) for tag in state.tags] for state in states]
        asked = [(key, state.layout_copy) for state, state_keys in zip(states, keys, strict=True) for key in state_keys]
        found = iter(self.store.origins(asked))
        replicated = True
        if self.replicated is not None:
            try:
                self.replicated()
            except StateStoreError:
                replicated = False
        losses, unread = [], []
        for state, state_keys in zip(states, keys, strict=True):
            lost, since, rolled_back, older_than = 0, now, 0, now
            read: list[Origin] = []  # this check's reads, for the stamps
            for index, key in enumerate(state_keys):
                origin = next(found)
                if isinstance(origin, StateStoreError):
                    unread.append(str(origin))
                    continue
                if origin.since:
                    read.append(origin)
                before = self._seen.get(key)
                if before is None or before.since != origin.since:
                    if before is not None and before.durable:
                        lost, since = lost + 1, min(since, before.at)
                        if comparing:
                            self._said.setdefault(state.state, set()).add(index)
                    if not origin.since:  # the key vanished during this check: the next one's origin is new
                        self._seen.pop(key, None)  # a first sight, not this loss said again
                        continue
                    self._seen[key] = _Sight(origin.since, origin.checks, now, replicated=replicated,
                                             durable=replicated)
                    continue
                durable = before.durable or replicated
                if before.checks_before is not None and origin.checks <= before.checks_before:
                    rolled_back, older_than = rolled_back + 1, min(older_than, before.at_before)
                    if comparing:
                        self._said_rolled_back.add(state.state)
                    self._seen[key] = _Sight(origin.since, origin.checks, now, replicated=replicated,
                                             durable=durable)  # said once: compared afresh
                    continue
                # The baseline moves on to the lower of the last two counts (one a shallow rollback
                # took back is none), and only from a check whose writes were replicated.
                baseline: int | None
                if before.replicated:
                    baseline, baseline_at = min(before.checks, origin.checks), before.at
                else:
                    baseline, baseline_at = before.checks_before, before.at_before
                self._seen[key] = _Sight(origin.since, origin.checks, now, baseline, baseline_at, replicated, durable)
            if lost:
                losses.append(Loss(state.state, lost, len(state_keys), since))
            if rolled_back:
                losses.append(Loss(state.state, rolled_back, len(state_keys), older_than, rolled_back=True))
            if len(read) == len(state_keys) and witnessed is not None and kept is not None:
                losses += self._compare(state, read, now, witnessed, kept.get(state.state))
        self.unread = f"{len(unread)} of {len(asked)} buckets, the first: {unread[0]}" if unread else None
        if losses:
            self._keep_due = True
        if not comparing:
            self._said.clear()
        if witnessed is not None and self._compared >= {state.state for state in states}:
            stamps = {state.state: stamp for state, state_keys in zip(states, keys, strict=True)
                      if (stamp := self._state_stamp(state_keys)) is not None}
            self._stamp = stamp_text(stamps)
            if self._keep_due:
                self._keep_stamp(self._stamp, whole=len(stamps) == len(states))
        return losses

    def _keep_stamp(self, stamp: str, whole: bool) -> None:
        if not self.witnessed_key:
            return
        try:
            self.store.keep_witnessed(self.witnessed_key, stamp)
            self._keep_due = not whole  # a state not stamped yet (a bucket unread since the loss, say)
        except StateStoreError:
            pass  # kept at the next check

    def _compare(self, state: Buckets, read: Sequence[Origin], now: float,
                 witnessed: Mapping[str, Sequence[StateStamp]], kept: StateStamp | None) -> list[Loss]:
        """What the group's stamps prove of a state this check read whole, once (witness.py); the
        stamp kept in Redis counts as one more commit's."""
        if state.state in self._compared:
            return []
        self._compared.add(state.state)
        stamps = [*witnessed.get(state.state, ()), *([kept] if kept else [])]
        verdict = judge(stamps, [o.since for o in read], [o.checks for o in read], now, state.keeps_s,
                        said=self._said.get(state.state, set()))
        losses = []
        if verdict.lost:
            losses.append(Loss(state.state, verdict.lost, len(read), verdict.lost_since, witnessed=True))
        if verdict.rolled_back_before is not None and state.state not in self._said_rolled_back:
            losses.append(Loss(state.state, len(read), len(read), verdict.rolled_back_before, rolled_back=True,
                               witnessed=True))
        return losses

    def _state_stamp(self, keys: Sequence[str]) -> StateStamp | None:
        """A state as this replica last saw it whole, or None if some bucket was never read, or (with
        DEDUP_WAIT_REPLICAS) its origin never reached the replicas: a failover may take it back."""
        sights = [self._seen.get(key) for key in keys]
        if not sights or any(sight is None or not sight.durable for sight in sights):
            return None
        seen = [sight for sight in sights if sight is not None]
        return stamp_of(int(min(sight.at for sight in seen)), [sight.since for sight in seen],
                        [sight.checks_before for sight in seen])
