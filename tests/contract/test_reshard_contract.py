"""The dedup and cooldown state while a Redis Cluster reshards a bucket's slot.

`redis-cli --cluster reshard` moves a slot in steps: CLUSTER SETSLOT <slot> IMPORTING on the
target, MIGRATING on the source, MIGRATE of the slot's keys in batches, then SETSLOT <slot> NODE on
both. In between, Redis redirects a command (ASK to the target, or TRYAGAIN) only by the keys it
declares. A claim must then answer what the id's mark says (D here), or fail closed
(StateStoreError: the request is not sent), never C: that is a second SMS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from consumer.errors import StateStoreError
from consumer.state.cooldown import PhoneFate, PhoneRequest, PhoneStatus, RedisCooldown, phone_key
from consumer.state.dedup import ClaimRequest, RedisDedup, Settlement
from consumer.state.redis import Keys
from tests.conftest import flushed_client, localstack

HOST = "127.0.0.1"


@dataclass
class Reshard:
    """One slot moved from its master to another by hand, as redis-cli --cluster reshard does,
    and put back (the keys deleted first: every test flushes the cluster anyway) at the end."""

    slot: int
    source: int
    target: int
    ids: dict[int, str] = field(default_factory=dict)
    finished: bool = False

    def begin(self) -> None:
        for port in localstack.cluster_topology():
            self.ids[port] = _text(localstack.node_command(port, "CLUSTER MYID"))
        localstack.node_command(self.target, "CLUSTER SETSLOT", self.slot, "IMPORTING", self.ids[self.source])
        localstack.node_command(self.source, "CLUSTER SETSLOT", self.slot, "MIGRATING", self.ids[self.target])

    def keys_on(self, port: int) -> list[str]:
        return sorted(_text(k) for k in localstack.node_command(port, "CLUSTER GETKEYSINSLOT", self.slot, 1000))

    def migrate(self, keys: list[str]) -> None:
        assert keys
        assert localstack.node_command(self.source, "MIGRATE", HOST, self.target, "", 0, 5000,
                                       "KEYS", *keys) in (b"OK", "OK", True)

    def finish(self) -> None:
        """SETSLOT NODE on the target, then the source, then every other master (redis-cli's order)."""
        for port in (self.target, self.source, *(p for p in self.ids if p not in (self.source, self.target))):
            localstack.node_command(port, "CLUSTER SETSLOT", self.slot, "NODE", self.ids[self.target])
        self.finished = True

    def undo(self) -> None:
        """Back to the source owning the slot, stable, with no key of the slot anywhere."""
        owner = self.target if self.finished else self.source
        for key in self.keys_on(owner):
            localstack.node_command(owner, "DEL", key)  # one at a time: a migrating slot's DEL of several may TRYAGAIN
        if not self.finished:
            for key in self.keys_on(self.target):
                _asking(self.target, "DEL", key)  # the importing node serves its keys only after ASKING
        if self.finished:
            localstack.node_command(self.source, "CLUSTER SETSLOT", self.slot, "IMPORTING", self.ids[self.target])
            localstack.node_command(self.target, "CLUSTER SETSLOT", self.slot, "MIGRATING", self.ids[self.source])
            for port in (self.source, self.target, *(p for p in self.ids if p not in (self.source, self.target))):
                localstack.node_command(port, "CLUSTER SETSLOT", self.slot, "NODE", self.ids[self.source])
        else:
            for port in (self.target, self.source):
                localstack.node_command(port, "CLUSTER SETSLOT", self.slot, "STABLE")
        localstack.wait_cluster()


def _asking(port: int, *command: Any) -> Any:
    """A command to the node of an importing slot, after ASKING on the same connection."""
    with redis.Redis(host=HOST, port=port, socket_timeout=2) as client:
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.execute_command(*command)
        return pipe.execute()[1]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@pytest.fixture
def reshard(request: pytest.FixtureRequest) -> Iterator[Any]:
    """`reshard(key)`: a Reshard of that key's slot from its master to the next master."""
    made: list[Reshard] = []

    def start(key: str) -> Reshard:
        slot = int(localstack.node_command(localstack.CLUSTER_PORTS[0], "CLUSTER KEYSLOT", key))
        source = localstack.cluster_master_of(key)
        masters = sorted(localstack.cluster_topology())
        target = masters[(masters.index(source) + 1) % len(masters)]
        moving = Reshard(slot, source, target)
        made.append(moving)
        moving.begin()
        return moving

    yield start
    for moving in made:
        moving.undo()


def _dedup(request: pytest.FixtureRequest) -> RedisDedup:
    return RedisDedup(flushed_client(request, "cluster"), Keys("t"), lease_ms=60_000, horizon_s=3600)


def _claim_again(dedup: RedisDedup, event_id: str) -> str:
    """What a second claim of a delivered id answers: its status, or "fail closed"."""
    try:
        return dedup.claim(dedup.new_tag(), [ClaimRequest(event_id)])[0].value
    except StateStoreError:
        return "fail closed"


# (what moves before the second claim): "none" the slot is only marked migrating; "mark" the
# slice hash holding the id's mark; "other" only another slice of the bucket (the mark stays);
# "all" every key of the slot; "finished" every key, then SETSLOT NODE (the move is over).
STEPS = ["none", "mark", "other", "all", "finished"]


@pytest.mark.parametrize("step", STEPS)
def test_a_delivered_id_is_never_claimed_again_while_its_slot_moves(request: pytest.FixtureRequest, reshard: Any,
                                                                    step: str) -> None:
    dedup = _dedup(request)
    tag = dedup.new_tag()
    assert [s.value for s in dedup.claim(tag, [ClaimRequest("e1")])] == ["C"]
    dedup.settle(Settlement.DELIVERED, tag, ["e1"])
    (base, _), = dedup._group(["e1"])
    mark = next(_text(k) for k in localstack.node_command(localstack.cluster_master_of(base), "KEYS", f"{base}:*"))
    # an older slice of the same bucket, holding another id's mark (the bucket's history)
    older = f"{base}:{int(mark.rsplit(':', 1)[1]) - 1}"
    dedup.client.hset(older, mapping={"#": "x", "f" * 14: "d"})
    moving = reshard(base)
    if step == "mark":
        moving.migrate([mark])
    elif step == "other":
        moving.migrate([older])
    elif step in ("all", "finished"):
        moving.migrate(moving.keys_on(moving.source))
    if step == "finished":
        moving.finish()
    where = {"source": moving.keys_on(moving.source), "target": moving.keys_on(moving.target)}
    answer = _claim_again(dedup, "e1")
    after = {"source": moving.keys_on(moving.source), "target": moving.keys_on(moving.target)}
    assert answer in ("D", "fail closed"), (
        f"a delivered id was claimed again ({answer}) with the slot {step!r}; keys {where}, afterwards {after}")
    assert after == where  # nothing written beside the slot's keys (a D writes nothing)
    try:
        seen = dedup.state("e1")
    except StateStoreError:
        seen = "fail closed"
    assert seen in ("d", "fail closed")  # what an SRE's `check` reads: never "no mark"


def test_a_delivery_settled_while_its_slot_moves_is_kept(request: pytest.FixtureRequest, reshard: Any) -> None:
    """Settled while the slot is only marked migrating: the mark must land where the slot's keys
    are (or the settlement fail closed, the claim then held and ambiguous, never free), and the
    reshard must still move every key. A mark written into a new key on the target, beside its
    namesake still on the source, makes redis-cli's MIGRATE fail (BUSYKEY) or, with
    --cluster-replace, overwrites one with the other."""
    dedup = _dedup(request)
    tag = dedup.new_tag()
    assert [s.value for s in dedup.claim(tag, [ClaimRequest("e1")])] == ["C"]
    (base, _), = dedup._group(["e1"])
    moving = reshard(base)
    with contextlib.suppress(StateStoreError):  # fails closed: the claim stays, held by its lease, then ambiguous
        dedup.settle(Settlement.DELIVERED, tag, ["e1"])
    moving.migrate(moving.keys_on(moving.source))
    moving.finish()
    assert _claim_again(dedup, "e1") in ("D", "H")


@pytest.mark.parametrize("step", ["none", "moved", "finished"])
def test_a_contacted_phone_stays_in_cooldown_while_its_slot_moves(request: pytest.FixtureRequest, reshard: Any,
                                                                 step: str) -> None:
    """The cooldown's scripts declare every key they touch (the phones' keys): Redis redirects
    them by those, so a contact is seen wherever its key is."""
    cooldown = RedisCooldown(flushed_client(request, "cluster"), lease_ms=60_000, ttl_ms=3_600_000)
    phone, other = phone_key(Keys("t"), "0" * 32), phone_key(Keys("t"), "0000" + "1" * 28)
    assert phone.split("}")[0] == other.split("}")[0]  # one bucket, one call
    assert cooldown.reserve("o|1", [PhoneRequest(phone)], window_ms=3_600_000) == [PhoneStatus.RESERVED]
    cooldown.settle(PhoneFate.ACCEPTED, "o|1", [phone])
    moving = reshard(phone)
    if step in ("moved", "finished"):
        moving.migrate([phone])
    if step == "finished":
        moving.finish()
    try:
        answer = [s.value for s in cooldown.reserve("o|2", [PhoneRequest(phone), PhoneRequest(other)],
                                                   window_ms=3_600_000)]
    except StateStoreError:
        answer = ["fail closed"]
    assert answer in (["C", "R"], ["fail closed"])
