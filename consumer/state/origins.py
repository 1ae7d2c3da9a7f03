"""Noticing that Redis lost the dedup or the contact state (README, "When Redis loses its data").

The delivered marks are what stop a second SMS, and the contact marks what stop a second survey
within a phone's cooldown. Redis can lose them with no caller seeing an error: a restart without
persistence, FLUSHALL, keys deleted by hand, a failover to a replica that had not received them.
Nothing can bring them back, but the operators must hear of it from the consumer, not from a
customer surveyed twice.

So each bucket (the 64 dedup buckets, and the contact cooldown's 64 when it is on) has an
*origin*: a hash `<bucket tag>:origin` in the bucket's own slot, written once and never expiring,
so it is lost, and moves in a reshard, together with the bucket's marks. Its field `since` holds
Redis's time when it was written and a random part; a dedup bucket's also holds the layout's copy
in `#`, as every slice hash does (dedup_layout.py restores a lost layout key from such a copy).

Each replica's health probe asks for every origin every ORIGIN_CHECK_INTERVAL_S (`lua/origin.lua`:
one script call per bucket, pipelined, one round trip per master), which writes one where none is,
and remembers what it saw. An origin that vanished (this call wrote a new one) or changed (another
replica wrote a new one) since this replica saw it proves that the bucket's keys were lost in
between. A first sight proves nothing (a first start, an upgrade from a build without origins, a
loss while no replica ran): it is only remembered.

Redis can also go back to an earlier state that held the origins: a restart from its last RDB
snapshot (no AOF), a restore from a backup, a failover to a replica far behind. The marks written
since are gone, the origins are not. So each call also counts one more check in the origin
(`checks`, every replica's); a count read now no higher than the one this replica read at the
check before its last proves that Redis went back to before that check (its own two checks since
are gone). The check before the last, not the last: an AOF written every second, or a failover's
replication lag, loses the last second or so, which is not what this says.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import redis

from consumer.errors import StateStoreError
from consumer.state.redis import Call, load_script, run_calls, stored_text, translated
from consumer.state.redis_errors import describe

log = logging.getLogger(__name__)

ORIGIN_CHECK_INTERVAL_S = 10.0
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

    def message(self) -> str:
        seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.seen_at))
        if self.rolled_back:
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
        """The origin of each (origin key, layout copy), in order: as stored, or written now
        (with the copy, when not empty) where there is none, its check count one more; or why that one could not be read
        (one refused call must not blind the watch to the other buckets)."""


class RedisOrigins:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.cluster = isinstance(client, redis.RedisCluster)
        self._script = load_script(client, "origin")

    def origins(self, buckets: Sequence[tuple[str, str]]) -> list[Origin | StateStoreError]:
        calls = [Call([key], [secrets.token_hex(8), copy], self._script) for key, copy in buckets]
        with translated(READING):
            replies = run_calls(self.client, calls, cluster=self.cluster, raise_errors=False)
        # Each call stands alone: a key of another type, or on a cluster a master down while the
        # others serve, leaves only its own bucket unread.
        return [StateStoreError(describe(reply, READING)) if isinstance(reply, Exception)
                else Origin(stored_text(reply[0]), int(reply[1])) for reply in replies]


READING = "reading the buckets' origins"


class MemoryOrigins:
    """`lua/origin.lua` in memory, for unit tests: `lose` stands for Redis losing the keys,
    `snapshot` and `go_back` for Redis going back to an earlier state."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def origins(self, buckets: Sequence[tuple[str, str]]) -> list[Origin | StateStoreError]:
        with self._lock:
            found: list[Origin | StateStoreError] = []
            for key, copy in buckets:
                if key not in self.stored:
                    since = f"{int(time.time() * 1000)}-{secrets.token_hex(8)}"
                    self.stored[key] = {"since": since, **({"#": copy} if copy else {})}
                stored = self.stored[key]
                stored["checks"] = str(int(stored.get("checks", "0")) + 1)
                found.append(Origin(stored["since"], int(stored["checks"])))
            return found

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


class OriginWatch:
    """What this replica saw of every bucket's origin, and the losses each check proves.

    `sources` give each state's buckets when asked (the dedup buckets are known once the layout is
    loaded); one that raises StateStoreError fails the check, asked again at the next."""

    def __init__(self, store: OriginStore, sources: Sequence[Callable[[], Buckets]],
                 clock: Callable[[], float] = time.time, replicated: Callable[[], None] | None = None) -> None:
        self.store = store
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

    def check(self) -> list[Loss]:
        now = self.clock()
        states = [source() for source in self.sources]
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
            for key in state_keys:
                origin = next(found)
                if isinstance(origin, StateStoreError):
                    unread.append(str(origin))
                    continue
                before = self._seen.get(key)
                if before is None or before.since != origin.since:
                    if before is not None and before.durable:
                        lost, since = lost + 1, min(since, before.at)
                    self._seen[key] = _Sight(origin.since, origin.checks, now, replicated=replicated,
                                             durable=replicated)
                    continue
                durable = before.durable or replicated
                if before.checks_before is not None and origin.checks <= before.checks_before:
                    rolled_back, older_than = rolled_back + 1, min(older_than, before.at_before)
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
        self.unread = f"{len(unread)} of {len(asked)} buckets, the first: {unread[0]}" if unread else None
        return losses
