"""Which records were dead-lettered already: dead-lettering once per origin (issue 11, finding 9).

A record's offset is committed only after its dead-letter is acknowledged, so a replica killed (or
a partition revoked) between the acknowledgement and the commit leaves the record to be read again
by the next owner, which would dead-letter it a second time. So once Kafka acknowledged a
dead-letter, a mark is set for its origin; before a dead-letter is produced, its origin's mark is
looked up, and a record marked already ends as dead-lettered without a second copy.

The marks are kept as the receipt marks are (consumer/state/receipt_marks.py, `PartitionMarks`
below): one sorted set per consumer group, dead-letter topic and source partition, member
`offset:fingerprint`, score the offset, its own hash tag `{<prefix>:dl:<group>:<dlq topic>:<topic>:<partition>}`
so a Redis Cluster spreads the partitions over its masters. Another group reading the same topic
(or the group writing to another dead-letter topic) has marks of its own. A mark is useless once
its offset is committed, so a confirmed commit removes the marks below it (`forget_below`, from
the pipeline's commit callback, a minute after the broker confirmed it: a coordinator that fails
over can lose a confirmed commit, consumer/outcomes/confirmed_commits.py): a set holds
about the records past the commit point and the last minute's, not a week of dead-letters. Each
set expires DEDUP_HORIZON_S after its last write (a partition no one consumes any more).

The mark holds the record's fingerprint (Kafka timestamp and a digest of its key and value): a
topic deleted and created again reuses offsets, and a new record at an old origin must still be
dead-lettered. Its score holds the dead-letter's reason beside the offset (`mark_score`): the
partition's next owner loads the marks when it is assigned the partition and ends a record
dead-lettered before as dead-lettered again, with that reason, before anything else is done with
it (consumer/outcomes/deadletter.py): a record throttled to the end by a 429 storm and read again
once the storm is over is not sent; one record, one outcome.

The previous layout (0.2.0) kept one string per record in the prefix's slot,
`{<prefix>}:dl:<topic>:<partition>:<offset>` (`Keys.dead_letter`), for DEDUP_HORIZON_S. A mark
0.2.0 left must still stop this version's second copy, so those keys are read too (in the lookup's
round trip, never written) for as long as the dedup layout reads 0.2.0's dedup marks: its first
replica looks for both kinds of 0.2.0 mark once, when it creates the layout, and if it finds any,
they are read for one horizon (consumer/state/dedup_layout.py; a 0.2.0 fleet is stopped before
0.3.0 starts, README "Upgrading from 0.2.0", so none come later). A fleet that never ran 0.2.0
never reads them once its first claim loaded the layout (before that, they are read: the poll
loop never waits for the layout's creation), and a dead-letter then costs no lookup of them.

Each dead-letter (but an ambiguous one: its event id's unknown mark keeps its record from being
sent) is also noted, with its reason, before it is produced, in a second sorted set
beside the marks (`sending_key`, same hash slot): a record whose dead-letter was produced but not
acknowledged when its replica died is dead-lettered again by the next owner (a second copy, maybe),
never processed again. While Redis is unreachable, dead-letters wait, uncommitted, until their
note is written (consumer/outcomes/deadletter.py). What is left: a dead-letter acknowledged but
not marked when its replica dies, or while Redis is away, may get a second copy; a record read
again after its group's offsets were moved back past a commit is processed again from scratch (its
mark was removed). The replay tool and `dlq stats` still
count each origin once.

A partition's sets are read at assignment in pages (`read_sets`: MARKS_PAGE members of each set a
round trip, their sizes asked with the first), never more than MAX_PARTITION_MARKS of a set: a
set past it (hostile or corrupted content: this consumer never writes that many) is not read, and
its partition goes without its marks, as when its key holds what we did not write (one warning
naming the key, its size and what to do; consumer/outcomes/owned_marks.py). Read in one reply, such
a set took longer than REDIS_TIMEOUT_MS, was taken for an outage, and the partition was never
fetched.

`DeadLetterMarks` is the contract; `RedisDeadLetterMarks` keeps the marks in Redis (one pipelined
ZMSCORE per partition to look up, one pipelined write of notes and one of marks per poll turn with
dead-letters, one round trip per page of a partition's marks and notes to load them at assignment),
`consumer.state.memory.MemoryDeadLetterMarks` in memory. Both pass
tests/contract/test_dead_letter_marks_contract.py.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from consumer.errors import OversizeStateError
from consumer.state.redis import Keys, stored_number, stored_text, translated

TopicPartition = tuple[str, int]

# The most marks one of a partition's sets may hold before its load gives up on it. A set holds
# the marks of the partition's records past its commit point, and of the last MARKS_KEEP_S (60 s)
# before it (they go a minute after each confirmed commit): at the most one replica consumes,
# about 16,700 records/s (README, "Receipts", "What it costs"), a minute of a partition alone is
# 1,000,000 marks. More is not what this consumer wrote in its normal running (a hostile or
# corrupted key), or a partition whose commit point stood still for minutes at that rate: either
# way, read whole, its load would hold the poll loop for seconds and its copy in memory take
# hundreds of MB, and in one reply it takes longer than REDIS_TIMEOUT_MS (measured: 1,000,000
# marks, 0.84 s to a 500 ms timeout; 4,000,000 past the default 2 s). The partition goes without
# its marks instead: a record of it read again may be judged again (the warning says so).
MAX_PARTITION_MARKS = 1_000_000
# Members of a set read per round trip at a load: a reply Redis builds in milliseconds (about
# 7 ms per page measured on the local stack), far below any REDIS_TIMEOUT_MS.
MARKS_PAGE = 10_000

# A mark's score is its offset plus its dead-letter reason's code over REASON_SPAN: removing the
# marks below a commit (ZREMRANGEBYSCORE) still takes exactly the records below it, and the member
# stays `offset:fingerprint`, which a replica of the previous version looks up (ZMSCORE) during a
# rolling upgrade. The codes are stored in Redis: a code is never given to another reason. Code 0,
# a whole score: a mark of the previous version, its reason unknown. Exact in a double for every
# offset below 2**48.
REASON_CODES = {"pisano_error": 1, "throttled": 2, "retries_exhausted": 3, "transport_error": 4, "ambiguous": 5,
                "decode_error": 6, "oversize": 7, "invalid_event": 8, "unroutable": 9, "unsupported_schema": 10,
                "internal_error": 11, "stale": 12}
REASON_SPAN = 16
_REASONS_BY_CODE = {code: reason for reason, code in REASON_CODES.items()}


def mark_score(offset: int, reason: str | None) -> float:
    return offset + REASON_CODES.get(reason or "", 0) / REASON_SPAN


def mark_reason(score: float) -> str | None:
    """The reason a mark's score holds; None for a mark of the previous version (or a code unknown
    to this one, or a score that is not finite: inf or -inf, written by hand or by a bug)."""
    if not math.isfinite(score):
        return None
    return _REASONS_BY_CODE.get(round((score - math.floor(score)) * REASON_SPAN))


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

    @property
    def member(self) -> str:
        """Its member of its partition's sorted set of marks."""
        return f"{self.offset}:{self.fingerprint}"


