"""The records a `replay` run re-published: a duplicate is the same origin *and* the same content.

Dead-lettering is at-least-once, so one source record may sit in the DLQ twice: the run re-publishes
it once. But the DLQ is input too (README, "SRE replay"): whoever may write to it chooses
`dlq.original.*`. Matching on the origin alone, a forged record naming a real dead-letter's origin,
placed before it, was re-published and the real one skipped as a duplicate, the group's position
committed past it: its event was never replayed. So a copy counts as a duplicate only when its key
and value are those of the record re-published for that origin.

Memory (a token outage dead-letters ten million records): the origins stay in an OriginSet
(consumer/sre/origin_set.py, 0 to 16 bytes each), and each record re-published adds one 8-byte
fingerprint: a BLAKE2b-64 of its origin, key and value, keyed with a secret drawn for the run. The
fingerprints sit in a few sorted arrays of unsigned 64-bit integers (a log-structured merge: runs
of doubling size, at most one per power of two), plus up to PENDING new ones in a set; a merge
copies two runs for a moment. So about 8 to 10 bytes a record, 11 at the peak (measured in
tests/unit/sre/test_replay_forged_origin.py), about 100 MB for ten million; a lookup (asked only
when the origin was seen before) is a bisection per run.

A forged record makes a real one be skipped only if its fingerprint equals the real one's: the key
is unknown to whoever writes the DLQ and new at each run, so that is a chance of 2^-64 per forged
record, with nothing to search for it offline.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from bisect import bisect_left
from heapq import merge

from consumer.sre.dlq_read import DeadLetter
from consumer.sre.origin_set import OriginSet

PENDING = 4096  # new fingerprints kept in a set before they become a sorted run


class _Fingerprints:
    """A set of 64-bit integers in about 8 bytes each: sorted runs, searched by bisection."""

    __slots__ = ("_pending", "_runs")

    def __init__(self) -> None:
        self._runs: list[array[int]] = []  # sorted; sizes decrease along the list
        self._pending: set[int] = set()

    def __contains__(self, value: int) -> bool:
        if value in self._pending:
            return True
        for run in self._runs:
            at = bisect_left(run, value)
            if at < len(run) and run[at] == value:
                return True
        return False

    def add(self, value: int) -> None:
        self._pending.add(value)
        if len(self._pending) < PENDING:
            return
        run = array("Q", sorted(self._pending))
        self._pending = set()
        # Merge while the last run is no larger than the new one: every run is at least twice the
        # next, so there are about log2(n / PENDING) runs and each value is copied log2 times.
        while self._runs and len(self._runs[-1]) <= len(run):
            run = array("Q", merge(self._runs.pop(), run))
        self._runs.append(run)

    def __len__(self) -> int:
        return len(self._pending) + sum(len(run) for run in self._runs)


class ReplayedRecords:
    """What a run re-published, by origin and content: `letter in replayed`, `replayed.add(letter)`."""

    __slots__ = ("_fingerprints", "_key", "_origins")

    def __init__(self) -> None:
        self._origins = OriginSet()
        self._fingerprints = _Fingerprints()
        # Per run, never shown: whoever writes the DLQ cannot aim a record at a fingerprint.
        self._key = os.urandom(16)

    def _fingerprint(self, letter: DeadLetter) -> int:
        digest = hashlib.blake2b(digest_size=8, key=self._key)
        topic, partition, offset = letter.origin
        digest.update(f"{len(topic)}:{topic}:{partition}:{offset}".encode())
        for part in (letter.key, letter.value):
            # Length-prefixed, and None (no key, a tombstone) apart from b"": no two records alike.
            digest.update(b"-" if part is None else f"{len(part)}:".encode() + part)
        return int.from_bytes(digest.digest(), "big")

    def __contains__(self, letter: object) -> bool:
        if not isinstance(letter, DeadLetter) or letter.origin not in self._origins:
            return False  # a new origin, the common case: no fingerprint computed
        return self._fingerprint(letter) in self._fingerprints

    def add(self, letter: DeadLetter) -> None:
        self._origins.add(letter.origin)
        self._fingerprints.add(self._fingerprint(letter))

    def __len__(self) -> int:
        return len(self._fingerprints)
