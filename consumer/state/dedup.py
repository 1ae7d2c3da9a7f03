"""Fleet-wide deduplication of event ids (ARCHITECTURE.md, invariants 1 and 2).

Each request's event ids are claimed in one round trip before the POST, and settled in one
round trip after it: delivered after a 200, released when the request certainly failed, marked
unknown when its fate is unknown. An id that was delivered is skipped; an id claimed by a live
attempt elsewhere is held back and tried again later; an id whose claim outlived its lease (the
claimer died between POST and settling) has an unknown fate and is dead-lettered as ambiguous,
never silently resent.

An unknown mark names the attempt that wrote it (its claim tag). The ambiguous dead-letter carries
that attempt id (`dlq.attempt.id`), and only a signed replay of that dead-letter may override the
mark (`ClaimRequest.replay_of`): after an SRE checked with Pisano that this attempt did not
deliver. Another copy of the event, a replay of another reason, or a replay of an older attempt
finds a mark it does not name and is dead-lettered as ambiguous again, naming the mark's attempt.

`DedupStore` is the contract; `RedisDedup` keeps the state in Redis (laid out in buckets and time
slices: `dedup_layout.py`; `lua/claim.lua`, `lua/settle.lua`, `lua/peek.lua`),
`consumer.state.memory.MemoryDedup` in memory for unit tests. Both pass
tests/contract/test_dedup_contract.py.
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, NamedTuple, Protocol, overload

import redis

from consumer.errors import StateStoreError
from consumer.state.arming import Arming, script_argument
from consumer.state.dedup_layout import (
    FIELD_BYTES,
    BucketNames,
    Layout,
    Rows,
    by_bucket,
    load_layout,
    reshard_guard,
)
from consumer.state.redis import Call, Keys, load_script, run_calls, stored_text, translated
from consumer.state.trip import Step, together


class ClaimStatus(enum.Enum):
    CLAIMED = "C"  # claimed for the caller: it may send
    DELIVERED = "D"  # delivered before: skip it
    HELD = "H"  # claimed by a live attempt elsewhere: hold it back, try later
    UNKNOWN = "U"  # an earlier attempt may have reached Pisano: dead-letter as ambiguous
    LOST = "L"  # a renewal's only: the caller's claim is gone (the id is free): do not send


class Settlement(enum.Enum):
    DELIVERED = "d"  # Pisano answered 200
    UNKNOWN = "u"  # the request may have reached Pisano
    RELEASED = "r"  # the request certainly failed or never left: the id may be sent again


# The attempt of an unknown mark written before marks named their attempt.
LEGACY_ATTEMPT = "-"


class ClaimRequest(NamedTuple):
    """One id to claim. A named tuple, not a frozen dataclass: one is built per event of every
    request, and a tuple builds several times faster."""

    event_id: str
    # A verified replay of an ambiguous dead-letter: the attempt (dlq.attempt.id) whose unknown
    # mark the SRE checked, the only one it may override. None for every other record.
    replay_of: str | None = None
    # Earlier attempts of this replica that gave the id up without sending it, their claim maybe
    # still in place (a lost reply, a release that never landed): taken over, never waited for.
    abandoned_by: tuple[str, ...] = ()


class ClaimRequests(Sequence[ClaimRequest]):
    """The ids of one request to claim, as columns: the sender's claims hold a request's 5,000 ids,
    and RedisDedup reads the columns as they are, with no ClaimRequest built per id. Any other
    store sees a sequence of ClaimRequest."""

    __slots__ = ("abandoned", "event_ids", "replays")

    def __init__(self, event_ids: list[str], replays: list[str | None] | None = None,
                 abandoned: list[tuple[str, ...]] | None = None) -> None:
        self.event_ids = event_ids
        # Each id's `replay_of`, in order; None when no id is a replay (the common case).
        self.replays = replays if replays is not None and any(replays) else None
        # Each id's `abandoned_by`, in order; None when no id has one (the common case).
        self.abandoned = abandoned if abandoned is not None and any(abandoned) else None

    def __len__(self) -> int:
        return len(self.event_ids)

    @overload
    def __getitem__(self, index: int) -> ClaimRequest: ...

    @overload
    def __getitem__(self, index: slice) -> ClaimRequests: ...

    def __getitem__(self, index: int | slice) -> ClaimRequest | ClaimRequests:
        if isinstance(index, slice):
            return ClaimRequests(self.event_ids[index], self.replays[index] if self.replays else None,
                                 self.abandoned[index] if self.abandoned else None)
        return ClaimRequest(self.event_ids[index], self.replays[index] if self.replays else None,
                            self.abandoned[index] if self.abandoned else ())

    def __iter__(self) -> Iterator[ClaimRequest]:
        return map(ClaimRequest, self.event_ids, self.replays or repeat(None), self.abandoned or repeat(()))


def _columns(requests: Sequence[ClaimRequest]) -> ClaimRequests:
    """Any sequence of requests as columns."""
    if isinstance(requests, ClaimRequests):
        return requests
    return ClaimRequests([r.event_id for r in requests], [r.replay_of for r in requests],
                         [r.abandoned_by for r in requests])


class ClaimStatuses(list[ClaimStatus]):
    """One status per request, in order; `attempts[i]` names the attempt whose unknown mark made
    request i UNKNOWN (its ambiguous dead-letter carries it), '' for the other statuses."""

    def __init__(self, statuses: Iterable[ClaimStatus], attempts: Sequence[str]) -> None:
        super().__init__(statuses)
        self.attempts = list(attempts)


class DedupStore(Protocol):
    """What the sender needs from the dedup state, whatever keeps it."""

    def new_tag(self) -> str:
        """A claim tag for one request attempt; reusing it makes a retried claim idempotent."""

    def claim(self, tag: str, requests: Sequence[ClaimRequest], arming: Arming = Arming.ARM,
              renewal: bool = False) -> ClaimStatuses:
        """One status per request, in order; claiming again under the same tag renews the lease.
        A request's `abandoned_by` attempts are taken over: their claim of its id, live or lapsed,
        or the unknown mark it lapsed into, counts as free (none of them sent it). `arming`: what
        the claims granted say of their requests (`Arming`); a lapsed pending claim counts as the
        mark it replaced, or as free. `renewal` (a renewal, a disarm, a beat: consumer/state/
        arming.py): only the caller's own claims are renewed; an id the call would take anew is
        answered LOST, and nothing is written for any id that is not the caller's claim."""

    def stage_claim(self, tag: str, requests: Sequence[ClaimRequest],
                    arming: Arming = Arming.ARM, renewal: bool = False) -> Step[ClaimStatuses]:
        """`claim` as a step of a round trip shared with other stores (consumer/state/trip.py)."""

    def settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str], tombstone: bool = False) -> None:
        """Record a request's outcome: delivered and unknown (naming the attempt `tag`) overwrite any
        claim; released only removes the caller's own claim. A claim that replaced an unknown mark
        (a replay's override, recorded in the claim itself: lua/claim.lua) puts that mark back when
        released, as before the claim; any other leaves the id free, as it found it.
        `tombstone` (released only): the caller's first claim of these ids may still land, its reply
        lost; that claim of `tag` then takes nothing (HELD), another attempt's ignores the tombstone
        (lua/settle.lua, "Tombstones")."""

    def stage_settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str],
                     tombstone: bool = False) -> Step[None]:
        """`settle` as a step of a shared round trip."""

    def state(self, event_id: str) -> str | None:
        """The raw state of one id (for `check`, tests and SREs): None, 'd', 'u|<attempt>' or a claim."""

    def states(self, event_ids: Sequence[str]) -> list[str | None]:
        """`state` of each id, in order, in one round trip (one per master on a cluster); claims
        and writes nothing. For a batch the open token circuit refuses before any claim
        (consumer/delivery/sender.py `_short_circuit`): its delivered ids end `skipped` there too."""