class PartitionMarks:
    """Marks of records, one Redis sorted set per scope (a consumer group, with its dead-letter
    topic for the dead-letter marks) and partition: member `offset:fingerprint`, score the offset,
    each set expiring `horizon_s` after its last write. The dead-letter and the receipt marks."""

    def __init__(self, client: Any, key: Callable[[str, str, int], str], *, horizon_s: int, what: str,
                 most: int = MAX_PARTITION_MARKS, page: int = MARKS_PAGE) -> None:
        self.client = client
        self.key = key  # (scope, topic, partition) -> the partition's sorted set
        self.horizon_ms = horizon_s * 1000
        self.what = what  # "receipt marks", in the errors
        self.most = most  # a load's bound (`read_sets`)
        self.page = page

    def load(self, scope: str, tp: TopicPartition) -> dict[int, str]:
        """Offset -> fingerprint of the partition's marks."""
        return {offset: fingerprint for offset, (fingerprint, _) in self.load_scored(scope, tp).items()}

    def load_scored(self, scope: str, tp: TopicPartition) -> dict[int, tuple[str, float]]:
        """Offset -> (fingerprint, score) of the partition's marks. OversizeStateError when the set
        holds more than `most` (`read_sets`)."""
        key = self.key(scope, *tp)
        with translated(f"reading the {self.what} of {tp[0]}[{tp[1]}] (key {key})"):  # the key to look at
            [members] = read_sets(self.client, [key], what=self.what, tp=tp, most=self.most, page=self.page)
        return scored(members)

    def by_key(self, scope: str, origins: Sequence[Origin]) -> dict[str, list[int]]:
        """The indexes of `origins` by the sorted set that holds their marks."""
        keys: dict[str, list[int]] = {}
        for n, o in enumerate(origins):
            keys.setdefault(self.key(scope, o.topic, o.partition), []).append(n)
        return keys

    def mark(self, scope: str, origins: Sequence[Origin], scores: Sequence[float] | None = None) -> None:
        """`scores`: each origin's, its offset when None."""
        if not origins:
            return
        by_key = self.by_key(scope, origins)
        with translated(f"writing {self.what}{named(by_key, len(by_key))}"):
            pipe = self.client.pipeline(transaction=False)
            for key, indexes in by_key.items():
                pipe.zadd(key, {origins[n].member: origins[n].offset if scores is None else scores[n]
                                for n in indexes})
                pipe.pexpire(key, self.horizon_ms)
            pipe.execute()

    def forget_below(self, scope: str, points: Mapping[TopicPartition, int], *,
                     beside: Callable[[str], str] | None = None) -> None:
        """`beside`: another key per partition (in its slot) whose members go below the same
        points, in the same round trip."""
        if not points:
            return
        keys = {self.key(scope, *tp): offset for tp, offset in points.items()}
        touched = [each for key in keys for each in ((key, beside(key)) if beside is not None else (key,))]
        with translated(f"removing {self.what}{named(touched, len(keys))}"):
            pipe = self.client.pipeline(transaction=False)
            for key, offset in keys.items():
                for each in (key, beside(key)) if beside is not None else (key,):
                    pipe.zremrangebyscore(each, "-inf", f"({offset}")
            pipe.execute()


