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
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from consumer.state.redis import Call, run_calls, stored_text, translated

log = logging.getLogger(__name__)

ORIGIN_CHECK_INTERVAL_S = 10.0
# `pisano-sms check` says which buckets of a state began this much later than its first: a replica's
# first check writes every missing origin of a state at once, so a later one was written anew
# after its bucket's keys were lost (or its master did not answer that first check).
LATER_BY_MS = 60_000
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


@dataclass(frozen=True)
class Loss:
    """Buckets of one state whose keys were lost since this replica last saw them whole."""

    state: str
    lost: int
    buckets: int
    seen_at: float  # wall-clock time of the check that last saw them whole

    def message(self) -> str:
        seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.seen_at))
        return (f"Redis lost the {self.state} state of {self.lost} of {self.buckets} buckets since {seen} "
                "(their origin keys vanished: a restart without its data, FLUSHALL, keys deleted, or a failover "
                f"to a replica that had not received them): {_CONSEQUENCES[self.state]}. Keep Redis's persistence "
                "on (appendonly yes) with replicas, and consider DEDUP_WAIT_REPLICAS (README, \"When Redis loses "
                "its data\")")


class OriginStore(Protocol):
    def origins(self, buckets: Sequence[tuple[str, str]]) -> list[str]:
        """The origin of each (origin key, layout copy), in order: as stored, or written now
        (with the copy, when not empty) where there is none."""


def new_since() -> str:
    return f"{int(time.time() * 1000)}-{secrets.token_hex(8)}"


class RedisOrigins:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.cluster = isinstance(client, redis.RedisCluster)

    def origins(self, buckets: Sequence[tuple[str, str]]) -> list[str]:
        calls, reads = [], []
        for key, layout_copy in buckets:
            if layout_copy:  # first: a hash a scan for slice hashes finds always holds the layout
                calls.append(Call([key], ["#", layout_copy], command="HSETNX"))
            calls.append(Call([key], ["since", new_since()], command="HSETNX"))
            reads.append(len(calls))
            calls.append(Call([key], ["since"], command="HGET"))
        with translated("reading the buckets' origins"):
            replies = run_calls(self.client, calls, cluster=self.cluster)
        # None only if the key was deleted between the two commands: lost, as it is.
        return [stored_text(replies[i]) if replies[i] is not None else "" for i in reads]


class MemoryOrigins:
    """`RedisOrigins` in memory, for unit tests: `lose` stands for Redis losing the keys."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def origins(self, buckets: Sequence[tuple[str, str]]) -> list[str]:
        with self._lock:
            found = []
            for key, copy in buckets:
                if key not in self.stored:
                    self.stored[key] = {"since": new_since(), **({"#": copy} if copy else {})}
                found.append(self.stored[key]["since"])
            return found

    def lose(self, keys: Sequence[str] | None = None) -> None:
        with self._lock:
            for key in list(self.stored) if keys is None else keys:
                self.stored.pop(key, None)


def read_origins(client: Any, tags: Sequence[str]) -> list[str | None]:
    """Each bucket's origin as stored, None where there is none; read only (`pisano-sms check`)."""
    calls = [Call([origin_key(tag)], ["since"], command="HGET") for tag in tags]
    with translated("reading the buckets' origins"):
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
                  "answer the first replica's first check. A replica running then logged \"Redis lost the "
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
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sources = sources
        self.clock = clock
        self._seen: dict[str, str] = {}  # origin key -> its origin when this replica last saw it
        self._seen_at = 0.0

    def check(self) -> list[Loss]:
        now = self.clock()
        states = [source() for source in self.sources]
        keys = [[origin_key(tag) for tag in state.tags] for state in states]
        asked = [(key, state.layout_copy) for state, state_keys in zip(states, keys, strict=True) for key in state_keys]
        found = iter(self.store.origins(asked))
        losses = []
        for state, state_keys in zip(states, keys, strict=True):
            lost = 0
            for key in state_keys:
                origin = next(found)
                before = self._seen.get(key)
                lost += before is not None and before != origin
                self._seen[key] = origin
            if lost:
                losses.append(Loss(state.state, lost, len(state_keys), self._seen_at))
        self._seen_at = now
        return losses
