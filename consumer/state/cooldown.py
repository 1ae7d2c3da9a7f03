"""The contact cooldown's shared state: when each phone was last contacted (issue 13, point 1).

A phone is reserved by one request attempt before its POST, fleet-wide and atomically: of two
replicas admitting the same phone for two campaigns at the same moment, one reserves it and the
other finds it held (and holds its event back). After Pisano's 200 the reservation becomes a
contact mark, the start of the cooldown; a request that certainly failed releases it; a request
of unknown fate leaves a contact mark too (the customer may have been texted). A reservation whose
lease ran out (its replica died between POST and settling) counts as a contact made when the lease
ran out, for the same reason.

Keys hold no phone: a phone's key is the keyed hash of its canonical E.164 (the opt-out list's
`OptOutHasher`, under SUPPRESSION_KEY), `{<prefix>:p:<bucket>:<n>}:cd:<32 hex>`. The bucket (one of
`BUCKETS`, from the hash) is the key's hash tag, its slots spread evenly like the dedup buckets', so
a Redis Cluster spreads the phones over its masters. On a cluster one script call covers the
phones of one bucket, on a single Redis one call covers them all; a batch's calls are pipelined,
sent before any reply is read, with the batch's dedup claim (`stage_reserve`,
consumer/state/trip.py): one round trip on a single Redis, one per master on a cluster. A phone's
state is one key, so atomicity per key is all the reservation needs.

`CooldownStore` is the contract; `RedisCooldown` (`lua/reserve_phones.lua`,
`lua/settle_phones.lua`) and `MemoryCooldown` (below) both pass
tests/contract/test_cooldown_contract.py.
"""

from __future__ import annotations

import enum
import functools
import re
import threading
import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from consumer.errors import StateStoreError
from consumer.state.arming import Arming, script_argument
from consumer.state.redis import Call, Keys, load_script, stored_text, translated
from consumer.state.trip import Step, together

_ABANDONED_BY = attrgetter("abandoned_by")
# Hash tags the phones are spread over: enough that a cluster's masters each get several, few
# enough that a batch of thousands of phones touches each bucket with many of them.
BUCKETS = 64


class PhoneStatus(enum.Enum):
    RESERVED = "R"  # reserved for the caller: it may send
    COOLING = "C"  # contacted within the campaign's cooldown: do not send (outcome `cooldown`)
    HELD = "H"  # reserved by a live attempt elsewhere: hold the event back, try later
    LOST = "L"  # a renewal's only: the caller's reservation is gone: do not send


class PhoneFate(enum.Enum):
    ACCEPTED = "d"  # Pisano answered 200: the cooldown starts now
    UNKNOWN = "u"  # the request may have reached Pisano: counted as a contact now
    RELEASED = "r"  # certainly not sent: the caller's own reservation is removed


class PhoneRequest(NamedTuple):
    """One phone to reserve: its hashed key (`phone_key`), and for a signed replay of an ambiguous
    dead-letter the attempt whose unknown mark, or lapsed reservation, it may override (None for every
    other record)."""

    key: str
    replay_of: str | None = None
    # Earlier attempts of this replica that gave the phone up unsent, their reservation maybe still
    # in place (a lost reply, a release that never landed): taken over, never waited for.
    abandoned_by: tuple[str, ...] = ()


def phone_key(keys: Keys, digest_hex: str) -> str:
    """The key of a phone from its keyed hash (32 hex digits): bucket from the hash itself."""
    return f"{bucket_tags(keys.prefix)[int(digest_hex[:4], 16) % BUCKETS]}:cd:{digest_hex}"


@functools.lru_cache(maxsize=16)
def bucket_tags(prefix: str) -> tuple[str, ...]:
    """Each bucket's hash tag: the first candidate whose slot lies in the bucket's share of the
    slot space (as the dedup buckets', consumer/state/dedup_layout.py), so each master of a
    cluster owns its share of the buckets, the same on every replica."""
    keys = Keys(prefix)
    tags = []
    for bucket in range(BUCKETS):
        low, high = bucket * REDIS_CLUSTER_HASH_SLOTS // BUCKETS, (bucket + 1) * REDIS_CLUSTER_HASH_SLOTS // BUCKETS
        tags.append(next(tag for tag in (keys.phone_bucket(bucket, c) for c in range(1_000_000))
                         if low <= key_slot(tag.encode()) < high))
    return tuple(tags)


