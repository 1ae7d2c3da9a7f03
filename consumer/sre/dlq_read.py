"""Reading the dead-letter topic: a bounded read to the end offsets, typed dead-letters, filters.

`replay` and `dlq stats` both read a topic from a start position up to the end offsets taken when
they start, never waiting for records written after that: an SRE runs them to act on what is
there now, and a DLQ that keeps growing (the cause is not fixed yet) must not keep them running.

A record is one of ours when it carries the headers `consumer.outcomes.deadletter` writes (reason, origin,
failure time); anything else in the topic is *foreign* and parsed as None. One that carries them
but malformed (a header name that is not UTF-8, a count that is not a number, an origin topic
Kafka would not accept, a campaign that is not a campaign id, a time outside the calendar, the
same header twice with different values) raises MalformedDeadLetter with the reason, so the caller
refuses that record and goes on. Whoever may write to the DLQ chooses its bytes: any other failure
while reading a record is MalformedDeadLetter too, never an exception that stops `replay` or
`dlq stats` on that record at every run. Every header of ours that a tool prints is checked here
(numbers, reason, topic, campaign); reasons quoting the record's text go through `shown`. Values
hold phone numbers: a `DeadLetter` never shows its value or original headers in its repr.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, TypeVar, cast

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.errors import PisanoSmsError
from consumer.ingest.mapping import is_campaign_id
from consumer.ingest.records import read_headers
from consumer.outcomes.deadletter import (
    ATTEMPT_HEADER,
    OWN_HEADER_PREFIXES,
    REASONS,
    REPLAYS_HEADER,
    WRITTEN_HEADER_PREFIXES,
)
from consumer.plain_number import plain_number
from consumer.sre.record_text import shown
from consumer.sre.replay_signature import ATTEMPT_ID
from consumer.sre.signals import interrupt_deferred
from consumer.sre.topic_identity import Start, committed_id, decide, encoded
from consumer.state.dedup import LEGACY_ATTEMPT

log = logging.getLogger(__name__)

METADATA_TIMEOUT_S = 10.0
# A metadata request (a topic's partitions, a group's positions, end offsets) waits up to
# METADATA_TIMEOUT_S in slices this long, saying after each what it waits for: one request of 10 s
# was 10 s of silence on a slow broker, and several in a row looked like a hung run (found by review).
METADATA_NOTE_S = 2.5
# A bounded read that gets nothing for this long is stuck (broker gone, partition leaderless).
IDLE_TIMEOUT_S = 30.0
# Until then, a read that gets nothing says so this often: IDLE_TIMEOUT_S of silence looked like a
# hung run, which an SRE kills.
IDLE_NOTE_S = 5.0
CONSUME_BATCH = 500
VALUE_OMITTED_HEADER = "dlq.value.omitted"
# Without these a record was not written by consumer.outcomes.deadletter.
REQUIRED_HEADERS = ("dlq.reason", "dlq.original.topic", "dlq.original.partition", "dlq.original.offset",
                    "dlq.failed.at")

NO_VALUE = "-"  # a missing error code or campaign, in counts and tables
# Whoever writes to the DLQ chooses its codes, campaigns and topics: what a tool keeps per distinct
# value a record chose is bounded (found by review: a million records, each naming its own topic or
# campaign, were a million counts or rows, about a gigabyte). Values past the bound count as OTHER.
MAX_DISTINCT = 10_000
OTHER = "(other)"
Origin = tuple[str, int, int]  # dlq.original.topic, .partition, .offset
T = TypeVar("T")


# Kafka's own rule for topic names.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# How a replica of the build before claims recorded the mark they replaced (README, "Upgrading")
# names a lapsed recorded claim: "<tag>|u|<the attempt it replaced>". The unknown fate is the
# claim's own attempt, the tag, as this build names it (lua/claim.lua): a replay is signed for that.
_FORMER_LAPSE = re.compile(r"([0-9a-f]{1,32}\|[0-9a-f]{1,32})\|u\|[0-9a-fu|-]{1,200}")
MAX_NUMBER_DIGITS = 18
CAMPAIGN_HEADER = "dlq.campaign.id"
ORIGINAL_TIMESTAMP_HEADER = "dlq.original.timestamp"
# e.g. in the messages that say what a campaign id looks like
CAMPAIGN_EXAMPLE = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


class MalformedDeadLetter(PisanoSmsError):
    """A record with our headers that cannot be trusted as written by us; the message is the reason."""


class TopicError(PisanoSmsError):
    """A topic cannot be read or written: Kafka unreachable, topic missing, or the read got stuck.
    The message says what to check."""


class ReadStopped(TopicError):
    """The read stopped part-way (stuck, or a fatal error): the caller may hold partial results."""


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, its headers parsed (README, "Dead-letter records")."""

    partition: int  # where it sits in the dead-letter topic
    offset: int
    reason: str
    origin: Origin
    failed_at: datetime
    replays: int
    error_code: int | None = None
    http_status: int | None = None
    campaign_id: str | None = None
    value_omitted: bool = False
    attempt_id: str | None = None  # dlq.attempt.id: the attempt whose unknown mark stands (ambiguous)
    # dlq.original.timestamp: when the source record was written (ms since the epoch), if it had a time
    original_timestamp_ms: int | None = None
    key: bytes | None = None
    value: bytes | None = field(default=None, repr=False)
    # Headers the original record carried (not ours); may hold personal data too.
    original_headers: tuple[tuple[str, bytes | None], ...] = field(default=(), repr=False)

    @property
    def replay_attempt(self) -> str | None:
        """The attempt whose unknown mark a replay of this record may override: an ambiguous
        record's own (one written before attempts were named gets the legacy "-"), no other's."""
        if self.reason != "ambiguous":
            return None
        return self.attempt_id or LEGACY_ATTEMPT

    def older_than(self, when: datetime) -> bool:
        """Whether it failed, or its source record was written, before `when`. A record may be read
        (and fail) days after it was written, and another copy of its event may have been delivered
        when it was written: its delivered mark lapses DEDUP_HORIZON_S after that, whatever the
        failure's time. A replay carries a new Kafka timestamp, which the consumers' stale guard lets
        by, so the replay's horizon hold must go by the older of the two (found by review).

        Except for a `stale` dead-letter: old by its source time by definition, it is replayed only
        by a run whose --reason names it, after checking with Pisano, and that run warns; it goes by
        its failure alone, as before (else `--reason stale` would replay none without --past-horizon)."""
        if self.failed_at < when:
            return True
        return (self.reason != "stale" and self.original_timestamp_ms is not None
                and self.original_timestamp_ms < when.timestamp() * 1000)

    @property
    def code_label(self) -> str:
        return str(self.error_code) if self.error_code is not None else NO_VALUE

    @property
    def campaign_label(self) -> str:
        return self.campaign_id or NO_VALUE


