"""Which records were dead-lettered already: dead-lettering once per origin (issue 11, finding 9).

A record's offset is committed only after its dead-letter is acknowledged, so a replica killed (or
a partition revoked) between the acknowledgement and the commit leaves the record to be read again
by the next owner, which would dead-letter it a second time. So once Kafka acknowledged a
dead-letter, a mark is set for its origin (topic, partition, offset), kept for DEDUP_HORIZON_S;
before a dead-letter is produced, its origin's mark is looked up, and a record marked already ends
as dead-lettered without a second copy.

The mark holds the record's fingerprint (Kafka timestamp and a digest of its key and value): a
topic deleted and created again reuses offsets, and a new record at an old origin must still be
dead-lettered.

What is left: a dead-letter produced but whose mark was not written yet (from `produce` to the
acknowledgement, then one Redis round trip) when the replica dies, or while Redis is unreachable
(dead-lettering goes on without marks), is dead-lettered again by the next owner. The replay tool
and `dlq stats` still count each origin once.

`DeadLetterMarks` is the contract; `RedisDeadLetterMarks` keeps the marks in Redis (one MGET to
look up, one pipelined write per batch of acknowledgements), `consumer.state.memory.MemoryDeadLetterMarks`
in memory. Both pass tests/contract/test_dead_letter_marks_contract.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from consumer.state.redis import Keys, stored_text, translated


@dataclass(frozen=True)
class Origin:
    """Where a dead-lettered record came from, and what it was."""

    topic: str
    partition: int
    offset: int
    fingerprint: str

    @classmethod
    def of(cls, message: Any) -> Origin:
        """The origin of a consumed record (an InboundRecord or a Kafka message)."""
        _, timestamp = message.timestamp()
        digest = hashlib.blake2b(digest_size=12)
        for part in (message.key(), message.value()):
            digest.update(b"-" if part is None else len(part).to_bytes(8, "big") + part)
        return cls(message.topic(), message.partition(), message.offset(), f"{timestamp}:{digest.hexdigest()}")


class DeadLetterMarks(Protocol):
    def seen(self, origins: Sequence[Origin]) -> list[bool]:
        """For each origin, whether its record was dead-lettered (and acknowledged) before.
        StateStoreError when the store is away."""

    def mark(self, origins: Sequence[Origin]) -> None:
        """These records' dead-letters were acknowledged. StateStoreError when the store is away."""


class RedisDeadLetterMarks:
    def __init__(self, client: Any, keys: Keys, *, horizon_s: int) -> None:
        self.client = client
        self.keys = keys
        self.horizon_ms = horizon_s * 1000

    def seen(self, origins: Sequence[Origin]) -> list[bool]:
        if not origins:
            return []
        with translated("reading dead-letter marks"):
            values = self.client.mget([self._key(o) for o in origins])
        return [value is not None and stored_text(value) == o.fingerprint
                for o, value in zip(origins, values, strict=True)]

    def mark(self, origins: Sequence[Origin]) -> None:
        if not origins:
            return
        with translated("writing dead-letter marks"):
            pipe = self.client.pipeline(transaction=False)
            for origin in origins:
                pipe.set(self._key(origin), origin.fingerprint, px=self.horizon_ms)
            pipe.execute()

    def _key(self, origin: Origin) -> str:
        return self.keys.dead_letter(origin.topic, origin.partition, origin.offset)