def read_sets(client: Any, keys: Sequence[str], *, what: str, tp: TopicPartition, most: int = MAX_PARTITION_MARKS,
              page: int = MARKS_PAGE) -> list[list[tuple[Any, Any]]]:
    """The (member, score) pairs of a partition's sorted sets `keys` (one hash slot), each in score
    order, read `page` members of each set a round trip, their sizes (ZCARD) asked with the first
    page: bounded in size and time whatever they hold. OversizeStateError naming the key when a set
    holds more than `most`, before anything more is read (or when it grew past it while read).

    Paged by score, not by index: the marks below a commit are removed meanwhile (the previous
    owner's, within its revoke grace), which would move every index and skip members. A page goes
    on past the last score read (exclusive), and asks apart for the members of that score not read
    yet (two records may share an offset, and so a score: a topic created again), by their index
    among that score's alone: a removal below a commit takes all of them or none, so it moves no
    index that counts. (Counted from the last score inclusive, the members of it read already were
    skipped by index: once a commit past it removed them, the marks after them were skipped
    instead, records read again by the new owner as if never judged.)"""
    out: list[list[tuple[Any, Any]]] = [[] for _ in keys]
    # set -> None before its first page, then (its last score read, as Redis reads it back: the
    # shortest repr of the double; how many members of that score were read)
    cursors: dict[int, tuple[str, int] | None] = dict.fromkeys(range(len(keys)))
    first = True
    while cursors:
        pipe = client.pipeline(transaction=False)
        if first:
            for key in keys:
                pipe.zcard(key)
        for n, cursor in cursors.items():
            if cursor is None:
                pipe.zrangebyscore(keys[n], "-inf", "+inf", start=0, num=page, withscores=True)
            else:
                last, read = cursor
                pipe.zrangebyscore(keys[n], last, last, start=read, num=page, withscores=True)
                pipe.zrangebyscore(keys[n], f"({last}", "+inf", start=0, num=page, withscores=True)
        replies = iter(pipe.execute())
        if first:
            for key in keys:
                size = int(next(replies))
                if size > most:
                    raise oversize(key, size, what, tp, most)
            first = False
        for n, cursor in list(cursors.items()):
            ties = next(replies) if cursor is not None else []  # the rest of the last score read
            past = next(replies)  # the scores past it
            out[n].extend(ties)
            if cursor is not None and len(ties) == page:  # that score may have more: the scores past it wait
                cursors[n] = (cursor[0], cursor[1] + page)
            elif len(past) < page:
                out[n].extend(past)
                del cursors[n]  # read to its end
            else:
                out[n].extend(past)
                backwards = [float(score) for _, score in reversed(past)]
                top = backwards[0]
                cursors[n] = (repr(top), sum(1 for _ in itertools.takewhile(top.__eq__, backwards)))
            if len(out[n]) > most:  # grew past it while read
                raise oversize(keys[n], len(out[n]), what, tp, most)
    return out