def count_bounded(counter: Counter[Any], key: Any, other: Any = OTHER) -> None:
    """Count `key`, or `other` once the counter holds MAX_DISTINCT keys and `key` is not one of them."""
    if key in counter or len(counter) < MAX_DISTINCT:
        counter[key] += 1
    else:
        counter[other] += 1


def parse_dead_letter(message: Any) -> DeadLetter | None:
    """The record as a DeadLetter, None when it was not written by us (foreign), or
    MalformedDeadLetter saying why it cannot be used; never any other exception from the record's
    content (module docstring). Running out of memory or an interrupt is not the record's fault
    and goes through."""
    try:
        return _parse(message)
    except (MalformedDeadLetter, MemoryError):
        raise
    except Exception as exc:
        # The kind only: the exception's text may quote the record (a phone, escape sequences).
        raise MalformedDeadLetter(f"the record could not be read ({type(exc).__name__})") from exc


def _parse(message: Any) -> DeadLetter | None:
    # Read once and safely (consumer/ingest/records.py): a header name that is not UTF-8 must
    # not crash the reader.
    headers, header_error = read_headers(message)
    if header_error is not None:
        raise MalformedDeadLetter("unreadable headers: a header name is not UTF-8 (or not a name/bytes pair)")
    own: dict[str, str] = {}
    for name, raw in headers:
        if not name.startswith(OWN_HEADER_PREFIXES) or raw is None:
            continue
        text = raw.decode("utf-8", "replace")
        if name in own and own[name] != text:
            raise MalformedDeadLetter(f"header {shown(name, 40)} twice with different values")  # fits _top's 80
        own[name] = text
    if any(not own.get(name) for name in REQUIRED_HEADERS):
        return None
    topic = own["dlq.original.topic"]
    if not _TOPIC_NAME.fullmatch(topic):
        raise MalformedDeadLetter("dlq.original.topic is not a Kafka topic name")
    partition = _required_number(own, "dlq.original.partition")
    offset = _required_number(own, "dlq.original.offset")
    try:
        failed_at = parse_when(own["dlq.failed.at"])
    except ValueError:
        raise MalformedDeadLetter("dlq.failed.at is not an ISO 8601 time (years 1 to 9999 in UTC)") from None
    if own["dlq.reason"] not in REASONS:
        raise MalformedDeadLetter("dlq.reason is not a dead-letter reason")
    attempt = own.get(ATTEMPT_HEADER) or None
    lapsed = _FORMER_LAPSE.fullmatch(attempt) if attempt is not None else None
    if lapsed:
        attempt = lapsed.group(1)
    if attempt is not None and not ATTEMPT_ID.fullmatch(attempt):
        raise MalformedDeadLetter(f"{ATTEMPT_HEADER} is not an attempt id")
    campaign = own.get(CAMPAIGN_HEADER) or None
    if campaign is not None:
        if not is_campaign_id(campaign):
            raise MalformedDeadLetter(f"{CAMPAIGN_HEADER} is not a campaign id (a UUID)")
        # The mapping takes either case; Pisano's ids are lower case, and `--campaign` matches so.
        campaign = campaign.lower()
    return DeadLetter(
        partition=message.partition(),
        offset=message.offset(),
        reason=own["dlq.reason"],
        origin=(topic, partition, offset),
        failed_at=failed_at,
        replays=_number(own, REPLAYS_HEADER) or 0,
        error_code=_number(own, "pisano.error.code"),
        http_status=_number(own, "pisano.http.status"),
        campaign_id=campaign,
        value_omitted=VALUE_OMITTED_HEADER in own,
        attempt_id=attempt,
        original_timestamp_ms=_number(own, ORIGINAL_TIMESTAMP_HEADER),
        key=message.key(),
        value=message.value(),
        # The compat sets (DLQ_COMPAT_HEADERS) go too: a replayed record carries none of them.
        original_headers=tuple((k, v) for k, v in headers if not k.startswith(WRITTEN_HEADER_PREFIXES)),
    )