def new_owner() -> str:
    # One owner id per process: a restarted replica must not mistake its predecessor's claims
    # for its own.
    return uuid.uuid4().hex[:12]


def new_tag(owner: str) -> str:
    return f"{owner}|{uuid.uuid4().hex[:8]}"


_STATUSES = {s.value: s for s in ClaimStatus}
# lua/settle.lua's outcome for a release that leaves the attempt's tombstone
_TOMBSTONE = "t"



def parse_statuses(raw: Any, expected: int) -> ClaimStatuses:
    """lua/claim.lua's reply: {statuses, attempt of each U in order}."""
    if not isinstance(raw, list | tuple) or not raw:
        raise StateStoreError("dedup claim answered in an unexpected form")
    try:
        statuses = [_STATUSES[c] for c in stored_text(raw[0])]
    except KeyError:
        raise StateStoreError("dedup claim answered an unknown status") from None
    if len(statuses) != expected:
        raise StateStoreError("dedup claim answered for a different number of events")
    unknown = iter(stored_text(a) for a in raw[1:])
    try:
        attempts = [next(unknown) if s is ClaimStatus.UNKNOWN else "" for s in statuses]
    except StopIteration:
        raise StateStoreError("dedup claim answered without the attempt of an unknown mark") from None
    return ClaimStatuses(statuses, attempts)