def oversize(key: str, size: int, what: str, tp: TopicPartition, most: int) -> OversizeStateError:
    """What a load says of a set past its bound: which key, how big, and what to do (owned_marks.py
    logs it in the warning that the partition goes without its marks)."""
    return OversizeStateError(
        f"Redis holds {size:,} {what} of {tp[0]}[{tp[1]}] under key {key}, more than this consumer ever keeps for "
        f"a partition ({most:,}): not read (hostile or corrupted content, or a commit point that stood still "
        f"for minutes); delete that key, or give this fleet a REDIS_KEY_PREFIX of its own if another program "
        f"writes there")


def named(keys: Iterable[str], partitions: int) -> str:
    """" (key K)" or " (keys K and L)" for a call over one partition's keys, else "": a foreign
    key is found and deleted by that name. A call over one partition is the marks' isolation's
    (consumer/outcomes/owned_marks.py `isolating`), the one whose failure says which partition's
    key to delete; a call over several names none (naming them all would name keys that are
    fine, and make an outage's one line a list of keys)."""
    if partitions != 1:
        return ""
    keys = list(keys)
    return f" (key {keys[0]})" if len(keys) == 1 else f" (keys {' and '.join(keys)})"


def scored(members: Sequence[tuple[Any, Any]]) -> dict[int, tuple[str, float]]:
    """Offset -> (fingerprint, score) of a sorted set's members read back (ZRANGE WITHSCORES); a
    member whose offset is no number is skipped."""
    out: dict[int, tuple[str, float]] = {}
    for member, score in members:
        offset, _, fingerprint = stored_text(member).partition(":")
        number = stored_number(offset)
        if number is not None:
            out[number] = (fingerprint, float(score))
    return out


class Mark(NamedTuple):
    """What a partition's marks say of one offset: the record's fingerprint, its dead-letter's
    reason (None: a mark of the previous version), and whether Kafka acknowledged the dead-letter
    (False: it was about to be produced when the mark was written; it may not be in the topic)."""

    fingerprint: str
    reason: str | None
    acknowledged: bool


class DeadLetterMarks(Protocol):
    """One consumer group's marks for one dead-letter topic (the store is made for them)."""

    def seen(self, origins: Sequence[Origin]) -> list[bool]:
        """For each origin, whether its record was dead-lettered (and acknowledged) before.
        StateStoreError when the store is away."""

    def mark(self, origins: Sequence[Origin], reasons: Sequence[str] | None = None) -> None:
        """These records' dead-letters were acknowledged, each for its reason (None: unknown).
        StateStoreError when the store is away."""

    def sending(self, origins: Sequence[Origin], reasons: Sequence[str]) -> None:
        """These records' dead-letters are about to be produced, each for its reason: a replica
        killed before the acknowledgement leaves its record to be dead-lettered again, not sent.
        StateStoreError when the store is away."""

    def load(self, tp: TopicPartition) -> dict[int, Mark]:
        """Offset -> the partition's mark there, acknowledged or about to be produced (the
        acknowledged one when both). StateStoreError when the store is away; OversizeStateError,
        naming the key, when either set holds more than MAX_PARTITION_MARKS (`read_sets`): no wait
        makes it smaller."""

    def forget_below(self, points: Mapping[TopicPartition, int]) -> None:
        """The group committed these points: the records below them are never read again, their
        marks are removed. StateStoreError when the store is away."""


def scores(origins: Sequence[Origin], reasons: Sequence[str] | None) -> list[float] | None:
    """The marks' scores, each holding its reason (`mark_score`)."""
    if reasons is None:
        return None
    return [mark_score(o.offset, reason) for o, reason in zip(origins, reasons, strict=True)]


def dead_letter_key(prefix: str, scope: str, topic: str, partition: int) -> str:
    """A partition's dead-letter marks, its own hash tag (a Redis Cluster spreads them)."""
    return f"{{{prefix}:dl:{scope}:{topic}:{partition}}}"


SENDING_SUFFIX = ":sending"


def sending_key(prefix: str, scope: str, topic: str, partition: int) -> str:
    """A partition's dead-letters about to be produced: beside its marks, in their hash slot. A key
    of its own, so a replica of the previous version, which looks up the marks key, never takes a
    dead-letter that may not be in the topic for one that is."""
    return dead_letter_key(prefix, scope, topic, partition) + SENDING_SUFFIX


