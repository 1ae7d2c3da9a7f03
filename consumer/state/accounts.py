"""Which throttle and circuit state a destination uses: its account's, for good.

The throttle and circuit keys carry a token's fingerprint (`consumer.state.redis.Keys`), so two
destinations with the same token share Pisano's one budget. A rotated token must not move a
destination to fresh keys: an empty limiter would let the fleet spend a budget it has already
spent (a throttle window exceeded), and replicas started before and after a rotation would each
count on their own. So the first replica to start records, per destination name, the fingerprint
of the token it started with (`{prefix}:account:<name>`, SET NX, no TTL); every replica uses the
recorded fingerprint from then on, whatever token it holds now.

The trade-off, and how to undo it: a destination keeps its state across any change of token,
also one that moves it to another Pisano account (a wrong token fixed); two destinations that
shared a token keep sharing after one is rotated. Both err on the side of the smaller budget.
To give a destination fresh state, stop the fleet and delete `{prefix}:account:<name>`.

The record must outlive a loss of Redis's data (a restart without persistence, FLUSHALL): a
replica started after it with a rotated token would record its new token's fingerprint and count
on an empty limiter, fenced for the short grace of a new state only, while the live replicas keep
counting on the old keys (held there for the loss they proved). Two limiters for one Pisano
account: its windows exceeded. So every live replica writes its destination's record again on
each limiter heartbeat (`AccountRecord.follow`, SET NX), and when the record names another
fingerprint, one written in between, its limiter moves to that one's keys keeping what it knew of
the old state, which proves the loss there too: the fleet is held as for any proven loss, then
counts on one set of keys (consumer/state/limiter.py). The circuits stay on the keys they started
with until the replica restarts.

Redis unreachable at start is no reason to refuse to start (the replica fails closed until it
answers): the current token's fingerprint is used then, with a warning. That is the recorded
one unless the token was rotated since the first start; if it was, the first heartbeat once
Redis answers moves the limiter to the recorded keys (a proven-loss hold for the fleet: this
replica's slots were counted elsewhere).
"""

from __future__ import annotations

import logging
from typing import Any

from consumer.errors import StateStoreError
from consumer.state.redis import AccountKey, Keys, token_fingerprint, translated

FINGERPRINT_LENGTH = len(token_fingerprint(""))

log = logging.getLogger(__name__)


def account_key(client: Any, keys: Keys, destination: str, token: str) -> AccountKey:
    """The fingerprint that keys `destination`'s throttle and circuit state (see the docstring)."""
    key = keys.account(destination)
    try:
        with translated(f"the account of destination {destination}"):
            client.set(key, token_fingerprint(token), nx=True)
            recorded = client.get(key)
    except StateStoreError as exc:
        log.warning("destination %s: %s; its throttle and circuit state are keyed by the current token; if "
                    "the token was rotated since the fleet first started, restart this replica once Redis "
                    "answers", destination, exc)
        return AccountKey(token_fingerprint(token))
    if isinstance(recorded, bytes):
        recorded = recorded.decode("ascii", "replace")
    if not isinstance(recorded, str) or len(recorded) != FINGERPRINT_LENGTH:
        recorded = token_fingerprint(token)  # deleted in between, or not ours: this token's own state
    return AccountKey(recorded)


class AccountRecord:
    """One destination's record, written again by a live replica (see the module docstring)."""

    def __init__(self, client: Any, keys: Keys, destination: str) -> None:
        self.client = client
        self.key = keys.account(destination)
        self.destination = destination

    def follow(self, fingerprint: str) -> str:
        """Write `fingerprint` if the record is missing; the recorded one (one round trip)."""
        with translated(f"the account of destination {self.destination}"):
            pipe = self.client.pipeline(transaction=False)  # one key: one slot on a cluster too
            pipe.set(self.key, fingerprint, nx=True)
            pipe.get(self.key)
            _, recorded = pipe.execute()
        if isinstance(recorded, bytes):
            recorded = recorded.decode("ascii", "replace")
        if not isinstance(recorded, str) or len(recorded) != FINGERPRINT_LENGTH:
            return fingerprint  # deleted in between, or not ours: keep counting where we are
        return recorded
