"""Which records have a receipt already: one receipt per record across restarts and rebalances.

A record's offset is committed only after its receipt is acknowledged, but a partition commits
only up to its oldest record without an outcome: records that finished out of order past it (a
dead-letter ends at once, a delivery waits for its batch) are read again by the partition's next
owner after a rebalance or a crash, and would get a second receipt. So every acknowledged receipt
marks its origin, and the next owner, when it is assigned the partition, loads the partition's
marks and ends a record marked already without a second receipt (its outcome was written).

The marks of a partition live in one sorted set per consumer group and partition, member
`offset:fingerprint` (`consumer.state.dead_letters.Origin`: a topic created again reuses
offsets), score the offset (`consumer.state.dead_letters.PartitionMarks`, as the dead-letter
marks). A mark is useless once its offset is committed for good, so the marks below a confirmed
commit are removed a minute after it (`consumer.outcomes.confirmed_commits.ConfirmedCommits`: a
coordinator that fails over can lose a commit it confirmed, and the 15 s recommit restores it):
the set holds about the records past the commit point, never the topic's history. Each
set expires DEDUP_HORIZON_S after its last write (a partition no one consumes any more).

What is left (README, "Receipts"): a receipt acknowledged but not marked yet (the mark is written
in the poll turn after the acknowledgement) when its replica dies, a receipt acknowledged while
Redis is unreachable (receipts go on without marks for a while), or a commit the coordinator lost
and nobody recommitted within that minute: such a record, read again by a next owner, gets a
second receipt (the replica itself keeps what it could not mark in memory, for a move back).

`ReceiptMarks` is the contract; `RedisReceiptMarks` keeps the marks in Redis,
`consumer.state.memory.MemoryReceiptMarks` in memory. Both pass
tests/contract/test_receipt_marks_contract.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from consumer.state.dead_letters import MARKS_PAGE, MAX_PARTITION_MARKS, Origin, PartitionMarks, TopicPartition
from consumer.state.redis import Keys


class ReceiptMarks(Protocol):
    def receipted(self, group: str, tp: TopicPartition) -> dict[int, str]:
        """Offset -> fingerprint of the partition's records whose receipts were acknowledged
        (those at or past the last commit that removed marks). StateStoreError when the store is away;
        OversizeStateError, naming the key, when it holds more than MAX_PARTITION_MARKS
        (consumer/state/dead_letters.py `read_sets`): no wait makes it smaller."""

    def mark(self, group: str, origins: Sequence[Origin]) -> None:
        """These records' receipts were acknowledged. StateStoreError when the store is away."""

    def forget_below(self, group: str, points: Mapping[TopicPartition, int]) -> None:
        """Offsets below each partition's committed point are never read again: remove their
        marks. StateStoreError when the store is away."""


class RedisReceiptMarks:
    def __init__(self, client: Any, keys: Keys, *, horizon_s: int, most: int = MAX_PARTITION_MARKS,
                 page: int = MARKS_PAGE) -> None:
        self.client = client
        self.keys = keys
        self.sets = PartitionMarks(client, keys.receipts, horizon_s=horizon_s, what="receipt marks", most=most,
                                   page=page)

    def receipted(self, group: str, tp: TopicPartition) -> dict[int, str]:
        return self.sets.load(group, tp)

    def mark(self, group: str, origins: Sequence[Origin]) -> None:
        self.sets.mark(group, origins)

    def forget_below(self, group: str, points: Mapping[TopicPartition, int]) -> None:
        self.sets.forget_below(group, points)