def merged(acknowledged: Mapping[int, tuple[str, float]], sending: Mapping[int, tuple[str, float]]) -> dict[int, Mark]:
    """A partition's marks from its two sorted sets ((fingerprint, score) by offset). An
    acknowledged mark without a reason (a replica of the previous version dead-lettered the record
    during a rolling upgrade) takes the reason of a note of the same record: the record ends
    dead-lettered, not judged again (and sent, what failed it being over)."""
    out = {offset: Mark(fingerprint, mark_reason(score), False) for offset, (fingerprint, score) in sending.items()}
    for offset, (fingerprint, score) in acknowledged.items():
        reason = mark_reason(score)
        noted = out.get(offset)
        if reason is None and noted is not None and noted.fingerprint == fingerprint:
            reason = noted.reason
        out[offset] = Mark(fingerprint, reason, True)
    return out


class RedisDeadLetterMarks:
    """`previous_release()`: whether 0.2.0's marks may still be there (`RedisDedup.reads_previous_release`)."""

    def __init__(self, client: Any, keys: Keys, *, horizon_s: int, group: str, dlq_topic: str,
                 previous_release: Callable[[], bool], most: int = MAX_PARTITION_MARKS,
                 page: int = MARKS_PAGE) -> None:
        self.client = client
        self.keys = keys
        self.scope = f"{group}:{dlq_topic}"  # a topic name has no ':', so no two pairs give one scope
        self.sets = PartitionMarks(client, lambda scope, topic, partition: dead_letter_key(
            keys.prefix, scope, topic, partition), horizon_s=horizon_s, what="dead-letter marks")
        self.sending_sets = PartitionMarks(client, lambda scope, topic, partition: sending_key(
            keys.prefix, scope, topic, partition), horizon_s=horizon_s, what="dead-letter marks")
        self.previous_release = previous_release
        self.most = most  # a load's bound for each of the partition's two sets (`read_sets`)
        self.page = page

    def seen(self, origins: Sequence[Origin]) -> list[bool]:
        if not origins:
            return []
        legacy = self.previous_release()
        by_key = self.sets.by_key(self.scope, origins)
        # With 0.2.0's keys (one per record) the failed one is named by the client's error (its
        # failed command), not here: naming only ours would have the wrong key deleted.
        with translated(f"reading dead-letter marks{'' if legacy else named(by_key, len(by_key))}"):
            pipe = self.client.pipeline(transaction=False)
            for key, indexes in by_key.items():
                pipe.zmscore(key, [origins[n].member for n in indexes])
            if legacy:  # GETs, not an MGET: a cluster pipeline refuses MGET
                for o in origins:
                    pipe.get(self.keys.dead_letter(o.topic, o.partition, o.offset))
            replies = pipe.execute()
        found = [False] * len(origins)
        for indexes, scores in zip(by_key.values(), replies, strict=False):
            for n, score in zip(indexes, scores, strict=True):
                found[n] = score is not None
        if legacy:
            for n, value in enumerate(replies[len(by_key):]):
                found[n] = found[n] or (value is not None and stored_text(value) == origins[n].fingerprint)
        return found

    def mark(self, origins: Sequence[Origin], reasons: Sequence[str] | None = None) -> None:
        self.sets.mark(self.scope, origins, scores(origins, reasons))

    def sending(self, origins: Sequence[Origin], reasons: Sequence[str]) -> None:
        self.sending_sets.mark(self.scope, origins, scores(origins, reasons))

    def load(self, tp: TopicPartition) -> dict[int, Mark]:
        # One round trip a page: both sets are in the partition's slot.
        key = self.sets.key(self.scope, *tp)
        # The keys named: a key holding what we did not write is found and deleted by that name.
        with translated(f"reading the dead-letter marks of {tp[0]}[{tp[1]}] (keys {key} and {key}{SENDING_SUFFIX})"):
            acknowledged, sending = read_sets(self.client, [key, self.sending_sets.key(self.scope, *tp)],
                                              what="dead-letter marks", tp=tp, most=self.most, page=self.page)
        return merged(scored(acknowledged), scored(sending))

    def forget_below(self, points: Mapping[TopicPartition, int]) -> None:
        self.sets.forget_below(self.scope, points, beside=lambda key: key + SENDING_SUFFIX)
