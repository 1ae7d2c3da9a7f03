"""The dead-letter topic: failed records, untouched, with headers saying why (README, "Dead-letter records").

The producer is idempotent with `acks=all`, and a record's offset is only committed once its
dead-letter is acknowledged: the caller's `on_done` runs from the delivery report. A failed
delivery is produced again after a backoff, for ever: the dead-letter topic being down stops
commits (the consumer pauses on its full buffers), it never loses a record. Except a fatal error of
the producer (consumer/outcomes/producer_fatal.py: librdkafka purges its queue and refuses every
later record, for good): `poll()` raises it once, the poll loop ends and the replica restarts with
a new producer; nothing past those records was committed.

Once per origin, one outcome per record: with `marks` (consumer/state/dead_letters.py), each
dead-letter but an ambiguous one is noted with its reason before it is produced (`sending`; the
event id's unknown mark keeps an ambiguous record from being sent), and marked once Kafka
acknowledged it. A replica assigned a partition loads both (`assigned`), and a record read again
after a SIGKILL or a rebalance that either holds is never sent, whatever its second pass would
have met (a 429 storm over by then): acknowledged, it ends at once as dead-lettered again
(`read_again`), before it is decoded; only noted, it is dead-lettered again (a second copy,
maybe). While they cannot be loaded (`unloaded`), the poll loop does not fetch the partition;
they are loaded again when its position moves back (while they cannot be, the records read
again wait undecoded: `Pipeline._hold_read_again`), and a dead-letter of ours acknowledged after
its partition came back to us, or while the marks could not be written, counts as loaded. A mark
acknowledged after that load (the old owner's last dead-letters) is looked up before a
dead-letter is produced: dead-letters are produced from `poll()`, where a turn's worth of them is
looked up in one round trip (and noted in one more). An acknowledgement served outside `poll()`
for a record no longer ours (the final flush of a shutdown, with no poll() after it) is marked at
once.
The marks below a commit the broker confirmed (`committed`, from the pipeline's commit callback)
are removed MARKS_KEEP_S after the confirmation (`confirmed_commits.py`): a coordinator that fails over
can lose a commit it confirmed, and the partition's next owner then reads those records again.
They hold about the records past the commit point and the last minute's.

Reasons (`dlq.reason`):
    pisano_error       Pisano refused the request (pisano.error.code / pisano.http.status say how)
    throttled          still throttled (429) when the attempts or the retry budget ran out
    retries_exhausted  retriable answers (500, 503, 408, a 502 from Pisano itself) until the
                       attempts or the budget ran out
    transport_error    no answer until the attempts or the budget ran out: the request could not be
                       sent (connection refused, connect timeout, TLS handshake failed)
    ambiguous          the request may have reached Pisano (read timeout, 504, a gateway's 502,
                       crash before the outcome was recorded): not resent automatically; replay once checked
    decode_error       the value is not Avro for the schema (or unknown schema id, truncated), or its
                       headers could not be read (a header name that is not UTF-8: they are dropped)
    unsupported_schema the writer schema is refused: recursive, nested deeper than 32 levels, items
                       that take no bytes, or not an Avro schema (Protobuf, JSON Schema)
    oversize           the value is larger than MAX_MESSAGE_BYTES
    invalid_event      no event id, no phone, or a phone that is not a valid number
    unroutable         no campaign for the event (no campaign id, no route, not a campaign id)
    stale              older (Kafka timestamp) than DEDUP_HORIZON_S minus STALE_MARGIN_S: whether it was
                       delivered may be forgotten, so it is never sent (a re-read of a retained topic)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any

from confluent_kafka import KafkaError

from consumer.config.secrets import mask_urls_in_text
from consumer.errors import StateStoreError
from consumer.ingest.records import InboundRecord, headers_of, older, source_timestamp_ms
from consumer.operations.logs import redact_phones
from consumer.outcomes.compat_headers import COMPAT_HEADER_PREFIXES, compat_headers
from consumer.outcomes.confirmed_commits import ConfirmedCommits
from consumer.outcomes.failed_deliveries import FailedDeliveries
from consumer.outcomes.owned_marks import LOAD_TURN_S, OwnedMarks, go_on_without
from consumer.outcomes.producer_fatal import ProducerFatal
from consumer.outcomes.retry_queue import RetryQueue
from consumer.plain_number import plain_number
from consumer.state.dead_letters import DeadLetterMarks, Mark, Origin, TopicPartition
from consumer.state.redis_errors import passes

log = logging.getLogger(__name__)

Headers = tuple[tuple[str, bytes], ...]

REASONS = ("pisano_error", "throttled", "retries_exhausted", "transport_error", "ambiguous",
           "decode_error", "oversize", "invalid_event", "unroutable", "unsupported_schema", "internal_error", "stale")
# Headers this consumer writes; a replayed record that fails again gets fresh ones.
OWN_HEADER_PREFIXES = ("pisano.", "dlq.")
# Ours and the other tools' we write beside them (DLQ_COMPAT_HEADERS): what a record being
# dead-lettered again, or replayed, loses.
WRITTEN_HEADER_PREFIXES = OWN_HEADER_PREFIXES + COMPAT_HEADER_PREFIXES
REPLAYS_HEADER = "dlq.replays"
ATTEMPT_HEADER = "dlq.attempt.id"
MAX_MESSAGE_CHARS = 1000
RETRY_BACKOFF_S = (0.5, 1, 2, 5, 10, 30)
SMALL_RECORD_BYTES = 64 * 1024
# After Redis failed for the marks, dead-letter without them this long before asking again: the
# poll loop must not wait a socket timeout on every turn (ARCHITECTURE.md, invariant 4).
MARKS_PAUSE_S = 30.0


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    code: int | None = None
    http_status: int | None = None
    campaign_id: str | None = None
    attempts: int = 0
    # ambiguous only: the attempt whose unknown mark stands in Redis; a replay of this dead-letter
    # may override that mark and no other (consumer/state/dedup.py)
    attempt_id: str | None = None
    # the id this consumer gave the last request for these events (consumer/delivery/attempts.py),
    # for the receipt (consumer/outcomes/receipts.py); None when no request was made
    request_id: str | None = None


def header_value(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


def replay_count(message: Any) -> int:
    """The replay count a dead-letter of `message` carries: the largest of its verified count (a
    consumed record's signature, InboundRecord.replays) and every dlq.replays header it holds, where
    anything but a plain number counts as 0.

    Why not the verified count alone: it is all the dedup may trust (a forged count must not get an
    event of unknown fate sent), but `replay --max-replays` reads this header to stop a record that
    keeps failing. Without REPLAY_SIGNING_KEY (or with a signature past the horizon, or a rotated
    key) nothing verifies, so every failed replay was dead-lettered with 0 and replayed for ever.
    An unverified count can only make `replay` refuse sooner, never send anything; and since the
    largest header wins, no header a writer adds can lower the count the replay tool wrote."""
    count = message.replays if isinstance(message, InboundRecord) else 0
    for name, value in headers_of(message) or ():
        if name == REPLAYS_HEADER and value:
            count = max(count, plain_number(value.decode("utf-8", "replace"), 9) or 0)
    return count


def error_text(message: str) -> str:
    """An error message as it may stand in a header: every reader of the DLQ sees it, so no phone
    number (Pisano's or a mapper's text may echo one) and no URL credential. Cut before redacting
    (the work stays bounded) with room to spare, then again after (no half number is left). A lone
    surrogate (valid in a JSON string, so in Pisano's answer or a mapper's error) is written as its
    escape: strict UTF-8 refuses it, and the dead-letter could not be produced at all.

    A failed request's events share one message: the text is made once per message (the latest
    few kept; a message of more than MAX_MESSAGE_CHARS * 4 is not kept, only its text would be)."""
    if len(message) > MAX_MESSAGE_CHARS * 4:
        return _error_text(message)
    return _kept_error_text(message)


def _error_text(message: str) -> str:
    text = message[: MAX_MESSAGE_CHARS * 4]
    if len(text) < len(message):
        # The cut may split a phone number or a URL's user info, and masking what precedes it can
        # shrink the text so that the fragment, too short to be recognised, lands in the header:
        # the last word goes, and the 32 characters before it (a number written with spaces), or
        # the last 64 characters when no space is near the end (a long quote keeps the rest).
        last_space = text.rfind(" ", len(text) - 128, len(text) - 32)
        text = text[:last_space] if last_space > 0 else text[: len(text) - 64]
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return redact_phones(mask_urls_in_text(text))[:MAX_MESSAGE_CHARS]


_kept_error_text = lru_cache(maxsize=256)(_error_text)


def dead_letter_headers(message: Any, failure: Failure, failed_at: datetime | None = None, *,
                        group: str | None = None, compat: bool = False,
                        bare: bool = False) -> list[tuple[str, bytes]]:
    """The original headers (without ours or the compat sets: a record failing again gets fresh
    ones), then ours, then with `compat` Connect's and Spring's (consumer/outcomes/compat_headers.py).
    `bare`: ours only, a few hundred bytes whatever the record."""
    original = [] if bare else [(k, v if v is not None else b"") for k, v in headers_of(message)
                                if not k.startswith(WRITTEN_HEADER_PREFIXES)]
    _, timestamp = message.timestamp()
    # A replay's source record's time, when older: dlq.original.timestamp says when the event's
    # record was first written, whatever re-published it since (consumer/ingest/records.py).
    timestamp = older(timestamp, message.source_timestamp_ms if isinstance(message, InboundRecord)
                      else source_timestamp_ms(headers_of(message)))
    first, middle = (_kept_failure_headers if _keepable(failure, group) else _failure_headers)(failure, group)
    ours = [*first]
    for name, value in (("dlq.original.topic", message.topic()), ("dlq.original.partition", message.partition()),
                        ("dlq.original.offset", message.offset())):
        if value is not None:
            ours.append((name, _header_bytes(value)))
    if timestamp and timestamp > 0:
        ours.append(("dlq.original.timestamp", _header_bytes(timestamp)))
    ours += middle
    failed = (failed_at or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    ours += [("dlq.failed.at", failed.encode()), (REPLAYS_HEADER, str(replay_count(message)).encode())]
    others = compat_headers(message, failure.reason, error_text(failure.message), group or "") \
        if compat and not bare else []
    return original + ours + others


def _failure_headers(failure: Failure, group: str | None) -> tuple[Headers, Headers]:
    """Our headers that come from the failure alone, before and after the record's origin, in
    their order: the same for every event of a failed request, so made once for all of them.
    Absent values leave their header out."""
    first = {"pisano.error.code": failure.code, "pisano.http.status": failure.http_status,
             "pisano.error.message": error_text(failure.message), "dlq.reason": failure.reason}
    middle = {"dlq.original.consumer.group": group,
              "dlq.campaign.id": failure.campaign_id,
              "dlq.attempts": failure.attempts,
              # The consumer's id of the last request that carried the event: its log line, its
              # span and its receipt name the same id.
              "dlq.request.id": failure.request_id,
              ATTEMPT_HEADER: failure.attempt_id}
    return (tuple((k, _header_bytes(v)) for k, v in first.items() if v is not None),
            tuple((k, _header_bytes(v)) for k, v in middle.items() if v is not None))


# The latest few failures' (a failed request's events share one Failure); one whose message is
# longer than error_text keeps is made each time, not kept.
_kept_failure_headers = lru_cache(maxsize=64)(_failure_headers)
_KEPT_TYPES = (str, int, type(None))


def _keepable(failure: Failure, group: str | None) -> bool:
    """Whether the failure's headers may be kept: kept ones are found by equality, and values
    equal but written otherwise (1, True and 1.0; 0.0 and -0.0; a str subclass) would take one
    another's headers, so only plain str, int and None values are kept (what the consumer makes)."""
    return (len(failure.message) <= MAX_MESSAGE_CHARS * 4 and type(failure.message) is str
            and type(failure.reason) is str and type(group) in _KEPT_TYPES
            and type(failure.code) in _KEPT_TYPES and type(failure.http_status) in _KEPT_TYPES
            and type(failure.campaign_id) in _KEPT_TYPES and type(failure.attempts) in _KEPT_TYPES
            and type(failure.attempt_id) in _KEPT_TYPES and type(failure.request_id) in _KEPT_TYPES)


