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

`DedupStore` is the contract; `RedisDedup` keeps the state in Redis (`lua/claim.lua`,
`lua/settle.lua`), `consumer.state.memory.MemoryDedup` in memory for unit tests. Both pass
tests/contract/test_dedup_contract.py.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from consumer.errors import StateStoreError
from consumer.state.redis import Keys, load_script, translated


class ClaimStatus(enum.Enum):
    CLAIMED = "C"  # claimed for the caller: it may send
    DELIVERED = "D"  # delivered before: skip it
    HELD = "H"  # claimed by a live attempt elsewhere: hold it back, try later
    UNKNOWN = "U"  # an earlier attempt may have reached Pisano: dead-letter as ambiguous


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

    def claim(self, tag: str, requests: Sequence[ClaimRequest]) -> ClaimStatuses:
        """One status per request, in order; claiming again under the same tag renews the lease."""

    def settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str]) -> None:
        """Record a request's outcome: delivered and unknown (naming the attempt `tag`) overwrite any
        claim; released only removes the caller's own claim."""

    def state(self, event_id: str) -> str | None:
        """The raw state of one id (for `check`, tests and SREs): None, 'd', 'u|<attempt>' or a claim."""


def new_owner() -> str:
    # One owner id per process: a restarted replica must not mistake its predecessor's claims
    # for its own.
    return uuid.uuid4().hex[:12]


def new_tag(owner: str) -> str:
    return f"{owner}|{uuid.uuid4().hex[:8]}"


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def parse_statuses(raw: Any, expected: int) -> ClaimStatuses:
    """lua/claim.lua's reply: {statuses, attempt of each U in order}."""
    if not isinstance(raw, list | tuple) or not raw:
        raise StateStoreError("dedup claim answered in an unexpected form")
    statuses = [ClaimStatus(c) for c in _text(raw[0])]
    if len(statuses) != expected:
        raise StateStoreError("dedup claim answered for a different number of events")
    unknown = iter(_text(a) for a in raw[1:])
    try:
        attempts = [next(unknown) if s is ClaimStatus.UNKNOWN else "" for s in statuses]
    except StopIteration:
        raise StateStoreError("dedup claim answered without the attempt of an unknown mark") from None
    return ClaimStatuses(statuses, attempts)


class RedisDedup:
    def __init__(self, client: Any, keys: Keys, *, lease_ms: int, horizon_s: int) -> None:
        self.client = client
        self.keys = keys
        self.lease_ms = lease_ms
        self.horizon_ms = horizon_s * 1000
        self.owner = new_owner()
        self._claim = load_script(client, "claim")
        self._settle = load_script(client, "settle")

    def new_tag(self) -> str:
        return new_tag(self.owner)

    def claim(self, tag: str, requests: Sequence[ClaimRequest]) -> ClaimStatuses:
        if not requests:
            return ClaimStatuses([], [])
        keys = [self.keys.event(r.event_id) for r in requests]
        overrides = [r.replay_of or "" for r in requests]
        with translated("the dedup claim"):
            result = self._claim(keys=keys, args=[tag, self.lease_ms, self.horizon_ms, *overrides])
        return parse_statuses(result, len(requests))

    def settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        keys = [self.keys.event(e) for e in event_ids]
        with translated("the dedup update"):
            self._settle(keys=keys, args=[outcome.value, tag, self.horizon_ms])

    def state(self, event_id: str) -> str | None:
        with translated("reading a dedup mark"):
            value = self.client.get(self.keys.event(event_id))
        return value.decode() if isinstance(value, bytes) else value