def _all_claimed(raw: Any, expected: int) -> bool:
    """lua/claim.lua's reply says every one of `expected` ids is claimed (parse_statuses agrees)."""
    return isinstance(raw, list | tuple) and bool(raw) and stored_text(raw[0]) == "C" * expected


class RedisDedup:
    """The dedup state in Redis, laid out in buckets and time slices (dedup_layout.py).

    A single Redis runs one script per claim or settle for all buckets: one round trip, atomic.
    A Redis Cluster runs one script per bucket (a script's keys share one slot), pipelined: one
    round trip per master the batch touches, sent to all of them before any reply is read. Each
    declares the bucket's tag and its guard (dedup_layout.reshard_guard): while a bucket's slot
    moves between masters its calls fail closed.
    Statuses are per id, so atomicity per bucket is all they need. If any bucket's script fails,
    the whole call raises StateStoreError: the caller fails closed, and asks again under the same
    tag (claims are idempotent per tag) or releases; what succeeded elsewhere is the caller's own
    claims, re-claimed by the retry or expiring with their lease.

    Marks written by 0.2.0 (`Keys.event`, one string per id) are read, never written, until one
    horizon after the layout was created: in the script on a single Redis, by one MGET from their
    own slot before the scripts on a cluster. They count only where no slice holds the id.
    """

    def __init__(self, client: Any, keys: Keys, *, lease_ms: int, horizon_s: int) -> None:
        self.client = client
        self.keys = keys
        self.lease_ms = lease_ms
        self.horizon_ms = horizon_s * 1000
        self.owner = new_owner()
        self.cluster = isinstance(client, redis.RedisCluster)
        self._scripts = {name: load_script(client, name) for name in ("claim", "settle", "peek")}
        self._layout: Layout | None = None
        self._buckets: list[str] = []
        self._layout_copy = ""
        self._lock = threading.Lock()
        # The bucket groups of the latest claims: a settlement of the same ids takes them.
        self._recent = RecentClaims()

    def new_tag(self) -> str:
        return new_tag(self.owner)

    def claim(self, tag: str, requests: Sequence[ClaimRequest], arming: Arming = Arming.ARM,
              renewal: bool = False) -> ClaimStatuses:
        answer: ClaimStatuses = together([self.stage_claim(tag, requests, arming, renewal)])[0]
        return answer

    def stage_claim(self, tag: str, requests: Sequence[ClaimRequest],
                    arming: Arming = Arming.ARM, renewal: bool = False) -> Step[ClaimStatuses]:
        """The claim's calls, to run alone (`claim`) or in a round trip shared with other stores
        (consumer/state/trip.py)."""
        if not requests:
            return Step.answered(ClaimStatuses([], []))
        with translated("the dedup claim"):
            layout = self._layout_loaded()
            columns = _columns(requests)
            event_ids = columns.event_ids
            groups = self._group(event_ids)
            self._recent.keep(tag, event_ids, groups)
            legacy = self._legacy(layout, groups, event_ids)
        abandoned = [" ".join(tags) for tags in columns.abandoned] if columns.abandoned else None
        calls = []
        for g, (base, rows) in enumerate(groups):
            calls.append((base, [*_packed(rows), *_sparse(_overrides(rows, columns.replays)),
                                 *_sparse(_overrides(rows, abandoned)), *legacy.arguments(g)]))
        head = [tag, self.lease_ms, self.horizon_ms, layout.slice_ms]
        return Step.remote("the dedup claim", self.client, self._calls("claim", head, calls, legacy,
                                                                    [script_argument(arming, renewal)]),
                           lambda replies: self._statuses(groups, replies, event_ids))

    def _statuses(self, groups: list[tuple[str, Rows]], replies: list[Any], event_ids: list[str]) -> ClaimStatuses:
        counts = [len(rows) for _, rows in groups] if self.cluster else [len(event_ids)]
        if all(_all_claimed(reply, count) for count, reply in zip(counts, replies, strict=True)):
            # The common answer, taken whole: what parse_statuses would make of it, without a
            # status object per id.
            return ClaimStatuses([ClaimStatus.CLAIMED] * len(event_ids), [""] * len(event_ids))
        by_call = self._replies_by_call(groups)
        statuses: list[ClaimStatus | None] = [None] * len(event_ids)
        attempts = [""] * len(event_ids)
        for (_, rows), reply in zip(by_call, replies, strict=True):
            parsed = parse_statuses(reply, len(rows))
            for i, status, attempt in zip(rows.indexes, parsed, parsed.attempts, strict=True):
                statuses[i], attempts[i] = status, attempt
        return ClaimStatuses([s for s in statuses if s is not None], attempts)

    def settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str], tombstone: bool = False) -> None:
        together([self.stage_settle(outcome, tag, event_ids, tombstone)])

    def stage_settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str],
                     tombstone: bool = False) -> Step[None]:
        if not event_ids:
            return Step.answered(None)
        with translated("the dedup update"):
            layout = self._layout_loaded()
            groups = self._recent.take(tag, event_ids) or self._group(event_ids)
            # Only an unknown mark must not cover a delivered one; delivered overwrites and a
            # release touches only the caller's claims, which 0.2.0 never wrote.
            legacy = self._legacy(layout, groups, event_ids if outcome is Settlement.UNKNOWN else [])
        calls = [(base, [*_packed(rows), *legacy.arguments(g)]) for g, (base, rows) in enumerate(groups)]
        return Step.remote("the dedup update", self.client,
                           self._calls("settle", [_TOMBSTONE if tombstone and outcome is Settlement.RELEASED
                                                  else outcome.value, tag, self.horizon_ms, layout.slice_ms],
                                       calls, legacy),
                           lambda replies: None)

    def state(self, event_id: str) -> str | None:
        with translated("reading a dedup mark"):
            layout = self._layout_loaded()
            (base, rows), = self._group([event_id])
            # the guard on a cluster: never a None read from a slot that is moving (reshard_guard)
            keys = [base, reshard_guard(base)] if self.cluster else [base]
            value = self._scripts["peek"](keys=keys, args=[self.horizon_ms, layout.slice_ms, rows.fields[0]])
            if value is None and layout.legacy_active():
                value = self.client.get(self.keys.event(event_id))
        return value.decode() if isinstance(value, bytes) else value

    def states(self, event_ids: Sequence[str]) -> list[str | None]:
        if not event_ids:
            return []
        with translated("reading dedup marks"):
            layout = self._layout_loaded()
            calls, order = [], []
            for base, rows in self._group(event_ids):
                # the guard on a cluster, as `state`: never a None read from a slot that is moving
                keys = [base, reshard_guard(base)] if self.cluster else [base]
                for index, field in zip(rows.indexes, rows.fields, strict=True):
                    calls.append(Call(keys, [self.horizon_ms, layout.slice_ms, field], self._scripts["peek"]))
                    order.append(index)
            values: list[str | None] = [None] * len(event_ids)
            for index, value in zip(order, run_calls(self.client, calls, cluster=self.cluster), strict=True):
                values[index] = stored_text(value) if value is not None else None
            missing = [i for i, value in enumerate(values) if value is None]
            if missing and layout.legacy_active():  # 0.2.0's keys, as `state` reads them
                legacy = run_calls(self.client, [Call([self.keys.event(event_ids[i])], [], command="GET")
                                                 for i in missing], cluster=self.cluster)
                for i, value in zip(missing, legacy, strict=True):
                    values[i] = stored_text(value) if value is not None else None
        return values

    def reads_previous_release(self) -> bool:
        """Whether 0.2.0's marks may still be there (its dedup marks, and its dead-letter marks:
        consumer/state/dead_letters.py), as the layout says; True until a claim or settlement
        loaded the layout. Never loads it: the dead-letter marks ask from the poll loop, which
        must not wait for the layout's first creation (a scan of up to 2 million keys)."""
        layout = self._layout
        return layout is None or layout.legacy_active()

    def buckets(self) -> tuple[list[str], str]:
        """Every bucket's tag and the layout's copy (consumer/state/origins.py), the layout loaded
        on first use."""
        with translated("loading the dedup layout"):
            self._layout_loaded()
        return self._buckets, self._layout_copy

    def _layout_loaded(self) -> Layout:
        # Read (or created) on first use, not at construction: a replica starts while Redis is away.
        with self._lock:
            if self._layout is None:
                layout = load_layout(self.client, self.keys, self.horizon_ms, cluster=self.cluster)
                self._buckets = BucketNames(self.keys, layout.buckets).bases
                self._layout_copy = layout.encode()
                self._layout = layout
            return self._layout

    def _group(self, event_ids: Sequence[str]) -> list[tuple[str, Rows]]:
        """The ids by bucket: (bucket tag, their indexes in the call and fields), in bucket order."""
        bases = self._buckets
        return [(bases[b], rows) for b, rows in enumerate(by_bucket(event_ids, len(bases))) if rows]

    def _replies_by_call(self, groups: list[tuple[str, Rows]]) -> list[tuple[str, Rows]]:
        """The groups each reply of `_calls` answers for, in order: one call per bucket on a
        cluster, one call for all of them on a single Redis."""
        if self.cluster:
            return groups
        return [("", Rows(list(chain.from_iterable(rows.indexes for _, rows in groups)), []))]

    def _legacy(self, layout: Layout, groups: list[tuple[str, Rows]], event_ids: Sequence[str]) -> _Legacy:
        """How the scripts read 0.2.0's marks of these ids."""
        if not event_ids or not layout.legacy_active():
            return _Legacy("", [], [])
        keys = [[self.keys.event(event_ids[i]) for i in rows.indexes] for _, rows in groups]
        if not self.cluster:
            return _Legacy("k", [k for group in keys for k in group], [])
        # All in the prefix's slot: one read, not atomic with the scripts, which is sound since
        # nothing writes these keys any more (a fleet never mixes 0.2.0 and 0.3.0: README).
        values = iter(self.client.mget([k for group in keys for k in group]))
        found = [[(j + 1, v) for j, v in enumerate([next(values) for _ in group]) if v is not None]
                 for group in keys]
        return _Legacy("a", [], found)

    def _calls(self, name: str, head: list[Any], calls: list[tuple[str, list[Any]]], legacy: _Legacy,
               tail: Sequence[Any] = ()) -> list[Call]:
        """One script call for all buckets on a single Redis; one per bucket on a cluster. `tail`:
        the script's arguments after the layout, before the buckets' (the claim's arming)."""
        script = self._scripts[name]
        if not self.cluster:
            keys = [base for base, _ in calls] + legacy.keys
            args = [*head, len(calls), legacy.mode, FIELD_BYTES, self._layout_copy, *tail,
                    *(a for _, call_args in calls for a in call_args)]
            return [Call(keys, args, script)]
        # Each call declares the bucket's guard too: Redis then runs it only where its slot is
        # stable, never over part of the slot's keys while the slot moves (reshard_guard).
        return [Call([base, reshard_guard(base)],
                     [*head, 1, legacy.mode, FIELD_BYTES, self._layout_copy, *tail, *call_args], script)
                for base, call_args in calls]


