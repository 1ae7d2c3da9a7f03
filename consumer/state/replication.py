"""Dedup marks on replicas before anyone relies on them (DEDUP_WAIT_REPLICAS; README, "Redis Cluster").

Redis replicates asynchronously: a master that dies takes its last writes with it, and the replica
promoted in its place never had them. For the dedup state that means a claim or a delivered mark
can vanish in a failover, and a copy of that event read afterwards would be sent again. With
DEDUP_WAIT_REPLICAS=N, `ReplicatedDedup` waits after every claim that claimed something and after
every settlement until N replicas of every master acknowledged it (Redis `WAIT`), so the sender
only POSTs behind a replicated claim and only reports an outcome (and commits its offset) behind a
replicated mark. When fewer replicas answer within DEDUP_WAIT_TIMEOUT_MS, the call fails as Redis
being away does: fail closed (no send), the outcome retried.

`WAIT` covers the writes of the connection it runs on, and the dedup store's writes ran on
whichever pooled connection they took. So the wait writes a marker key on one connection of each
master and waits there: a master replicates its writes in order, and the marker went after the
dedup writes that had already answered, so once a replica has the marker it has them too. This
works whatever the layout of the dedup keys (they may move to other slots, RedisDedup is not
touched), at the price of one marker write and one `WAIT` per master per call.

`ReplicatedCooldown` does the same for the contact cooldown's phone reservations and contacts
(consumer/state/cooldown.py): a contact lost in a failover would let a second survey through.

Both wrap their store's steps too (consumer/state/trip.py): a claim and a phone reservation sent
in one round trip are followed by one wait, when the two wrappers share their `ReplicationWait`
(consumer/app.py builds one), and it runs before the caller reads the answers, so before any POST.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from consumer.errors import StateStoreError
from consumer.state.arming import Arming
from consumer.state.cooldown import CooldownStore, PhoneFate, PhoneRequest, PhoneStatus
from consumer.state.dedup import ClaimRequest, ClaimStatus, ClaimStatuses, DedupStore, Settlement
from consumer.state.redis import translated
from consumer.state.trip import Step, together

# The marker only has to outlive one wait; it expires on its own.
MARKER_TTL_MS = 60_000


class ReplicationWait:
    """Calling it returns once `replicas` replicas of every master have every write that answered
    before the call; raises StateStoreError when fewer acknowledge within `timeout_ms`."""

    def __init__(self, client: Any, prefix: str, *, replicas: int, timeout_ms: int) -> None:
        self.client = client
        self.prefix = prefix
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._markers: dict[str, str] = {}  # cluster node name -> a marker key that node serves

    def __call__(self) -> None:
        with translated("waiting for Redis replicas"):
            for name, node, marker in self._masters():
                pipe = node.pipeline(transaction=False)  # one connection: the marker, then WAIT on it
                pipe.set(marker, "1", px=MARKER_TTL_MS)
                pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
                _, acknowledged = pipe.execute()
                if int(acknowledged) < self.replicas:
                    raise StateStoreError(
                        f"only {int(acknowledged)} of {self.replicas} Redis replicas of {name} acknowledged the "
                        f"dedup writes within {self.timeout_ms} ms (DEDUP_WAIT_REPLICAS, DEDUP_WAIT_TIMEOUT_MS)")

    def _masters(self) -> list[tuple[str, Any, str]]:
        """(name, client of that master alone, a key it serves) for every master."""
        if not isinstance(self.client, redis.RedisCluster):
            return [("redis", self.client, f"{{{self.prefix}}}:replicated")]
        cluster: Any = self.client  # redis-py's cluster methods are untyped
        masters = list(cluster.get_primaries())
        # The cluster client's slot map is the one the dedup calls just used (they refresh it on
        # MOVED); a marker is a hash tag of its own that lands in a slot of its master.
        stale = [n for n in masters if self._markers.get(n.name) is None
                 or cluster.get_node_from_key(self._markers[n.name]).name != n.name]
        if stale:
            self._find_markers({n.name for n in stale})
        return [(n.name, cluster.get_redis_connection(n), self._markers[n.name]) for n in masters]

    def _find_markers(self, names: set[str]) -> None:
        cluster: Any = self.client
        wanted = set(names)
        for i in range(1_000_000):
            if not wanted:
                return
            key = f"{{{self.prefix}:replicated:{i}}}"
            owner = cluster.get_node_from_key(key).name
            if owner in wanted:
                self._markers[owner] = key
                wanted.discard(owner)
        raise StateStoreError(f"no marker key found for Redis nodes {sorted(wanted)}")


class ReplicatedDedup:
    """A DedupStore whose claims and settled outcomes are replicated before the caller goes on."""

    def __init__(self, inner: DedupStore, wait: Callable[[], None]) -> None:
        """`wait`: a ReplicationWait (raises StateStoreError when the replicas do not acknowledge)."""
        self.inner = inner
        self.wait = wait

    def new_tag(self) -> str:
        return self.inner.new_tag()

    def claim(self, tag: str, requests: Sequence[ClaimRequest], arming: Arming = Arming.ARM,
              renewal: bool = False) -> ClaimStatuses:
        answer: ClaimStatuses = together([self.stage_claim(tag, requests, arming, renewal)])[0]
        return answer

    def stage_claim(self, tag: str, requests: Sequence[ClaimRequest],
                    arming: Arming = Arming.ARM, renewal: bool = False) -> Step[ClaimStatuses]:
        # Only a claim granted is relied on (a POST follows, or it is armed for one); the other
        # statuses send nothing.
        return self.inner.stage_claim(tag, requests, arming, renewal).then_wait(
            self.wait, lambda statuses: any(status is ClaimStatus.CLAIMED for status in statuses))

    def settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str], tombstone: bool = False) -> None:
        together([self.stage_settle(outcome, tag, event_ids, tombstone)])

    def stage_settle(self, outcome: Settlement, tag: str, event_ids: Sequence[str],
                     tombstone: bool = False) -> Step[None]:
        return self.inner.stage_settle(outcome, tag, event_ids, tombstone).then_wait(
            self.wait, lambda _: bool(event_ids))

    def state(self, event_id: str) -> str | None:
        return self.inner.state(event_id)

    def states(self, event_ids: Sequence[str]) -> list[str | None]:
        return self.inner.states(event_ids)  # a read: nothing to wait for


class ReplicatedCooldown:
    """A CooldownStore whose reservations and contacts are replicated before the caller goes on."""

    def __init__(self, inner: CooldownStore, wait: Callable[[], None]) -> None:
        self.inner = inner
        self.wait = wait

    def reserve(self, tag: str, requests: Sequence[PhoneRequest], *, window_ms: int,
                arming: Arming = Arming.ARM, renewal: bool = False) -> list[PhoneStatus]:
        answer: list[PhoneStatus] = together([self.stage_reserve(tag, requests, window_ms=window_ms,
                                                                 arming=arming, renewal=renewal)])[0]
        return answer

    def stage_reserve(self, tag: str, requests: Sequence[PhoneRequest], *, window_ms: int,
                      arming: Arming = Arming.ARM, renewal: bool = False) -> Step[list[PhoneStatus]]:
        return self.inner.stage_reserve(tag, requests, window_ms=window_ms, arming=arming,  # a POST follows
                                        renewal=renewal).then_wait(
            self.wait, lambda statuses: any(status is PhoneStatus.RESERVED for status in statuses))

    def settle(self, fate: PhoneFate, tag: str, keys: Sequence[str], tombstone: bool = False) -> None:
        together([self.stage_settle(fate, tag, keys, tombstone)])

    def stage_settle(self, fate: PhoneFate, tag: str, keys: Sequence[str], tombstone: bool = False) -> Step[None]:
        # A release lost in a failover only blocks a phone longer (or, covering a contact, forgets
        # an older contact, one the campaign that reserved did not count anyway).
        return self.inner.stage_settle(fate, tag, keys, tombstone).then_wait(
            self.wait, lambda _: bool(keys) and fate is not PhoneFate.RELEASED)

    def state(self, key: str) -> str | None:
        return self.inner.state(key)
