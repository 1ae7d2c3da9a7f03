"""Which records have a receipt already: one receipt per record across restarts and rebalances.

A record's offset is committed only after its receipt is acknowledged, but a partition commits
only up to its oldest record without an outcome: records that finished out of order past it (a
dead-letter ends at once, a delivery waits for its batch) are read again by the partition's next
owner after a rebalance or a crash, and would get a second receipt. So every acknowledged receipt
marks its origin, and the next owner, when it is assigned the partition, loads the partition's
marks and ends a record marked already without a second receipt (its outcome was written).

The marks of a partition live in one sorted set per consumer group and partition, member
`offset:fingerprint` (`consumer.state.dead_letters.Origin`: a topic created again reuses
offsets), score the offset. A mark is useless once its offset is committed, so a confirmed commit
removes the marks below it: the set holds about the records past the commit point, never the
topic's history. Each set expires DEDUP_HORIZON_S after its last write (a partition no one
consumes any more).

What is left (README, "Receipts"): a receipt acknowledged but not marked yet (the mark is written
in the poll turn after the acknowledgement) when its replica dies, a receipt acknowledged while
Redis is unreachable (receipts go on without marks for a while), or a commit the coordinator lost
after the marks below it were removed: such a record, read again, gets a second receipt.

`ReceiptMarks` is the contract; `RedisReceiptMarks` keeps the marks in Redis,
`consumer.state.memory.MemoryReceiptMarks` in memory. Both pass
tests/contract/test_receipt_marks_contract.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from consumer.state.dead_letters import Origin
from consumer.state.redis import Keys, stored_number, stored_text, translated

TopicPartition = tuple[str, int]


class ReceiptMarks(Protocol):
    def receipted(self, group: str, tp: TopicPartition) -> dict[int, str]:
        """Offset -> fingerprint of the partition's records whose receipts were acknowledged
        (those at or past the last commit that removed marks). StateStoreError when the store is away."""

    def mark(self, group: str, origins: Sequence[Origin]) -> None:
        """These records' receipts were acknowledged. StateStoreError when the store is away."""

    def forget_below(self, group: str, points: Mapping[TopicPartition, int]) -> None:
        """Offsets below each partition's committed point are never read again: remove their
        marks. StateStoreError when the store is away."""


class RedisReceiptMarks:
    def __init__(self, client: Any, keys: Keys, *, horizon_s: int) -> None:
        self.client = client
        self.keys = keys
        self.horizon_ms = horizon_s * 1000

    def receipted(self, group: str, tp: TopicPartition) -> dict[int, str]:
        with translated("reading receipt marks"):
            members = self.client.zrange(self.keys.receipts(group, *tp), 0, -1)
        out: dict[int, str] = {}
        for member in members:
            offset, _, fingerprint = stored_text(member).partition(":")
            number = stored_number(offset)
            if number is not None:
                out[number] = fingerprint
        return out

    def mark(self, group: str, origins: Sequence[Origin]) -> None:
        by_key: dict[str, dict[str, int]] = {}
        for o in origins:
            by_key.setdefault(self.keys.receipts(group, o.topic, o.partition), {})[f"{o.offset}:{o.fingerprint}"] \
                = o.offset
        if not by_key:
            return
        with translated("writing receipt marks"):
            pipe = self.client.pipeline(transaction=False)
            for key, members in by_key.items():
                pipe.zadd(key, members)
                pipe.pexpire(key, self.horizon_ms)
            pipe.execute()

    def forget_below(self, group: str, points: Mapping[TopicPartition, int]) -> None:
        if not points:
            return
        with translated("removing receipt marks"):
            pipe = self.client.pipeline(transaction=False)
            for tp, offset in points.items():
                pipe.zremrangebyscore(self.keys.receipts(group, *tp), "-inf", f"({offset}")
            pipe.execute()

