"""Where the dedup state of an event id lives in Redis (README, "The dedup state in Redis").

An id's mark is a field of a hash, keyed by its bucket and its time slice:

- **bucket**: one of `BUCKETS`, chosen by a digest of the id. Each bucket has its own hash tag,
  and the tags are picked so that the buckets' cluster slots lie evenly over the slot space: any
  master owning a range of slots owns that share of the buckets, so a cluster spreads the marks
  (and the fleet's dedup work) over its masters: each gets its share of the 64 buckets within
  two (21 or 22 of 64 with three masters). A batch's claim is one script per bucket it
  touches, pipelined per node (one EVALSHA for all buckets on a single Redis).
- **field**: 14 bytes of the id's SHA-256 (the bucket takes 6 more bits): 118 bits of the id. Two ids
  share a mark only if these collide: at 70 million live marks, a chance below 1e-20 per horizon.
  A collision would make the later id skipped, held or dead-lettered as ambiguous: never sent twice.
- **slice**: marks written in time slice `floor(now / slice_ms)` go into that slice's hash, which
  expires at the slice's end plus the horizon. So a mark lives between the horizon and the horizon
  plus one slice (`slice_ms` = horizon / `SLICES` when the layout was created), without per-field
  expiry (Redis 7.4's HPEXPIRE is not needed). A lookup reads every live slice of the bucket, newest
  first; the newest holding the id is its state.

The layout (bucket count, slice length, and until when marks written by 0.2.0 must still be read)
is created once per key prefix by the first replica and stored in Redis, so every replica uses
the same one whatever its own settings: a replica computing other key names would miss marks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from consumer.errors import StateStoreError
from consumer.state.redis import Keys

log = logging.getLogger(__name__)

BUCKETS = 64
# Slices per horizon: a mark lives between the horizon and 1 + 1/SLICES of it, and a lookup reads
# SLICES + 1 slice hashes. Measured by benchmarks/dedup.py in a steady state (README,
# "Benchmarks"): Redis CPU per event 7.3 us with 8 slices, 6.0 with 4, 5.5 with 2 (0.2.0: 14.5);
# memory at a slice's end +12.5%, +25%, +50% over the horizon's marks. Memory is what a bank runs
# short of first: 8.
SLICES = 8
FIELD_BYTES = 14  # a 14-byte field fills the same 16-byte allocation as a shorter one
LAYOUT_VERSION = 1
SENTINEL = "#"  # each slice hash's extra field: a copy of the layout (lua/claim.lua)
ORIGIN_SUFFIX = b"}:origin"  # a bucket's origin, `origins.origin_key`, which also holds the copy
# Finding 0.2.0's marks at the first start: SCAN calls of this many keys, at most this many calls.
# A database of more keys than these allow (2 million) is assumed to hold them: they are then read
# for one horizon.
LEGACY_SCAN_COUNT = 10_000
LEGACY_SCAN_CALLS = 200
# Local clocks may lag Redis's: 0.2.0's marks are read this much longer than their horizon.
LEGACY_CLOCK_MARGIN_MS = 300_000


@dataclass(slots=True)
class Rows:
    """One bucket's ids in a call: their indexes in the call and their fields, in the same order.
    Two lists, not a list of (index, field) pairs: no tuple per id, and a script's packed fields
    are one `b"".join(fields)`."""

    indexes: list[int]
    fields: list[bytes]

    def __len__(self) -> int:
        return len(self.indexes)


def by_bucket(event_ids: Iterable[str], buckets: int) -> list[Rows]:
    """For each bucket, the indexes and fields of the ids in it, from each id's SHA-256 (the
    fastest digest of the standard library here, through OpenSSL, and allowed in FIPS mode): its
    first byte modulo the bucket count (256 / buckets must be whole), the next FIELD_BYTES the field."""
    sha256, end = hashlib.sha256, FIELD_BYTES + 1
    rows = [Rows([], []) for _ in range(buckets)]
    indexes = [r.indexes for r in rows]
    fields = [r.fields for r in rows]
    for i, event_id in enumerate(event_ids):
        raw = sha256(event_id.encode()).digest()
        bucket = raw[0] % buckets
        indexes[bucket].append(i)
        fields[bucket].append(raw[1:end])
    return rows


def digest(event_id: str) -> tuple[int, bytes]:
    """(bucket number before the modulo, field) of one id."""
    rows = by_bucket([event_id], 256)
    bucket = next(b for b, found in enumerate(rows) if found)
    return bucket, rows[bucket].fields[0]


@dataclass(frozen=True)
class Layout:
    buckets: int
    slice_ms: int
    legacy_until_ms: int  # Redis time until which 0.2.0's marks may exist; 0: there were none

    def encode(self) -> str:
        # More than 64 bytes in any case: each slice hash holds a copy (lua/claim.lua).
        return json.dumps({"what": "pisano-sms dedup layout", "version": LAYOUT_VERSION, "buckets": self.buckets,
                           "slice_ms": self.slice_ms, "legacy_until_ms": self.legacy_until_ms})

    @classmethod
    def decode(cls, raw: bytes | str) -> Layout:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a dedup layout (a JSON object with version, buckets, slice_ms)")
        if data.get("version") != LAYOUT_VERSION:
            raise ValueError(f"dedup layout version {data.get('version')} is not {LAYOUT_VERSION}: "
                             "written by a newer release")
        return cls(int(data["buckets"]), int(data["slice_ms"]), int(data["legacy_until_ms"]))

    def legacy_active(self, now_ms: float | None = None) -> bool:
        now = time.time() * 1000 if now_ms is None else now_ms
        return self.legacy_until_ms > 0 and now < self.legacy_until_ms + LEGACY_CLOCK_MARGIN_MS

    def slices_read(self, horizon_ms: int) -> int:
        """How many slice hashes a lookup reads (every live one, and the next for a lagging clock)."""
        return math.ceil(horizon_ms / self.slice_ms) + 2


class BucketNames:
    """The hash tag of each bucket of one key prefix, spread evenly over the cluster slots."""

    def __init__(self, keys: Keys, buckets: int) -> None:
        self.keys = keys
        self.buckets = buckets

    @cached_property
    def bases(self) -> list[str]:
        return [self._spread(b) for b in range(self.buckets)]

    def _spread(self, bucket: int) -> str:
        # The first candidate whose slot falls in the bucket's share of the slot space: the same
        # on every replica, and every master owning a range of slots gets that share of the
        # buckets, give or take the two at its range's ends.
        low = bucket * REDIS_CLUSTER_HASH_SLOTS // self.buckets
        high = (bucket + 1) * REDIS_CLUSTER_HASH_SLOTS // self.buckets
        for candidate in range(1_000_000):
            base = self.keys.dedup_bucket(bucket, candidate)
            if low <= key_slot(base.encode()) < high:
                return base
        raise AssertionError("no hash tag found for a dedup bucket")  # 1e6 tries at p = 1/64: never


def reshard_guard(base: str) -> str:
    """A key of the bucket's slot that nothing ever writes, declared by each dedup script call on
    a Redis Cluster beside the bucket's tag (which never exists either).

    A script touches slice hashes it does not declare (derived from Redis's clock inside it), and
    while the slot moves (CLUSTER SETSLOT MIGRATING/IMPORTING, MIGRATE: `redis-cli --cluster
    reshard`) Redis redirects a call only by the keys it declares. With the tag alone, the source
    answered ASK (the tag is missing) and the target ran the script over the slices moved so far: a
    delivered id whose slice had not moved yet was claimed again, and a settlement wrote a new
    slice key beside its namesake on the source (tests/contract/test_reshard_contract.py). Two
    declared keys that are always missing make the call a multi-key one Redis serves on neither
    side mid-move: the source answers ASK, the target TRYAGAIN, until the slot is stable again.
    The claims of that bucket fail closed (StateStoreError) for as long as its slot moves."""
    return f"{base}:reshard-guard"


def load_layout(client: Any, keys: Keys, horizon_ms: int, *, cluster: bool) -> Layout:
    """The prefix's layout, created by the first replica to ask.

    If the layout's key was lost while marks remain (deleted by hand, a partial restore), it is
    taken back from a slice hash, which carries it in its field '#': a layout made afresh from
    this replica's horizon could slice time differently and miss every mark."""
    name = keys.dedup_layout()
    raw = client.get(name)
    if raw is None:
        raw = _layout_of_existing_slices(client, keys, cluster=cluster)
        if raw is not None:
            log.error("dedup layout key %s was missing; restored from the marks' own copy", name)
            client.set(name, raw, nx=True)
        else:
            seconds, micros = client.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            legacy = _previous_release_marks(client, keys, cluster) is not False
            proposed = Layout(BUCKETS, math.ceil(horizon_ms / SLICES), now_ms + horizon_ms if legacy else 0)
            if client.set(name, proposed.encode(), nx=True):
                log.warning("dedup layout created: %d buckets, slices of %d s%s", proposed.buckets,
                            proposed.slice_ms // 1000,
                            ", reading 0.2.0's marks for one horizon" if legacy else "")
        raw = client.get(name)
    try:
        layout = Layout.decode(raw)
    except (ValueError, KeyError, TypeError) as exc:  # a newer release's layout, or not one at all: fail closed
        raise StateStoreError(f"cannot use the dedup layout in {name}: {exc}; nothing is sent until it is "
                              "fixed (README, \"The dedup state in Redis\")") from exc
    if layout.slices_read(horizon_ms) > 2 * SLICES + 2:
        log.warning("DEDUP_HORIZON_S is %.1f times the horizon the dedup layout was made for: each lookup "
                    "reads %d slices (README, \"The dedup state in Redis\")",
                    horizon_ms / (layout.slice_ms * SLICES), layout.slices_read(horizon_ms))
    return layout


def _layout_of_existing_slices(client: Any, keys: Keys, *, cluster: bool) -> bytes | None:
    nodes = _masters(client, None, cluster)
    for node in nodes:
        # A bucket's origin (consumer/state/origins.py) is no mark: written by plain commands, it
        # can lack its copy for a while (its `HSETNX #` failed, its `since` written), so one
        # without the copy is passed over, and a slice without it still means marks of a lost layout.
        key = _found([node], keys.dedup_slices(), _mark_or_copy(node))
        if isinstance(key, bytes):
            copy = node.hget(key, SENTINEL)
            if copy is None:
                raise StateStoreError(f"dedup marks exist ({key!r}) but their layout is lost: restore "
                                      f"{keys.dedup_layout()} from a backup")
            return bytes(copy)
    return None


def _mark_or_copy(node: Any) -> Callable[[bytes], bool]:
    """Whether a key is a slice hash, or an origin holding the layout's copy."""
    return lambda key: not key.endswith(ORIGIN_SUFFIX) or bool(node.hexists(key, SENTINEL))


def _previous_release_marks(client: Any, keys: Keys, cluster: bool) -> bool | None:
    """Whether 0.2.0 left marks under this prefix: its dedup marks (`Keys.event`) or its dead-letter
    marks (`Keys.dead_letter`, which the dead-letter marks read as long as the layout says:
    consumer/state/dead_letters.py). Both are in the prefix's slot, found in one scan of its
    master; None when the keyspace was too large to scan."""
    slot = f"{{{keys.prefix}}}"
    previous = re.compile(rf"{re.escape(slot)}:(e:|dl:[^:]+:[0-9]+:[0-9]+\Z)")  # `Keys.event`, `Keys.dead_letter`
    found = _found(_masters(client, keys.event("x"), cluster), f"{slot}:*",
                   lambda key: previous.match(key.decode("utf-8", "replace")) is not None)
    return None if found is None else found is not False


def _masters(client: Any, key: str | None, cluster: bool) -> list[Any]:
    """Plain clients of the masters to scan: the one holding `key`'s slot, or every one."""
    if not cluster:
        return [client]
    if key is not None:
        return [client.get_redis_connection(client.get_node_from_key(key))]
    return [client.get_redis_connection(node) for node in client.get_primaries()]


def _found(nodes: list[Any], pattern: str, wanted: Callable[[bytes], bool] | None = None) -> bytes | bool | None:
    """A key matching the pattern (and `wanted`, when given) on these nodes; False if there is none;
    None if the keyspace was too large to scan (`LEGACY_SCAN_CALLS` SCANs of `LEGACY_SCAN_COUNT`
    per node)."""
    complete = True
    for node in nodes:
        cursor = 0
        for _ in range(LEGACY_SCAN_CALLS):
            cursor, keys = node.scan(cursor, match=pattern, count=LEGACY_SCAN_COUNT)
            found = [bytes(key) for key in keys if wanted is None or wanted(bytes(key))]
            if found:
                return found[0]
            if int(cursor) == 0:
                break
        else:
            complete = False
    return False if complete else None