def _header_bytes(value: str | int) -> bytes:
    return str(value).encode("utf-8", "backslashreplace")


# What a dead-letter keeps of its record, step by step while the topic refuses it as too large:
# every step is smaller, and the last is bounded (our headers only), so refusals end.
WHOLE, WITHOUT_VALUE, BARE = 0, 1, 2


@dataclass
class _Pending:
    message: Any
    failure: Failure
    on_done: Callable[[], None]
    attempts: int = 0
    shrink: int = WHOLE  # how much of the record the topic's size limit left in it
    sent_alone: bool = False  # retried once with its value after a batch it was in was too large
    origin: Origin | None = None  # with dead-letter marks only
    generation: int = 0  # its partition's generation when it was sent (`DeadLetterQueue.forget`)
    counts: Callable[[], bool] | None = None  # whether its record's outcome still counts (the tracker's)


class DeadLetterQueue:
    """Produces dead-letters; `poll()` must be called from the poll loop (delivery reports)."""

    def __init__(self, producer: Any, topic: str, on_failure: Callable[[], None] | None = None,
                 marks: DeadLetterMarks | None = None, *, group: str | None = None,
                 compat_headers: bool = False, on_acknowledged: Callable[[Failure], None] | None = None,
                 on_marks_error: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.producer = producer
        self._on_marks_error = on_marks_error  # redis_errors_total{operation="marks"}
        # Each dead-letter Kafka acknowledged (not a record read again whose copy is there already).
        self._on_acknowledged = on_acknowledged
        self.topic = topic
        self.group = group  # dlq.original.consumer.group (and the compat sets' group)
        self.compat_headers = compat_headers
        self.in_flight = 0
        self.already_dead_lettered = 0  # records read again whose dead-letter was acknowledged before
        self._retry: RetryQueue[_Pending] = RetryQueue()
        self._on_failure = on_failure
        self.marks = marks
        self._unchecked: list[_Pending] = []  # waiting for the marks' lookup in the next poll()
        self._acknowledged: list[tuple[Origin, str]] = []  # to mark in the next poll(), with their reasons
        # Offset -> the mark of our partitions' records dead-lettered before, loaded at assignment.
        # A partition whose marks cannot load, however long it waits, is fetched without them.
        self._before: OwnedMarks[Mark] = OwnedMarks(self._load_partition, without=partial(
            go_on_without, log, "dead-letter marks", "a record of it dead-lettered before a restart or rebalance, "
            "read again, is judged again (a second dead-letter, or sent if what failed it is over)", on_marks_error))
        self._ended_again = 0  # records read again that `read_again` ended, since the last poll()
        self._clock = clock  # the marks' pauses
        self._commits = ConfirmedCommits(clock)  # confirmed commit points: the marks below them go, later
        self._marks_paused_until = 0.0
        self._marks_away = False  # the pause is an outage's (dead-letters wait), not a stored value's
        # Bumped when a partition is revoked or lost: its dead-letters sent before are abandoned.
        self._generations: dict[tuple[str, int], int] = {}
        self._fatal = ProducerFatal("dead-letters")  # the producer failed for good: poll() raises
        self._failed = FailedDeliveries("dead-letter", log)  # said once a poll turn, not once a record

    def send(self, message: Any, failure: Failure, on_done: Callable[[], None], *,
             counts: Callable[[], bool] | None = None) -> None:
        """`counts`: whether the record's outcome still counts; once it does not (its partition's
        position moved back past it: the record read again is dead-lettered as itself), a
        dead-letter still waiting for its topic is dropped, not produced as a second copy."""
        self.in_flight += 1
        # Read once: a retried dead-letter must not read a Kafka message's headers again.
        pending = _Pending(InboundRecord.of(message), failure, on_done, counts=counts)
        pending.generation = self._generations.get((pending.message.topic(), pending.message.partition()), 0)
        without = self._before.without
        if self.marks is None or (without and (pending.message.topic(), pending.message.partition()) in without):
            self._produce(pending)  # (a partition consumed without its marks: its key fails every call)
            return
        pending.origin = Origin.of(pending.message)
        self._unchecked.append(pending)

    def assigned(self, tps: Sequence[TopicPartition], *, now: bool = False) -> None:
        """Load the marks of newly assigned partitions: their records dead-lettered already. While
        the marks pause (Redis failed a moment ago), on the first poll() after the pause. `now`:
        these partitions' loads all run in this call, whatever the turn's budget (`LOAD_TURN_S`):
        their records read again were taken already (a position moved back), and must end as
        they ended before; a partition held from the next fetch would not stop them."""
        if self.marks is None:
            return
        self._before.assigned(tps)
        # Acknowledged, not marked yet (served by another client's poll before a loss, say): the
        # load does not see them.
        for origin, reason in self._acknowledged:
            self._remember(origin, reason)
        self._load_marks(tps if now else None)

    def _remember(self, origin: Origin, reason: str) -> None:
        tp = (origin.topic, origin.partition)
        if tp in self._before.owned:
            self._before.remember(tp, origin.offset, Mark(origin.fingerprint, reason, True))

    def _load_partition(self, tp: TopicPartition) -> dict[int, Mark]:
        assert self.marks is not None
        # A mark of the previous version has no reason: its record is judged again, as it was.
        return {offset: mark for offset, mark in self.marks.load(tp).items() if mark.reason is not None}

    def _load_marks(self, now: Sequence[TopicPartition] | None = None) -> None:
        if self.marks is None or not self._before.unloaded or self._clock() < self._marks_paused_until:
            return
        try:
            if now is not None:  # (a move back: rare, and each partition's load is bounded)
                self._before.load_all(only=now)
            else:
                self._before.load_all(LOAD_TURN_S, self._clock)  # the rest next turn: unloaded, not fetched yet
        except Exception as exc:  # an outage, or a stored value no one expected: only the marks pause
            self._marks_failed("load", exc)

    def marked(self, tp: TopicPartition) -> dict[int, Mark] | None:
        """The loaded marks of one of our partitions, None when it has none (the common case)."""
        return self._before.of(tp)

    def unloaded(self) -> set[TopicPartition]:
        """Our partitions whose marks could not be loaded yet (they paused, or wait for a later
        turn's load: `LOAD_TURN_S`): not to be read until they are, or a record the previous owner
        dead-lettered would be processed again."""
        return self._before.unloaded

    def marks_paused(self) -> bool:
        """Whether the marks pause after a failure of Redis (their loads too)."""
        return self._clock() < self._marks_paused_until

    def any_marked(self) -> bool:
        """Whether any of our partitions has loaded marks: once a poll call, not once a record."""
        return bool(self._before)

    def read_again(self, record: Any, marks: dict[int, Mark]) -> tuple[Failure, bool] | None:
        """How `record` (an InboundRecord of a partition whose `marked` are `marks`) was
        dead-lettered before a restart or rebalance: the failure, and whether its dead-letter was
        acknowledged (it ends as dead-lettered again, without a copy) or only about to be produced
        (it is dead-lettered again, maybe a second copy); None if it was not. Never sent."""
        mark = marks.get(record.offset())
        if mark is None or mark.reason is None or mark.fingerprint != Origin.of(record).fingerprint:
            return None
        self._ended_again += 1
        if mark.acknowledged:
            self.already_dead_lettered += 1
            return Failure(mark.reason, "dead-lettered before a restart or rebalance (its dead-letter is in the "
                                        "topic); not sent again"), True
        return Failure(mark.reason, "was being dead-lettered when a restart or rebalance came (its dead-letter may "
                                    "be in the topic twice); not sent"), False

    def forget(self, tps: set[tuple[str, int]]) -> None:
        """Partitions revoked from us or lost: their dead-letters not acknowledged yet are
        abandoned. Their records were not committed, so the next owner reads them again and
        dead-letters them itself; ours, produced again after a DLQ outage, would be a second copy
        of the same record. (One already at the broker may still land: the marks' window.)"""
        for tp in tps:
            self._generations[tp] = self._generations.get(tp, 0) + 1
        self._before.forget(tps)
        self._unchecked = self._keep(self._unchecked)
        self.in_flight -= self._retry.keep(lambda pending: not self._abandoned(pending))

    def _abandoned(self, pending: _Pending) -> bool:
        message = pending.message
        return pending.generation != self._generations.get((message.topic(), message.partition()), 0) \
            or (pending.counts is not None and not pending.counts())

    def _keep(self, pendings: list[_Pending]) -> list[_Pending]:
        kept = [p for p in pendings if not self._abandoned(p)]
        self.in_flight -= len(pendings) - len(kept)
        return kept

    def poll(self, timeout: float = 0.0) -> None:
        with self._fatal.polling():
            self._produce_unchecked()
            self.producer.poll(timeout)
            self._write_marks()
            self._load_marks()
        if self._ended_again:  # only after a restart or a rebalance: one line per turn
            log.info("%d records read again were dead-lettered before (a restart or rebalance before their "
                     "commit); ended as dead-lettered again, not sent", self._ended_again,
                     extra={"count": self._ended_again})
            self._ended_again = 0
        if self._retry:
            for pending in self._keep(self._retry.take_due(time.monotonic())):
                self._produce(pending)
        self._failed.say(self.topic)
        self._fatal.raise_once()

    def _produce_unchecked(self) -> None:
        """Produce the dead-letters sent since the last poll, except those whose origin was
        dead-lettered before (one lookup for all of them).

        While Redis is unreachable they wait, uncommitted, and leave once their lookup and note
        are written (asked again every MARKS_PAUSE_S): produced without its note, a record read
        again by a next owner (a SIGKILL or rebalance before the commit) would be judged again,
        and sent if what failed it was over: a dead-letter and an SMS for one record. Redis
        unreachable stops sending (invariant 5), so nothing else waits on them. A stored value no
        one expected is no outage: those go on without the marks, or a partition would stop."""
        pending, self._unchecked = self._keep(self._unchecked), []
        if not pending or self.marks is None:
            return
        if self._marks_away and self._clock() < self._marks_paused_until:
            self._unchecked = pending
            return
        marks = self.marks
        seen = [False] * len(pending)
        if self._clock() >= self._marks_paused_until:
            # Not those of a partition consumed without its marks (its key fails every call), and a
            # key found foreign by this call takes its own partition out, not every partition's
            # marks (`OwnedMarks.isolating`): its records are not looked up (None).
            asked = [(n, p.origin) for n, p in enumerate(pending)
                     if p.origin is not None and self._with_marks(p.origin)]
            try:
                found = self._before.isolating(marks.seen, [origin for _, origin in asked], _partition)
            except Exception as exc:  # an outage (they wait), or a stored value no one expected
                self._marks_failed("read", exc)
                if self._marks_away:
                    self._unchecked = pending
                    return
            else:
                for (n, _), before in zip(asked, found, strict=True):
                    seen[n] = bool(before)
        fresh: list[_Pending] = []
        for item, before in zip(pending, seen, strict=True):
            if before:
                self.in_flight -= 1
                self.already_dead_lettered += 1
                item.on_done()
            else:
                fresh.append(item)
        # Noted before they are produced: a replica killed before their acknowledgement leaves
        # records the next owner dead-letters again (a second copy, maybe), never sends. Not an
        # ambiguous one: its event id's unknown mark keeps it from being sent, and its second pass
        # dead-letters it again with the attempt id `replay` needs (a note does not hold it). Not
        # one of a partition consumed without its marks (its key, foreign, fails every call).
        noted = [(p.origin, p.failure.reason) for p in fresh
                 if p.origin is not None and p.failure.reason != "ambiguous" and self._with_marks(p.origin)]
        if noted and self._clock() >= self._marks_paused_until:
            try:
                self._before.isolating(lambda part: marks.sending([origin for origin, _ in part],
                                                                  [reason for _, reason in part]),
                                       noted, _noted_partition)
            except Exception as exc:  # an outage (they wait), or a stored value no one expected
                self._marks_failed("write", exc)
                if self._marks_away:
                    self._unchecked = fresh
                    return
        for item in fresh:
            self._produce(item)
        skipped = sum(seen)
        if skipped:  # only after a restart or a rebalance: rare, and one line per turn
            log.info("%d records read again were dead-lettered before (a restart or rebalance before their "
                     "commit); not dead-lettered twice", skipped, extra={"count": skipped})

    def committed(self, points: dict[TopicPartition, int]) -> None:
        """Commits the broker confirmed: the marks below them are removed MARKS_KEEP_S later
        (`ConfirmedCommits`: the coordinator may still lose them)."""
        if self.marks is not None:
            self._commits.add(points)
        self._before.trim(points)  # a partition left without marks: `any_marked` is false again

    def write_marks(self) -> None:
        """Mark the dead-letters acknowledged since the last poll(): for the caller that served
        acknowledgements itself (a final producer.flush(), with no poll() after it)."""
        self._write_marks()

    def _write_marks(self) -> None:
        acknowledged, self._acknowledged = self._acknowledged, []
        commits = self._commits.due()
        # Partitions consumed without their marks: their key would fail the whole call.
        acknowledged = [(o, r) for o, r in acknowledged if self._with_marks(o)]
        if self.marks is None or (not acknowledged and not commits):
            return
        if self._clock() < self._marks_paused_until:
            # Paused: not marked, a next owner reading these records again may write second copies;
            # this replica, reading them again after a move back, finds them in memory.
            for origin, reason in acknowledged:
                self._remember(origin, reason)
            return
        marks = self.marks
        try:
            # A key found foreign by a call takes its own partition out (`OwnedMarks.isolating`),
            # so the other partitions' marks are written, and their commits' removals made.
            self._before.isolating(lambda part: marks.mark([origin for origin, _ in part],
                                                           [reason for _, reason in part]),
                                   acknowledged, _noted_partition)
            without = self._before.without  # taken again: the marks' call may have added one
            due = [(tp, offset) for tp, offset in commits.items() if tp not in without]
            self._before.isolating(lambda part: marks.forget_below(dict(part)), due, _point_partition)
        except Exception as exc:  # an outage: only the marks pause
            for origin, reason in acknowledged:  # maybe not marked (as while paused)
                self._remember(origin, reason)
            self._marks_failed("write", exc)

    def _with_marks(self, origin: Origin) -> bool:
        """Whether `origin`'s partition is in the marks' calls (not consumed without its marks)."""
        without = self._before.without
        return not without or (origin.topic, origin.partition) not in without

    def _marks_failed(self, what: str, exc: Exception) -> None:
        self._on_marks_error()
        self._marks_paused_until = self._clock() + MARKS_PAUSE_S
        # An outage: dead-letters wait for Redis. Not a key of the marks holding what we did not
        # write (WRONGTYPE): Redis answers, no wait would end, and the partition would stop for good.
        self._marks_away = passes(exc)
        # Our own words for an outage; only the type of anything else, which may quote what was stored.
        shown = exc if isinstance(exc, StateStoreError) else type(exc).__name__
        if what == "load":
            log.warning("could not load the dead-letter marks of newly assigned partitions (%s); they are not "
                        "fetched until the marks load, asked again in %.0fs", shown, MARKS_PAUSE_S)
            return
        if self._marks_away:
            log.warning("could not %s dead-letter marks (%s); dead-letters wait for Redis, uncommitted, asked "
                        "again in %.0fs (a dead-letter without its mark could be sent by the next owner of its "
                        "record); check Redis", what, shown, MARKS_PAUSE_S)
            return
        log.warning("could not %s dead-letter marks (%s); dead-lettering without them for %.0fs: a record read "
                    "again after a restart may get a second dead-letter", what, shown, MARKS_PAUSE_S)

    @property
    def unsettled(self) -> int:
        """The dead-letters a shutdown or a revoke may wait for: not those waiting for Redis while
        the marks pause (they cannot leave before it ends; uncommitted, the next owner reads their
        records again)."""
        waiting = self._marks_away and self._clock() < self._marks_paused_until
        return self.in_flight - (len(self._unchecked) if waiting else 0)

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` for every dead-letter to be acknowledged (but those waiting for
        Redis: `unsettled`)."""
        deadline = time.monotonic() + timeout
        while self.unsettled and time.monotonic() < deadline:
            self.poll(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.unsettled == 0

    def _produce(self, pending: _Pending) -> None:
        if self._abandoned(pending):  # produced again after a refusal, its partition handed over meanwhile
            self.in_flight -= 1
            return
        message = pending.message
        try:
            headers = dead_letter_headers(message, pending.failure, group=self.group, compat=self.compat_headers,
                                          bare=pending.shrink >= BARE)
        except Exception as exc:  # one record's text must never stop the poll loop: its reason still goes
            log.error("could not write the dead-letter headers (%s); sending the reason and origin only",
                      type(exc).__name__, extra=_context(message))
            headers = _minimal_headers(message, pending.failure)
        key, value = message.key(), message.value()
        if pending.shrink >= WITHOUT_VALUE:
            headers.append(("dlq.value.omitted", str(len(value or b"")).encode()))
            value = b""
        if pending.shrink >= BARE:
            headers.append(("dlq.headers.omitted", str(len(headers_of(message))).encode()))
            if key:
                headers.append(("dlq.key.omitted", str(len(key)).encode()))
                key = None
        try:
            self.producer.produce(
                self.topic, key=key, value=value, headers=headers,
                on_delivery=lambda err, _msg: self._delivered(pending, err),
            )
        except BufferError:
            self._later(pending, "the producer queue is full")
        except Exception as exc:  # KafkaException for a record the client refuses outright
            self._fatal.note(exc)
            if "MSG_SIZE_TOO_LARGE" in str(exc) and pending.shrink < BARE:
                pending.shrink += 1
                self._produce(pending)
            else:
                pending.shrink = WHOLE
                self._later(pending, str(exc))

    def _delivered(self, pending: _Pending, err: KafkaError | None) -> None:
        if err is None:
            self.in_flight -= 1
            if pending.origin is not None:
                self._acknowledged.append((pending.origin, pending.failure.reason))
                abandoned = self._abandoned(pending)
                if abandoned:
                    # Abandoned, acknowledged all the same. If its partition is ours again (lost
                    # or revoked, then assigned back: the marks loaded then lack it) or its
                    # position moved back, the copy read again must end as this one did, not be
                    # sent (`_remember` keeps it for a partition we own only).
                    self._remember(pending.origin, pending.failure.reason)
                if not self._fatal.serving and abandoned:
                    # Served outside poll() after its partition was revoked or lost: the final
                    # flush of a shutdown, after which no poll() comes, or another client's poll
                    # while the next owner already reads the record. Marked now, or it is
                    # dead-lettered a second time.
                    self._write_marks()
            if self._on_acknowledged is not None:
                self._on_acknowledged(pending.failure)
            pending.on_done()
            return
        self._fatal.note(err)
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and pending.shrink == WHOLE and not pending.sent_alone \
                and len(pending.message.value() or b"") < SMALL_RECORD_BYTES:
            # The broker refuses a whole producer batch when it is too large: a small record
            # may just have shared one with a large record. Once more, with its value.
            # (The large neighbour goes again without its value, so they cannot fail together twice.)
            pending.sent_alone = True
            self._produce(pending)
            return
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and pending.shrink < BARE:
            # The dead-letter topic takes smaller records than the source: keep our headers (and the
            # source offset) rather than nothing; the record is still in the source topic. First
            # without its value; then, if its bulk is its headers or key, with our headers alone.
            pending.shrink += 1
            log.warning("dead-letter too large for %s; sending it %s", self.topic,
                        "without its value" if pending.shrink == WITHOUT_VALUE
                        else "with our headers only (no value, key or original headers)",
                        extra=_context(pending.message))
            self._produce(pending)
            return
        # Refused even with our headers alone: the topic is misconfigured, not our record too
        # large. Keep everything for the next attempt, once someone fixed the topic.
        pending.shrink = WHOLE
        self._later(pending, err.str())

    def _later(self, pending: _Pending, why: str) -> None:
        if self._abandoned(pending):  # its partition is someone else's now (`forget`): not produced again
            self.in_flight -= 1
            return
        backoff = RETRY_BACKOFF_S[min(pending.attempts, len(RETRY_BACKOFF_S) - 1)]
        pending.attempts += 1
        self._retry.put(pending, time.monotonic() + backoff)
        if self._on_failure:
            self._on_failure()
        self._failed.add(why, backoff, _context(pending.message))


def _partition(origin: Origin) -> TopicPartition:
    return origin.topic, origin.partition


def _noted_partition(noted: tuple[Origin, str]) -> TopicPartition:
    return noted[0].topic, noted[0].partition


def _point_partition(point: tuple[TopicPartition, int]) -> TopicPartition:
    return point[0]


def _minimal_headers(message: Any, failure: Failure) -> list[tuple[str, bytes]]:
    """The reason and the origin, from values of our own: what `replay` and the alerts need."""
    added = {"dlq.reason": failure.reason, "dlq.original.topic": message.topic(),
             "dlq.original.partition": message.partition(), "dlq.original.offset": message.offset(),
             "dlq.failed.at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
             "pisano.error.message": "the message could not be written; see the consumer's log",
             ATTEMPT_HEADER: failure.attempt_id,  # an ambiguous record's replay needs it
             # `replay --max-replays` counts on it (replay_count: it only ever grows).
             REPLAYS_HEADER: replay_count(message)}
    return [(k, str(v).encode("utf-8", "backslashreplace")) for k, v in added.items() if v is not None]


def _context(message: Any) -> dict[str, Any]:
    return {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}