class CooldownStore(Protocol):
    """What the sender needs from the cooldown state, whatever keeps it."""

    def reserve(self, tag: str, requests: Sequence[PhoneRequest], *, window_ms: int,
                arming: Arming = Arming.ARM, renewal: bool = False) -> list[PhoneStatus]:
        """One status per request, in order. Reserving again under the same tag renews the lease.
        A request's `abandoned_by` attempts' reservation, live or lapsed, is taken over with the
        contact it covers (none of them sent to the phone). `arming` as the dedup claim's
        (consumer/state/arming.py): a lapsed pending reservation is no contact. `renewal` as the
        dedup claim's: only the caller's own live reservation is renewed; a phone the call would
        reserve anew is answered LOST, and nothing is written for any other phone."""

    def stage_reserve(self, tag: str, requests: Sequence[PhoneRequest], *, window_ms: int,
                      arming: Arming = Arming.ARM, renewal: bool = False) -> Step[list[PhoneStatus]]:
        """`reserve` as a step of a round trip shared with other stores (consumer/state/trip.py)."""

    def settle(self, fate: PhoneFate, tag: str, keys: Sequence[str], tombstone: bool = False) -> None:
        """Record a request's fate for its phones: accepted and unknown write a contact whatever the
        key holds; released removes only the caller's own reservation, and puts back the contact
        it covered (a contact older than the reserving campaign's window, still within another's).
        `tombstone` (released only): the caller's first reservation of these phones may still land,
        its reply lost; that reservation of `tag` then takes nothing (HELD), another attempt's
        ignores the tombstone (lua/settle_phones.lua, "Tombstones")."""

    def stage_settle(self, fate: PhoneFate, tag: str, keys: Sequence[str], tombstone: bool = False) -> Step[None]:
        """`settle` as a step of a shared round trip."""

    def state(self, key: str) -> str | None:
        """The raw value of one phone's key (for tests and SREs)."""



_STATUSES = {s.value: s for s in PhoneStatus}
# lua/settle_phones.lua's fate for a release that leaves the attempt's tombstone
_TOMBSTONE = "t"
# A released phone's tombstones: "<contact>#x|<tags>" (lua/settle_phones.lua); NO_CONTACT for none.
_STONES = "#x|"
NO_CONTACT = "c|0|-"


def parse_statuses(raw: Any, expected: int) -> list[PhoneStatus]:
    try:
        statuses = [_STATUSES[c] for c in stored_text(raw)]
    except KeyError:
        raise StateStoreError("the phone reservation answered an unknown status") from None
    if len(statuses) != expected:
        raise StateStoreError("the phone reservation answered for a different number of phones")
    return statuses


class RedisCooldown:
    """The cooldown state in Redis: one string per phone, its bucket its hash tag."""

    def __init__(self, client: Any, *, lease_ms: int, ttl_ms: int) -> None:
        self.client = client
        self.lease_ms = lease_ms
        self.ttl_ms = ttl_ms
        self.cluster = isinstance(client, redis.RedisCluster)
        self._reserve = load_script(client, "reserve_phones")
        self._settle = load_script(client, "settle_phones")

    def reserve(self, tag: str, requests: Sequence[PhoneRequest], *, window_ms: int,
                arming: Arming = Arming.ARM, renewal: bool = False) -> list[PhoneStatus]:
        answer: list[PhoneStatus] = together([self.stage_reserve(tag, requests, window_ms=window_ms,
                                                                 arming=arming, renewal=renewal)])[0]
        return answer

    def stage_reserve(self, tag: str, requests: Sequence[PhoneRequest], *, window_ms: int,
                      arming: Arming = Arming.ARM, renewal: bool = False) -> Step[list[PhoneStatus]]:
        """The reservation's calls, to run alone or in a round trip shared with other stores."""
        if not requests:
            return Step.answered([])
        groups = self._groups([r.key for r in requests])
        head = [tag, self.lease_ms, window_ms, self.ttl_ms, script_argument(arming, renewal)]
        # Earlier attempts' tags travel only when a phone has some (lua/reserve_phones.lua).
        abandoned = any(map(_ABANDONED_BY, requests))
        calls = [Call([requests[i].key for i in rows],
                      [*head, *(requests[i].replay_of or "" for i in rows),
                       *((" ".join(requests[i].abandoned_by) for i in rows) if abandoned else ())],
                      self._reserve) for rows in groups]

        def read(replies: list[Any]) -> list[PhoneStatus]:
            statuses: list[PhoneStatus | None] = [None] * len(requests)
            for rows, reply in zip(groups, replies, strict=True):
                for i, status in zip(rows, parse_statuses(reply, len(rows)), strict=True):
                    statuses[i] = status
            return [s for s in statuses if s is not None]

        return Step.remote("the phone reservation", self.client, calls, read)

    def settle(self, fate: PhoneFate, tag: str, keys: Sequence[str], tombstone: bool = False) -> None:
        together([self.stage_settle(fate, tag, keys, tombstone)])

    def stage_settle(self, fate: PhoneFate, tag: str, keys: Sequence[str], tombstone: bool = False) -> Step[None]:
        if not keys:
            return Step.answered(None)
        args = [_TOMBSTONE, tag, self.ttl_ms, self.lease_ms] if tombstone and fate is PhoneFate.RELEASED \
            else [fate.value, tag, self.ttl_ms]
        calls = [Call([keys[i] for i in rows], args, self._settle) for rows in self._groups(keys)]
        return Step.remote("the phone reservation's outcome", self.client, calls, lambda replies: None)

    def state(self, key: str) -> str | None:
        with translated("reading a phone's cooldown"):
            value = self.client.get(key)
        return None if value is None else stored_text(value)

    def _groups(self, keys: Sequence[str]) -> list[list[int]]:
        """One script call per bucket on a cluster (a call's keys share a slot); one for all on a
        single Redis."""
        return _by_bucket(keys) if self.cluster else [list(range(len(keys)))]