class RecentClaims:
    """The bucket groups (`RedisDedup._group`) of the latest claims, by tag. A request's ids are
    claimed, then settled under the same tag, most often all of them at once (a delivered batch):
    that settlement takes its claim's groups instead of hashing each of its 5,000 ids again. Any
    other settlement (part of a batch, ids claimed in two rounds) is grouped afresh: a group is
    reused only for the very ids it was made from, in the same order. Bounded: the claims of
    requests never settled by this replica (an exception, a stop) are forgotten after `limit`
    newer ones. Shared by the sender threads, under a lock."""

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self._groups: dict[str, tuple[list[str], list[tuple[str, Rows]]]] = {}
        self._lock = threading.Lock()

    def keep(self, tag: str, event_ids: Sequence[str], groups: list[tuple[str, Rows]]) -> None:
        copy = list(event_ids)  # the caller's list may change; the groups hold these ids
        with self._lock:
            self._groups.pop(tag, None)  # a renewal moves its tag to the newest end
            self._groups[tag] = (copy, groups)
            while len(self._groups) > self.limit:
                del self._groups[next(iter(self._groups))]

    def take(self, tag: str, event_ids: Sequence[str]) -> list[tuple[str, Rows]] | None:
        """The groups of `tag`'s latest claim if it was of exactly these ids, in this order."""
        with self._lock:
            found = self._groups.pop(tag, None)
        if found is None:
            return None
        kept, groups = found
        # One comparison in C (the same str objects, compared by identity first), not a hash per id.
        return groups if kept == (event_ids if isinstance(event_ids, list) else list(event_ids)) else None


@dataclass(frozen=True)
class _Legacy:
    """0.2.0's marks for the scripts: mode '' not read; 'k' their keys, read by the script (a
    single Redis); 'a' per bucket the (index, value) of those found (a cluster)."""

    mode: str
    keys: list[str]
    found: list[list[tuple[int, Any]]]

    def arguments(self, group: int) -> list[Any]:
        return _sparse(self.found[group]) if self.mode == "a" else []


def _packed(rows: Rows) -> list[Any]:
    return [len(rows), b"".join(rows.fields)]


def _overrides(rows: Rows, values: Sequence[str | None] | None) -> list[tuple[int, Any]]:
    """(1-based index in the bucket's call, value) of the bucket's ids that have a value (a
    replay's `replay_of`, earlier attempts' tags)."""
    return [(j + 1, values[i]) for j, i in enumerate(rows.indexes) if values[i]] if values else []


def _sparse(items: list[tuple[int, Any]]) -> list[Any]:
    return [len(items), *(x for item in items for x in item)]
