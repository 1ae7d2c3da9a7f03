"""Fleet-wide deduplication of event ids in Redis (DESIGN.md invariants 1 and 2).

Each request's event ids are claimed in one round trip before the POST, and settled in one
round trip after it: delivered after a 200, released when the request certainly failed, marked
unknown when its fate is unknown. An id that was delivered is skipped; an id claimed by a live
attempt elsewhere is held back and tried again later; an id whose claim outlived its lease (the
claimer died between POST and settling) has an unknown fate and is dead-lettered as ambiguous,
never silently resent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumer.errors import StateStoreError
from consumer.state.redis import REDIS_ERRORS, Keys, load_script

CLAIMED, DELIVERED, HELD, UNKNOWN = "C", "D", "H", "U"


@dataclass(frozen=True)
class ClaimRequest:
    event_id: str
    replay: bool = False


class Deduplicator:
    def __init__(self, client: Any, keys: Keys, *, lease_ms: int, horizon_s: int) -> None:
        self.client = client
        self.keys = keys
        self.lease_ms = lease_ms
        self.horizon_ms = horizon_s * 1000
        # One owner id per process: a restarted replica must not mistake its predecessor's
        # claims for its own.
        self.owner = uuid.uuid4().hex[:12]
        self._claim = load_script(client, "claim")
        self._settle = load_script(client, "settle")

    def new_tag(self) -> str:
        """A claim tag for one request attempt; reusing it makes a retried claim idempotent."""
        return f"{self.owner}|{uuid.uuid4().hex[:8]}"

    def claim(self, tag: str, requests: Sequence[ClaimRequest]) -> str:
        """One status char per request: C claimed, D delivered, H held elsewhere, U unknown."""
        if not requests:
            return ""
        keys = [self.keys.event(r.event_id) for r in requests]
        replays = "".join("1" if r.replay else "0" for r in requests)
        try:
            result = self._claim(keys=keys, args=[tag, self.lease_ms, self.horizon_ms, replays])
        except REDIS_ERRORS as exc:
            raise StateStoreError(f"Redis refused the dedup claim ({type(exc).__name__}: {exc})") from exc
        statuses = result.decode() if isinstance(result, bytes) else str(result)
        if len(statuses) != len(requests):
            raise StateStoreError("dedup claim answered for a different number of events")
        return statuses

    def delivered(self, tag: str, event_ids: Sequence[str]) -> None:
        self._settle_ids("d", tag, event_ids)

    def unknown(self, tag: str, event_ids: Sequence[str]) -> None:
        self._settle_ids("u", tag, event_ids)

    def release(self, tag: str, event_ids: Sequence[str]) -> None:
        self._settle_ids("r", tag, event_ids)

    def _settle_ids(self, outcome: str, tag: str, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        keys = [self.keys.event(e) for e in event_ids]
        try:
            self._settle(keys=keys, args=[outcome, tag, self.horizon_ms])
        except REDIS_ERRORS as exc:
            raise StateStoreError(f"Redis refused the dedup update ({type(exc).__name__}: {exc})") from exc

    def state(self, event_id: str) -> str | None:
        """The raw state of one id (for `check`, tests and SREs): None, 'd', 'u' or a claim."""
        try:
            value = self.client.get(self.keys.event(event_id))
        except REDIS_ERRORS as exc:
            raise StateStoreError(str(exc)) from exc
        return value.decode() if isinstance(value, bytes) else value