def _by_bucket(keys: Sequence[str]) -> list[list[int]]:
    """Indexes of the keys, grouped by their hash tag (the bucket), in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key[:key.index("}") + 1], []).append(index)
    return list(groups.values())


# kind|at|owner, and after `#` the contact a reservation covers (put back if it is released)
_VALUE = re.compile(r"([a-z])\|(\d+)\|([^#]*)#?(.*)", re.S)


def _now_ms() -> int:
    return int(time.time() * 1000)


class MemoryCooldown:
    """The in-memory twin (same rules as the scripts), for unit tests and the demo's fakes."""

    def __init__(self, *, lease_ms: int, ttl_ms: int, clock: Callable[[], int] = _now_ms,
                 shared: dict[str, tuple[str, int]] | None = None) -> None:
        self.lease_ms = lease_ms
        self.ttl_ms = ttl_ms
        self.clock = clock
        self._values: dict[str, tuple[str, int]] = {} if shared is None else shared  # key -> (value, expires at)
        self._lock = threading.Lock()

    def replica(self) -> MemoryCooldown:
        """Another process's view of the same store."""
        return MemoryCooldown(lease_ms=self.lease_ms, ttl_ms=self.ttl_ms, clock=self.clock, shared=self._values)

    def reserve(self, tag: str, requests: Sequence[PhoneRequest], *, window_ms: int,
                arming: Arming = Arming.ARM, renewal: bool = False) -> list[PhoneStatus]:
        now = self.clock()
        out = []
        with self._lock:
            for request in requests:
                value = self._get(request.key, now)
                status, covered, pending = PhoneStatus.RESERVED, "", arming is Arming.PENDING
                renewing = False  # the caller's own live reservation
                buried = False  # as reserve_phones.lua: released with the caller's tombstone
                stones: str | None = None
                if value is not None and _STONES in value:
                    value, stones = value.split(_STONES, 1)
                    buried = tag in stones.split(" ")
                    value = None if value == NO_CONTACT else value
                # as reserve_phones.lua: a pending reservation ('0' before its lease) lapsed texted no one
                lapsed = _VALUE.fullmatch(value) if value is not None else None
                if lapsed and lapsed.group(1) == "r" and lapsed.group(2).startswith("0") \
                        and now >= int(lapsed.group(2)):
                    value = lapsed.group(4) or None  # what it covered stands, or nothing
                if value is not None:
                    match = _VALUE.fullmatch(value)
                    kind, at, owner, prior = (match.group(1), int(match.group(2)), match.group(3), match.group(4)) \
                        if match else ("", now, "", "")
                    own = value.split("#", 1)[0]
                    if kind == "r" and owner == tag and arming is Arming.KEEP:
                        pending = match is not None and match.group(2).startswith("0")
                    if kind == "r" and ((owner == tag and now < at) or (owner and owner in request.abandoned_by)):
                        covered = prior  # a renewal, or a takeover, keeps what the reservation covers
                        renewing = owner == tag and now < at
                    elif kind == "r" and now < at:
                        status = PhoneStatus.HELD
                    elif kind in ("u", "r") and owner and owner == request.replay_of:
                        covered = own  # as reserve_phones.lua: the replay's own attempt's unknown or lapsed contact
                    elif now - at < window_ms:
                        status = PhoneStatus.COOLING
                    else:
                        covered = own
                if buried:
                    status = PhoneStatus.LOST if renewal else PhoneStatus.HELD
                elif renewal and not renewing:
                    # as reserve_phones.lua's renewal mode: not ours any more, left as it is
                    if status is PhoneStatus.RESERVED:
                        status = PhoneStatus.LOST
                elif status is PhoneStatus.RESERVED:
                    until = f"0{now + self.lease_ms}" if pending else str(now + self.lease_ms)
                    if stones is not None:  # as reserve_phones.lua: another attempt's tombstones ride on
                        covered = f"{covered or NO_CONTACT}{_STONES}{stones}"
                    reservation = f"r|{until}|{tag}" + (f"#{covered}" if covered else "")
                    self._values[request.key] = (reservation, now + self.lease_ms + self.ttl_ms)
                out.append(status)
        return out

    def stage_reserve(self, tag: str, requests: Sequence[PhoneRequest], *, window_ms: int,
                      arming: Arming = Arming.ARM, renewal: bool = False) -> Step[list[PhoneStatus]]:
        return Step.local("the phone reservation",
                          lambda: self.reserve(tag, requests, window_ms=window_ms, arming=arming, renewal=renewal))

    def settle(self, fate: PhoneFate, tag: str, keys: Sequence[str], tombstone: bool = False) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                if fate is PhoneFate.RELEASED and tombstone:
                    self._bury(key, tag, now)
                elif fate is PhoneFate.RELEASED:
                    value = self._get(key, now)
                    match = _VALUE.fullmatch(value) if value is not None else None
                    if match and match.group(1) == "r" and match.group(3) == tag:
                        covered = _VALUE.fullmatch(match.group(4)) if match.group(4) else None
                        expires = int(covered.group(2)) + self.ttl_ms if covered else now
                        if _STONES in match.group(4):  # as settle_phones.lua: the tombstones it carried
                            stands = match.group(4) if expires > now \
                                else NO_CONTACT + match.group(4)[match.group(4).index(_STONES):]
                            self._values[key] = (stands, max(self._values[key][1], expires))
                        elif covered and expires > now:
                            self._values[key] = (match.group(4), expires)
                        else:
                            del self._values[key]
                else:
                    kind = "c" if fate is PhoneFate.ACCEPTED else "u"
                    self._values[key] = (f"{kind}|{now}|{tag}", now + self.ttl_ms)

    def stage_settle(self, fate: PhoneFate, tag: str, keys: Sequence[str], tombstone: bool = False) -> Step[None]:
        if tombstone:
            return Step.local("the phone reservation's outcome", lambda: self.settle(fate, tag, keys, tombstone=True))
        return Step.local("the phone reservation's outcome", lambda: self.settle(fate, tag, keys))

    def _bury(self, key: str, tag: str, now: int) -> None:
        """As settle_phones.lua's 't': what a release leaves, and the tombstone of `tag`."""
        value = self._get(key, now)
        stands = value
        match = _VALUE.fullmatch(value) if value is not None else None
        if match and match.group(1) == "r":
            if match.group(3) != tag:
                # as settle_phones.lua: another attempt's reservation, still its own and with its
                # lease, carries the tombstone, which its release puts back
                contact, tags = match.group(4), tag
                if _STONES in contact:
                    contact, older = contact.split(_STONES, 1)
                    tags = older if tag in older.split(" ") else f"{older} {tag}"
                head = value.split("#", 1)[0] if value is not None else ""
                self._values[key] = (f"{head}#{contact or NO_CONTACT}{_STONES}{tags}", self._values[key][1])
                return
            covered = _VALUE.fullmatch(match.group(4)) if match.group(4) else None
            carried = match.group(4).find(_STONES)  # as settle_phones.lua: tombstones it carried
            stands = match.group(4) if covered and int(covered.group(2)) + self.ttl_ms > now \
                else NO_CONTACT + match.group(4)[carried:] if carried >= 0 else None
        contact, tags = stands or NO_CONTACT, tag
        if stands is not None and _STONES in stands:
            contact, older = stands.split(_STONES, 1)
            tags = older if tag in older.split(" ") else f"{older} {tag}"
        self._values[key] = (f"{contact or NO_CONTACT}{_STONES}{tags}", now + self.lease_ms + self.ttl_ms)

    def state(self, key: str) -> str | None:
        with self._lock:
            return self._get(key, self.clock())

    def _get(self, key: str, now: int) -> str | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if now >= entry[1]:
            del self._values[key]
            return None
        return entry[0]