def _number(own: dict[str, str], name: str) -> int | None:
    """A numeric header of ours, None when absent; MalformedDeadLetter when present but not a plain
    number (consumer/plain_number.py)."""
    text = own.get(name)
    if text is None or text == "":
        return None
    number = plain_number(text, MAX_NUMBER_DIGITS)
    if number is None:
        raise MalformedDeadLetter(f"{name} is not a number")
    return number


def _required_number(own: dict[str, str], name: str) -> int:
    number = _number(own, name)
    if number is None:
        raise MalformedDeadLetter(f"{name} is empty")
    return number


def parse_when(text: str) -> datetime:
    """An ISO 8601 date or datetime (`Z` or an offset; none means UTC) as an aware UTC datetime.
    A date alone is its midnight UTC. Raises ValueError saying what is expected, and nothing else:
    a time whose offset moves it out of datetime's range (0001-01-01T00:00+01:00) has no UTC time
    (OverflowError from astimezone)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO 8601 date or datetime; "
                         "expected e.g. 2026-01-31 or 2026-01-31T08:00:00Z") from exc
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"{text!r} is outside the dates this tool can compare (years 1 to 9999 in UTC); "
                         "give a time between them, e.g. 2026-01-31T08:00:00Z") from exc


@dataclass(frozen=True)
class Filters:
    """Which dead-letters an SRE means; every given criterion must hold (AND), values of one
    criterion are alternatives (OR). `since` is inclusive, `until` exclusive."""

    error_codes: frozenset[int] = frozenset()
    reasons: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    # Take dead-letters that failed (or whose source records were written: DeadLetter.older_than)
    # longer ago than DEDUP_HORIZON_S minus STALE_MARGIN_S too
    # (replay holds them otherwise: consumer/sre/replay.py, `judge`). Not a match criterion:
    # `matches` ignores it.
    past_horizon: bool = False

    @classmethod
    def from_options(cls, error_codes: Iterable[str] = (), reasons: Iterable[str] = (), campaigns: Iterable[str] = (),
                     since: str | None = None, until: str | None = None) -> Filters:
        """The filters of the command-line options, or ValueError naming the option and the expected form."""
        codes = set()
        for code in error_codes:
            number = plain_number(code, MAX_NUMBER_DIGITS)
            if number is None:
                raise ValueError(f"--error-code {code!r}: expected a Pisano numeric error code in ASCII digits, "
                                 "e.g. 13001")
            codes.add(number)
        reasons = tuple(reasons)
        for reason in reasons:
            if reason not in REASONS:
                raise ValueError(f"--reason {reason!r}: not a dead-letter reason; expected one of {', '.join(REASONS)}")
        campaign_ids = set()
        for campaign in campaigns:
            if not is_campaign_id(campaign):
                raise ValueError(f"--campaign {campaign!r}: not a campaign id; expected its UUID, e.g. "
                                 f"{CAMPAIGN_EXAMPLE} (dlq stats lists those in the DLQ)")
            campaign_ids.add(campaign.lower())  # as parse_dead_letter reads dlq.campaign.id
        filters = cls(frozenset(codes), frozenset(reasons), frozenset(campaign_ids),
                      _option_time("--since", since), _option_time("--until", until))
        if filters.since and filters.until and filters.since >= filters.until:
            raise ValueError(f"--since {since} is not before --until {until}: nothing could match")
        return filters

    def matches(self, letter: DeadLetter) -> bool:
        return ((not self.error_codes or letter.error_code in self.error_codes)
                and (not self.reasons or letter.reason in self.reasons)
                and (not self.campaigns or letter.campaign_id in self.campaigns)
                and (self.since is None or letter.failed_at >= self.since)
                and (self.until is None or letter.failed_at < self.until))

    def canonical(self) -> str:
        """The same text for the same filter set, whatever the order the options came in."""
        parts = [
            "code=" + ",".join(str(c) for c in sorted(self.error_codes)),
            "reason=" + ",".join(sorted(self.reasons)),
            "campaign=" + ",".join(sorted(self.campaigns)),
            "since=" + (self.since.isoformat() if self.since else ""),
            "until=" + (self.until.isoformat() if self.until else ""),
        ]
        if self.past_horizon:  # only then: the groups of every other filter set keep their names
            parts.append("past-horizon")
        return ";".join(parts)


def _option_time(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        raise ValueError(f"{option} {exc}") from exc


@dataclass
class Span:
    partition: int
    start: int
    end: int  # the end offset when the read started: records at or after it are not read


def waited(call: Callable[[float], T], what: str, note: Callable[[str], None],
           timeout_s: float | None = None) -> T:
    """`call(timeout)`, a Kafka request given `timeout_s` (METADATA_TIMEOUT_S), run on a thread of
    its own while this one says what it waits for every METADATA_NOTE_S until it returns (found by
    review: a request of up to 10 s was 10 s of silence); a fast answer says nothing. Asked once, not again
    in shorter slices: a broker that always answers in 3 s would time every slice out. A Ctrl-C or
    SIGTERM meanwhile is raised once the request returned (within its timeout), never while the
    client is still inside librdkafka (the caller closes it next)."""
    total = METADATA_TIMEOUT_S if timeout_s is None else timeout_s
    done = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call(total)))
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome.append((False, exc))
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=run, name="kafka-request", daemon=True).start()
    try:
        while not done.wait(METADATA_NOTE_S):
            note(f"{what}: waiting for Kafka, {time.monotonic() - started:.0f}s of at most {total:.0f}s")
    except KeyboardInterrupt:
        with interrupt_deferred():  # a second signal is held until the request returned too
            done.wait(max(0.0, started + total - time.monotonic()) + METADATA_NOTE_S)
        raise
    [(answered, value)] = outcome
    if not answered:
        raise value
    return cast(T, value)


def describe_topic(client: Any, topic: str, bootstrap: str, hint: str,
                   note: Callable[[str], None] = lambda text: None) -> list[int]:
    """The topic's partition ids, or TopicError saying what to do. `client` is a consumer, whose
    metadata requests never auto-create a topic."""
    try:
        metadata = waited(lambda timeout: client.list_topics(topic, timeout=timeout),
                          f"partitions of topic {topic}", note)
    except KafkaException as exc:
        raise TopicError(f"cannot reach Kafka at {bootstrap} ({kafka_error_text(exc)}); check "
                         "KAFKA_BOOTSTRAP_SERVERS and the security settings (kafka: in --config)") from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise TopicError(f"topic {topic} does not exist on {bootstrap}; {hint}")
    return sorted(described.partitions)


class TopicReader:
    """Reads every partition of one topic from a start position up to the end offsets taken in
    `open()`. The consumer must have `enable.partition.eof` on (a partition whose last offsets are
    gone is finished by its EOF) and is only assigned, never subscribed: no group rebalance, and
    nothing is committed unless the caller commits `positions()`."""

    def __init__(self, consumer: Any, topic: str, bootstrap: str, *,
                 start: Literal["committed", "beginning"], missing_hint: str,
                 topic_id: Callable[[], str | None] = lambda: None,
                 note: Callable[[str], None] = lambda text: None) -> None:
        self.consumer = consumer
        # A progress line before each request of open(): one a partition, up to METADATA_TIMEOUT_S
        # each on a slow broker, was minutes of silence on a DLQ of many partitions.
        self.note = note
        self.topic = topic
        self.bootstrap = bootstrap
        self.start = start
        self.missing_hint = missing_hint
        self._topic_id = topic_id  # the topic's current id, asked in open() (consumer/sre/topic_identity.py)
        self.topic_id: str | None = None
        self.spans: list[Span] = []
        self.behind = 0  # records in the topic before the start position (read by an earlier run)
        # (partition, committed position, end offset, told by the ids) where the position was
        # committed on another topic of this name (its id differs, or, without ids, the position is
        # past the end): the topic was deleted and recreated since. Read from its beginning.
        self.recreated: list[tuple[int, int, int, bool]] = []
        # The same, where the topic is the same (same id) and its end moved back below the
        # position (an unclean leader election): read from its end, nothing re-published.
        self.truncated: list[tuple[int, int, int]] = []
        self._positions: dict[int, int] = {}
        self._partitions: list[int] | None = None

    @property
    def total(self) -> int:
        return sum(span.end - span.start for span in self.spans)

    def check(self) -> None:
        """That the topic exists (TopicError saying what to do otherwise), without reading any
        position: `replay` takes its lock between the two (found by review: positions read before
        the lock were those of a run finishing meanwhile, and its records were re-published)."""
        if self._partitions is None:
            self._partitions = describe_topic(self.consumer, self.topic, self.bootstrap, self.missing_hint, self.note)

    def open(self) -> None:
        self.check()
        partitions = self._partitions or []
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self.topic_id = self._topic_id()
        try:
            committed = self._committed(tps) if self.start == "committed" else {}
            for i, p in enumerate(partitions, 1):
                self.note(f"end offsets of partition {p} ({i} of {len(partitions)})")
                low, high = waited(partial(self._watermarks, p),
                                   f"end offsets of partition {p} ({i} of {len(partitions)})", self.note)
                position, stored_id = committed.get(p, (-1, None))
                start = decide(position, stored_id, self.topic_id, high)
                if start is Start.RECREATED:
                    # Starting at the position would skip the new topic's records below it for good.
                    self.recreated.append((p, position, high, stored_id is not None and self.topic_id is not None))
                    log.warning("the committed position %d of %s partition %d was committed on a topic since "
                                "deleted and recreated; reading it from its beginning", position, self.topic, p,
                                extra={"topic": self.topic})
                    position = low
                elif start is Start.TRUNCATED:
                    # Its records up to the position were read before the end moved back: reading
                    # from the beginning would re-publish the whole partition.
                    self.truncated.append((p, position, high))
                    log.warning("the committed position %d of %s partition %d is past its end %d on the same "
                                "topic: records were lost from its end; resuming at the end", position, self.topic,
                                p, high, extra={"topic": self.topic})
                    position = high
                if start is not Start.RESUME:
                    # Committed with the next checkpoint even if nothing is read: the next run
                    # must not find the stale position again once the topic has grown past it.
                    self._positions[p] = position
                # A committed position older than the retention's low mark starts at the low mark.
                start_at = max(low, position)
                self.spans.append(Span(p, min(start_at, high), high))
                self.behind += min(start_at, high) - low
        except KafkaException as exc:
            raise TopicError(f"cannot read the positions of {self.topic} ({kafka_error_text(exc)}); "
                             "check that Kafka is up and that this user may read the topic and the group") from exc
        self.consumer.assign([TopicPartition(self.topic, s.partition, s.start) for s in self.spans
                              if s.start < s.end])
        log.info("reading %s up to its end offsets: %d records", self.topic, self.total,
                 extra={"topic": self.topic, "count": self.total})

    def _watermarks(self, partition: int, timeout: float) -> tuple[int, int]:
        low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=timeout)
        return low, high

    def _committed(self, tps: list[TopicPartition]) -> dict[int, tuple[int, str | None]]:
        """The group's committed position and stored topic id of each partition. A partition Kafka
        answered with an error for (its coordinator loading, an ACL) has offset -1001 like one never
        committed: taken so (found by review), the run read the partition from its beginning and
        re-published what earlier runs had, the records that failed again included. TopicError then,
        before anything is read."""
        self.note("committed positions of the group")
        answered = waited(lambda timeout: self.consumer.committed(tps, timeout=timeout),
                          "committed positions of the group", self.note)
        failed = [tp for tp in answered if getattr(tp, "error", None) is not None]
        if failed:
            tp = failed[0]
            raise TopicError(f"Kafka could not tell the group's committed position of {self.topic} partition "
                             f"{tp.partition} ({tp.error.str()}"
                             + (f"; {len(failed) - 1} other partition(s) too" if len(failed) > 1 else "")
                             + "): nothing was read or published (read from its beginning, the partition's "
                             "records replayed before would be published again); check that Kafka is up and "
                             "that this user may describe the group, then run again")
        return {tp.partition: (tp.offset, committed_id(tp)) for tp in answered}

    def records(self) -> Iterator[Any]:
        """The data records, partition by partition in offset order (partitions interleaved)."""
        remaining = {s.partition: s.end for s in self.spans if s.start < s.end}
        last_seen = next_note = time.monotonic()
        while remaining:
            batch = self.consumer.consume(CONSUME_BATCH, 0.5)
            active = any(not m.error() or m.error().code() == KafkaError._PARTITION_EOF for m in batch)
            idle_s = time.monotonic() - last_seen
            if not active and idle_s > IDLE_TIMEOUT_S:
                raise ReadStopped(f"no records from {self.topic} for {IDLE_TIMEOUT_S:.0f}s although "
                                  f"{len(remaining)} partition(s) are not read to their end; check that "
                                  "Kafka is up, then run again")
            if not active and idle_s >= IDLE_NOTE_S and time.monotonic() >= next_note:
                next_note = time.monotonic() + IDLE_NOTE_S
                self.note(f"no record from {self.topic} for {idle_s:.0f}s: {len(remaining)} partition(s) not "
                          f"read to their end yet (stops after {IDLE_TIMEOUT_S:.0f}s)")
            for message in batch:
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if partition in remaining and message.offset() >= remaining[partition]:
                            del remaining[partition]
                        continue
                    if error.fatal():
                        raise ReadStopped(f"reading {self.topic} failed: {error.str()}; check the brokers and that "
                                          "this user's ACLs allow reading it, then run again"
                                          ) from KafkaException(error)
                    log.warning("reading %s: %s", self.topic, error.str(), extra={"topic": self.topic})
                    continue
                end = remaining.get(partition)
                if end is None or message.offset() >= end:  # written after the read started
                    remaining.pop(partition, None)
                    continue
                if message.offset() == end - 1:
                    del remaining[partition]
                yield message
            if active:
                # From when the batch is done: the caller's time with it (a checkpoint waiting up
                # to ACK_TIMEOUT_S for acknowledgements) is not the broker's silence.
                last_seen = time.monotonic()

    def processed(self, message: Any) -> None:
        """Mark `message` handled: `positions()` may then move past it."""
        self._positions[message.partition()] = message.offset() + 1

    def positions(self) -> list[TopicPartition]:
        """Commit positions: after the last processed record of each partition read."""
        # With the topic's id: the next run tells a recreated or truncated topic by it.
        if self.topic_id is None:
            return [TopicPartition(self.topic, p, offset) for p, offset in sorted(self._positions.items())]
        return [TopicPartition(self.topic, p, offset, metadata=encoded(self.topic_id))
                for p, offset in sorted(self._positions.items())]


def close_reader(consumer: Any, name: str) -> None:
    """Close a tool's consumer; a failure to is only logged: what was committed stands, and the
    run's outcome was said already."""
    try:
        consumer.close()
    except KafkaException as exc:
        log.warning("closing %s: %s", name, kafka_error_text(exc))


def kafka_error_text(exc: KafkaException) -> str:
    """The broker's or librdkafka's own words, without the KafkaError{...} wrapping."""
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)
