"""`pisano-sms replay`: put dead-lettered records back on their original topic, once.

The consumers treat a record with a signed `dlq.replays` > 0 as a replay: their dedup lets a
replay of an `ambiguous` dead-letter override the unknown mark of the attempt that dead-letter
names (`dlq.attempt.id`, re-published signed as `dlq.replay.attempt`), never another attempt's
mark and never a delivered event (consumer/state/dedup.py, consumer/state/lua/claim.lua). So
replaying is safe to repeat; this module only has to re-publish the
original key, value and headers untouched, count the replay, and not lose its place:

* it reads the dead-letter topic with its own consumer group (one per filter set, so replays with
  different filters never take each other's records) up to the end offsets taken at start;
* it commits a position only once every record before it was re-published and acknowledged
  (idempotent producer, acks=all, delivery reports awaited at each checkpoint): a crash re-publishes
  at most what came after the last checkpoint, which the consumers' dedup then absorbs;
* dead-lettering is at-least-once, so one origin (topic, partition, offset) may sit in the DLQ
  several times: within a run it is re-published once, a copy being one with the same key and
  value too (a forged record naming a real one's origin must not make the real one be skipped:
  consumer/sre/replayed_records.py);
* a record replayed `max_replays` times already, or whose value was left out of the DLQ (too
  large), is refused and counted, never published;
* a record Kafka refuses for itself (larger than the target topic's max.message.bytes, invalid
  for it) is refused and counted once it was refused when sent alone (the broker judges a whole
  batch, so the records batched with it were refused with it and are sent again); a run never
  stops on such a record, or every run would stop on it and nothing after it would be replayed;
* the DLQ is input like any topic: whoever can write to it chooses `dlq.original.topic`. A record
  is re-published only to one of the consumers' own topics (KAFKA_TOPICS) or to the SRE's explicit
  `--to-topic`, never to whatever topic a header names; a record whose headers are malformed is
  refused with the reason, never a crash;
* with REPLAY_SIGNING_KEY, each re-published record carries a signature
  (consumer.sre.replay_signature) without which the consumers do not treat it as a replay.

A dry run reads the same records with the same decisions and publishes and commits nothing, so
its counts are what a real run with the same filters would replay.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from consumer.config.settings import Settings
from consumer.errors import ConfigError, PisanoSmsError
from consumer.ingest.kafka import make_consumer, make_producer, refused_settings
from consumer.ingest.membership import subscribes
from consumer.ingest.records import SOURCE_TIMESTAMP_HEADER
from consumer.outcomes.deadletter import REPLAYS_HEADER
from consumer.sre.dlq_read import (
    OTHER,
    DeadLetter,
    Filters,
    MalformedDeadLetter,
    ReadStopped,
    TopicError,
    TopicReader,
    close_reader,
    count_bounded,
    describe_topic,
    kafka_error_text,
    parse_dead_letter,
    waited,
)
from consumer.sre.position_commit import CommitStalled, PositionCommitter
from consumer.sre.record_text import shown_id
from consumer.sre.replay_signature import ATTEMPT_HEADER, SIGNATURE_HEADER, sign
from consumer.sre.replayed_records import ReplayedRecords
from consumer.sre.signals import interrupt_deferred, raise_pending, terminate_interrupts
from consumer.sre.topic_identity import topic_id_of

log = logging.getLogger(__name__)

GROUP_PREFIX = "pisano-sms-replay-"
CHECKPOINT_INTERVAL_S = 2.0
ACK_TIMEOUT_S = 60.0
# A checkpoint waiting on a slow broker says so this often: up to ACK_TIMEOUT_S of silence looked
# like a hung run, which an SRE kills (its acknowledged records then published again).
WAIT_NOTE_S = 5.0


class ReplayError(PisanoSmsError):
    """The replay stopped part-way; what was acknowledged before the last checkpoint is committed,
    and a new run resumes from there. `summary` holds the counts so far once run_replay raises it."""

    summary: ReplaySummary | None = None


class ReplayInterrupted(ReplayError):
    """Ctrl-C: what Kafka acknowledged before it was committed (`summary.committed`); `summary`
    holds the counts so far, so the operator learns what happened instead of a bare "Aborted!"."""

    summary: ReplaySummary

    def __init__(self, summary: ReplaySummary, not_committed: str | None = None) -> None:
        super().__init__("interrupted")
        self.summary = summary
        # Why the interrupt's own checkpoint committed nothing (a delivery report lost to the
        # Ctrl-C, Kafka not answering): `summary.committed` then stands for earlier checkpoints only.
        self.not_committed = not_committed


class Verdict(StrEnum):
    FOREIGN = "foreign"  # not written by pisano-sms
    UNMATCHED = "unmatched"  # outside the filters
    DUPLICATE = "duplicate"  # its origin, key and value were already re-published in this run
    VALUE_OMITTED = "value_omitted"  # the DLQ has no value to re-publish
    NO_VALUE = "no_value"  # a tombstone (null value) with our headers: no event to re-publish
    OVER_MAX_REPLAYS = "over_max_replays"
    MALFORMED = "malformed"  # our headers, but not usable (reason counted in ReplaySummary.malformed)
    NOT_CONSUMER_TOPIC = "not_consumer_topic"  # dlq.original.topic is not in KAFKA_TOPICS, no --to-topic
    REFUSED_BY_KAFKA = "refused_by_kafka"  # published, refused by the broker when sent alone
    FATE_UNKNOWN = "fate_unknown"  # a reason of NAMED_ONLY the run did not name: held for one that does
    PAST_HORIZON = "past_horizon"  # failed, or written, longer ago than the dedup horizon, no --past-horizon: held
    REPLAY = "replay"


# Records the run selected and left in the DLQ: `replay` exits 3 (commands.EXIT_NOT_ALL_REPLAYED)
# when it met any, so a script or a Job knows not everything was replayed.
NOT_REPLAYED = frozenset({Verdict.FATE_UNKNOWN, Verdict.PAST_HORIZON, Verdict.VALUE_OMITTED, Verdict.NO_VALUE,
                          Verdict.OVER_MAX_REPLAYS, Verdict.MALFORMED, Verdict.NOT_CONSUMER_TOPIC,
                          Verdict.REFUSED_BY_KAFKA})


# Reasons whose events may have reached their customer already: `ambiguous` (the request's fate is
# unknown) and `stale` (older than the dedup horizon: a delivered mark may be gone). Replayed, they
# can be sent a second time, so a run takes them only when --reason names them, once the SRE has
# checked with Pisano; a run for a wrong token (--error-code 13001) or with no filter leaves them.
NAMED_ONLY = frozenset({"ambiguous", "stale"})


def default_group(filters: Filters) -> str:
    """`pisano-sms-replay-` and a short hash of the filter set: stable across runs and machines
    (not Python's salted hash()), different for different filters."""
    return GROUP_PREFIX + hashlib.sha256(filters.canonical().encode()).hexdigest()[:10]


def judge(letter: DeadLetter, filters: Filters, replayed: Container[DeadLetter], max_replays: int,
          horizon_start: datetime | None = None) -> Verdict:
    """What to do with one of our dead-letters; the order decides which count a record lands in.
    `horizon_start`: dead-letters that failed before it, or whose source records were written
    before it (DeadLetter.older_than), are held unless the filters take them (`past_horizon`): an
    earlier replay, or another copy of the event, may have delivered their events, and the
    consumers' delivered marks last DEDUP_HORIZON_S from delivery, and the replay is claimed later than now
    (the command takes STALE_MARGIN_S off for that); a replay is a new record, which nothing else stops."""
    if not filters.matches(letter):
        return Verdict.UNMATCHED
    if letter.reason in NAMED_ONLY and letter.reason not in filters.reasons:
        return Verdict.FATE_UNKNOWN
    if horizon_start is not None and letter.older_than(horizon_start) and not filters.past_horizon:
        return Verdict.PAST_HORIZON
    if letter in replayed:  # the same origin and the same key and value (consumer/sre/replayed_records.py)
        return Verdict.DUPLICATE
    if letter.value_omitted:
        return Verdict.VALUE_OMITTED
    if letter.value is None:
        # Re-published, a tombstone is dead-lettered again (no event), and on a compacted topic it
        # deletes its key's latest record (found by review).
        return Verdict.NO_VALUE
    if letter.replays >= max_replays:
        return Verdict.OVER_MAX_REPLAYS
    return Verdict.REPLAY


def replay_headers(letter: DeadLetter, signing_key: bytes | None = None, topic: str = "",
                   now_ms: int | None = None) -> list[tuple[str, bytes | None]]:
    """The original record's headers, without ours (a failure of the replay gets fresh ones),
    plus the replay count the consumers look for and, with a key, its signature for `topic`.
    A replay of an ambiguous record also names the attempt whose unknown mark it may override
    (the one the SRE checked), inside the signature: the consumers honour it only signed."""
    replays = letter.replays + 1
    headers: list[tuple[str, bytes | None]] = [*letter.original_headers, (REPLAYS_HEADER, str(replays).encode())]
    if letter.original_timestamp_ms:
        # The replay gets a new Kafka timestamp; the event's age still runs from its source record
        # (consumer/ingest/records.py, SOURCE_TIMESTAMP_HEADER: MAX_EVENT_AGE).
        headers.append((SOURCE_TIMESTAMP_HEADER, str(letter.original_timestamp_ms).encode()))
    if signing_key is not None:
        signed_at = now_ms if now_ms is not None else int(time.time() * 1000)
        attempt = letter.replay_attempt
        if attempt is not None:
            headers.append((ATTEMPT_HEADER, attempt.encode()))
        headers.append((SIGNATURE_HEADER, sign(signing_key, topic, replays, signed_at, letter.key, letter.value,
                                               attempt)))
    return headers


@dataclass(frozen=True)
class ReplayPlan:
    source_topic: str
    group: str
    filters: Filters
    limit: int | None = None  # stop after this many records replayed (held and refused ones do not count)
    max_replays: int = 3
    to_topic: str | None = None  # instead of each record's dlq.original.topic
    # --to-unconsumed-topic: take a `to_topic` the fleet does not consume (not in KAFKA_TOPICS)
    to_unconsumed_topic: bool = False
    dry_run: bool = False
    from_beginning: bool = False
    # Records that failed before this were dead-lettered longer ago than the dedup horizon minus
    # STALE_MARGIN_S (the consumers' wait before a claim): by the time the consumers claim their
    # replay, they may have forgotten whether their events were delivered.
    stale_before: datetime | None = None


@dataclass(frozen=True)
class Breakdown:
    """What a run replayed, broken down (`ReplaySummary.breakdown`)."""

    by_code: Counter[str] = field(default_factory=Counter)
    by_campaign: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_target: Counter[str] = field(default_factory=Counter)
    stale: int = 0


@dataclass
class ReplaySummary:
    read: int = 0
    verdicts: Counter[Verdict] = field(default_factory=Counter)
    # What was (or, in a dry run, would be) re-published, broken down.
    by_code: Counter[str] = field(default_factory=Counter)
    by_campaign: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_target: Counter[str] = field(default_factory=Counter)
    stale: int = 0
    behind: int = 0  # records of the DLQ before the group's position, not read by this run
    # (partition, stale position, end, told by the ids): committed on a DLQ since recreated (another
    # id, or with no ids to compare, past its end)
    recreated: list[tuple[int, int, int, bool]] = field(default_factory=list)
    # (partition, position, end): the same DLQ's end moved back below the position; resumed at the end
    truncated: list[tuple[int, int, int]] = field(default_factory=list)
    committed: bool = False
    # Of `replayed`, those Kafka acknowledged by the last checkpoint: after a failure part-way, the
    # rest may never have reached the topic, and the next run publishes them again.
    acknowledged: int = 0
    _acknowledged_breakdown: Breakdown = field(default_factory=Breakdown)
    limit_reached: bool = False
    signed: bool = False  # the re-published records carry a replay signature
    malformed: Counter[str] = field(default_factory=Counter)  # reason -> records refused
    fate_unknown: Counter[str] = field(default_factory=Counter)  # reason (NAMED_ONLY) -> records held
    not_consumer_topics: Counter[str] = field(default_factory=Counter)  # named topic -> records refused
    kafka_refusals: Counter[tuple[str, str]] = field(default_factory=Counter)  # (error, topic) -> records refused

    @property
    def matched(self) -> int:
        return (self.read - self.verdicts[Verdict.FOREIGN] - self.verdicts[Verdict.UNMATCHED]
                - self.verdicts[Verdict.MALFORMED])

    @property
    def replayed(self) -> int:
        return self.verdicts[Verdict.REPLAY]

    @property
    def not_replayed(self) -> int:
        """Records of ours the run selected (they passed the filters) and did not replay, nor would in
        a dry run: refused or held; malformed ones too (no filter can be judged on them). Foreign and
        unmatched records were not selected; a duplicate's content was replayed."""
        return sum(self.verdicts[verdict] for verdict in NOT_REPLAYED)

    def breakdown(self, acknowledged: bool) -> Breakdown:
        """The breakdown of every record replayed (in a dry run: that would be), or of those Kafka
        acknowledged by the last checkpoint: the ones the `replayed` row counts after a failure."""
        if acknowledged:
            return self._acknowledged_breakdown
        return Breakdown(self.by_code, self.by_campaign, self.by_reason, self.by_target, self.stale)

    def checkpointed(self) -> None:
        """Everything replayed so far is acknowledged (or counted refused): at a checkpoint."""
        self.acknowledged = self.replayed
        self._acknowledged_breakdown = Breakdown(Counter(self.by_code), Counter(self.by_campaign),
                                                 Counter(self.by_reason), Counter(self.by_target), self.stale)

    def add_replay(self, letter: DeadLetter, target: str, stale_before: datetime | None) -> None:
        # The code and the campaign are the record's choice (dlq_read.MAX_DISTINCT); the reason is
        # one of ours (parse_dead_letter) and the target a consumer topic or --to-topic.
        count_bounded(self.by_code, letter.code_label)
        count_bounded(self.by_campaign, letter.campaign_label)
        self.by_reason[letter.reason] += 1
        self.by_target[target] += 1
        if stale_before is not None and letter.older_than(stale_before):
            self.stale += 1

    def refused_by_kafka(self, refusal: Refusal, stale_before: datetime | None) -> None:
        """Count as refused a record `add_replay` counted as replayed: Kafka refused it."""
        self.verdicts[Verdict.REPLAY] -= 1
        self.verdicts[Verdict.REFUSED_BY_KAFKA] += 1
        letter = refusal.letter
        for counter, key in ((self.by_code, letter.code_label), (self.by_campaign, letter.campaign_label),
                             (self.by_reason, letter.reason), (self.by_target, refusal.topic)):
            if key not in counter:  # counted as OTHER by `add_replay`
                key = OTHER
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
        if stale_before is not None and letter.older_than(stale_before):
            self.stale -= 1
        self.kafka_refusals[(refusal.error, refusal.topic)] += 1


@dataclass(frozen=True)
class Refusal:
    letter: DeadLetter
    topic: str
    error: str  # librdkafka's name of the broker's answer, e.g. MSG_SIZE_TOO_LARGE


# The broker's answers about a record's own content: sending it again gets the same answer.
RECORD_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD})
# What librdkafka reports for records to a topic deleted after it was checked: its metadata then
# has no partitions for it (no auto-creation: replay's producer never creates a topic).
TOPIC_GONE = frozenset({KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART})


class _Publisher:
    """Re-publishes records and tells, at a checkpoint, whether all of them were acknowledged or
    refused for themselves (RECORD_ERRORS, when sent alone)."""

    def __init__(self, producer: Any, signing_key: bytes | None, rerun: str = "",
                 exists: Callable[[str], bool | None] = lambda topic: None,
                 waiting: Callable[[str], None] = lambda text: None) -> None:
        self.producer = producer
        self.waiting = waiting  # a progress line while the acknowledgements keep it waiting
        self.signing_key = signing_key
        self.rerun = rerun  # resume_hint(plan): what the failure's message says to run again
        # Whether a topic exists now, by a fresh metadata request (None: Kafka did not say).
        self.exists = exists
        self.failure: KafkaError | None = None
        self.failed_topic: str | None = None  # the target of the first failed report
        self.gone_topic: str | None = None  # the target of a TOPIC_GONE report: the failure names it
        self._suspects: deque[tuple[str, DeadLetter]] = deque()  # refused in a batch: sent again alone
        self._refused: list[Refusal] = []
        # Records published whose fate is not known yet: counted down only by a report that
        # settles one (acknowledged, or refused alone). A checkpoint commits only at zero, so a
        # report lost to Ctrl-C (KeyboardInterrupt raised inside its callback, which librdkafka
        # counts as delivered) or a suspect never sent again can never pass for an acknowledgement.
        self._unsettled = 0

    def publish(self, topic: str, letter: DeadLetter, alone: bool = False) -> None:
        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is None:
                self._unsettled -= 1
            elif error.code() not in RECORD_ERRORS:
                if self.failure is None:
                    self.failure, self.failed_topic = error, topic
                    if error.code() in TOPIC_GONE:
                        self.gone_topic = topic
            elif alone:
                self._refused.append(Refusal(letter, topic, error.name()))
                self._unsettled -= 1
            else:
                self._suspects.append((topic, letter))

        if not alone:  # sent again alone, it is still the one record awaited
            # The caller holds signals from here to its bookkeeping: one held already is raised now,
            # while nothing is published (and while produce() waits for room in the queue, below).
            raise_pending()
            self._unsettled += 1
        headers = replay_headers(letter, self.signing_key, topic)
        try:
            while True:
                try:
                    self.producer.produce(topic, key=letter.key, value=letter.value, headers=headers,
                                          on_delivery=delivered)
                    break
                except BufferError:  # librdkafka's queue is full: its delivery reports drain it
                    if not alone:
                        try:
                            raise_pending()
                        except KeyboardInterrupt:
                            self._unsettled -= 1  # not published
                            raise
                    self.producer.poll(0.1)
        except KafkaException as exc:
            # The client judges a record over its own message.max.bytes in produce() itself, alone:
            # a refusal like the broker's, or every run would stop on that record.
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None or error.code() not in RECORD_ERRORS:
                raise ReplayError(f"Kafka refused a re-published record ({kafka_error_text(exc)}); positions after "
                                  "the last checkpoint were not committed: fix the cause (topic, ACLs, "
                                  "the kafka: settings), then run again") from exc
            self._refused.append(Refusal(letter, topic, error.name()))
            self._unsettled -= 1
            return
        self.producer.poll(0)

    def wait_acknowledged(self) -> list[Refusal]:
        """Wait for every delivery report; the records Kafka refused for themselves, or ReplayError."""
        self.settle()
        return self.take_refused()

    def take_refused(self) -> list[Refusal]:
        """The refusals not taken yet, taken off the list: count them under `interrupt_deferred`."""
        refused, self._refused = self._refused, []
        return refused

    def settle(self) -> None:
        """Wait until every record published is acknowledged or refused alone, or ReplayError."""
        self._flush()
        while self._suspects:
            # Taken off the list one at a time: after a Ctrl-C here, the checkpoint of the
            # interrupt handler sends the rest again instead of forgetting them.
            topic, letter = self._suspects.popleft()
            # Nothing else in flight: its batch holds it alone.
            self.publish(topic, letter, alone=True)
            self._flush()
        if self._unsettled:
            raise ReplayError(f"no delivery report for {self._unsettled} re-published record(s) (interrupted?); "
                              "positions after the last checkpoint were not committed: run again (it resumes; "
                              "the consumers skip what was delivered)")

    def _flush(self) -> None:
        # In slices, with a progress line after each: the wait may last ACK_TIMEOUT_S.
        started = time.monotonic()
        deadline = started + ACK_TIMEOUT_S
        while True:
            slice_s = max(0.0, min(WAIT_NOTE_S, deadline - time.monotonic()))
            sliced_at = time.monotonic()
            left = self.producer.flush(slice_s)
            # A flush that gave up well before its slice (the producer has nothing more coming)
            # ends the wait as one flush did: slicing must not turn it into a busy loop.
            if not left or time.monotonic() >= deadline or time.monotonic() - sliced_at < slice_s / 2:
                break
            self.waiting(f"waiting for Kafka to acknowledge {left:,} re-published record(s): "
                         f"{time.monotonic() - started:.0f}s of at most {ACK_TIMEOUT_S:.0f}s")
        if left:
            raise ReplayError(f"Kafka did not acknowledge {left} re-published record(s) within {ACK_TIMEOUT_S:.0f}s; "
                              "positions after the last checkpoint were not committed: check the brokers, then "
                              "run again (it resumes; the consumers skip what was delivered)")
        if self.failure is not None and self.gone_topic is None and self.failed_topic is not None \
                and self.exists(self.failed_topic) is False:
            # librdkafka fails the records of a topic deleted under it with one code or another,
            # depending on the moment (_UNKNOWN_PARTITION, or _DESTROY with the partition's handle):
            # whatever the code, a target that no longer exists is what the operator must hear.
            self.gone_topic = self.failed_topic
        if self.failure is not None and self.gone_topic is not None:
            raise ReplayError(f"topic {shown_id(self.gone_topic)} no longer exists ({self.failure.str()}; deleted "
                              "while the replay ran?); positions after the last checkpoint were not committed: "
                              "create it, or re-publish elsewhere with --to-topic, then run again"
                              f"{self.rerun}: it resumes from the group's committed position (the consumers skip "
                              "what was delivered)")
        if self.failure is not None:
            raise ReplayError(f"Kafka refused a re-published record ({self.failure.str()}); positions after the "
                              "last checkpoint were not committed: fix the cause (topic, ACLs), then run again")


def run_replay(settings: Settings, plan: ReplayPlan,
               progress: Callable[[int, int], None] | None = None, lock: RunLock | None = None,
               waiting: Callable[[str], None] | None = None) -> ReplaySummary:
    """Replay what `plan` selects; raises TopicError when a topic is missing or Kafka unreachable
    before the run committed or published anything, ReplayError (with the counts so far) when a
    target is missing, or publishing, reading or committing fails, part-way. SIGTERM ends it as
    Ctrl-C does (ReplayInterrupted, its cause `Terminated`). `lock` (consumer/sre/replay_lock.py)
    is taken once the topics are checked, before anything is read (its refusal raises through), and
    asked at each checkpoint: a run that lost it stops there, committing nothing more (another run
    owns the group's position now). `waiting(text)`: a progress line while Kafka keeps the run
    waiting (a checkpoint's acknowledgements, the end offsets read at the start)."""
    with terminate_interrupts():
        return _run_replay(settings, plan, progress, lock, waiting or (lambda text: None))


class RunLock(Protocol):
    def acquire(self) -> None:
        """Take the lock, or raise (ReplayLocked) naming the run that holds it."""

    def lost(self) -> str | None:
        """Why this run no longer holds it, or None while it does."""


def _run_replay(settings: Settings, plan: ReplayPlan, progress: Callable[[int, int], None] | None,
                lock: RunLock | None, waiting: Callable[[str], None]) -> ReplaySummary:
    signing_key = settings.replay_key()  # a ConfigError before anything is read
    if signing_key is None and "ambiguous" in plan.filters.reasons and not plan.dry_run:
        # Unsigned, an ambiguous replay is dead-lettered as ambiguous again by the consumers, never
        # sent (README, "Signed replays"): the run would move its group's position past every one of
        # them and say `replayed`, and each would come back to the DLQ under a new origin.
        raise ConfigError("--reason ambiguous needs REPLAY_SIGNING_KEY (or REPLAY_SIGNING_KEY_FILE), the key the "
                          "fleet has: unsigned, the consumers dead-letter every replayed ambiguous event as ambiguous "
                          "again and never send it; set it as the fleet has it and run again (--dry-run counts "
                          "without it)")
    consumer_topics = _consumer_topics(settings, plan)
    if not settings.kafka_topics and plan.to_topic is None:
        # Every record would be refused as "other topic" and the group's position committed past
        # them all: the run the operator makes next, with the same filters, would find nothing.
        raise ConfigError("KAFKA_TOPICS is not set: replay re-publishes only to the consumers' topics; set it as "
                          "the fleet has it, or name the target with --to-topic")
    # Raw events (phones in clear) must not land among the receipts auditors read, nor in a DLQ
    # as records of no one; and either slip would move the group's position past the dead-letters.
    if plan.to_topic is not None and plan.to_topic in {plan.source_topic, settings.dlq_topic, settings.outcome_topic}:
        raise ConfigError(f"--to-topic {plan.to_topic} is the dead-letter or receipt topic (DLQ_TOPIC, --from-topic, "
                          "OUTCOME_TOPIC); name the topic the consumers read the events from")
    # Any other topic the SRE's credentials may write was taken too (found by review): another team's
    # topic got raw events (phones in clear) no pisano-sms consumer reads, and the group's position
    # moved past them. A target the fleet does not consume is taken only when said so.
    if plan.to_topic is not None and not plan.to_unconsumed_topic \
            and not subscribes(tuple(settings.kafka_topics), plan.to_topic):
        fleet = (f"KAFKA_TOPICS ({', '.join(settings.kafka_topics)})" if settings.kafka_topics
                 else "KAFKA_TOPICS, which is not set here")
        raise ConfigError(f"--to-topic {plan.to_topic} is not a topic the consumers read: not in {fleet}; the "
                          "replayed events would reach no pisano-sms consumer. Name one of the fleet's topics, or "
                          "set KAFKA_TOPICS as the fleet has it; if the fleet does read it (a new topic not in "
                          "KAFKA_TOPICS yet), add --to-unconsumed-topic to re-publish there anyway")
    # A client librdkafka refuses to make (a CA file missing on the SRE's machine) is a ConfigError
    # naming the setting, exit 2, not a traceback (found by review).
    with refused_settings():
        consumer = make_consumer(settings, **{"group.id": plan.group, "enable.partition.eof": True})
        # Never create a topic: a broker with auto.create.topics.enable would otherwise recreate a
        # target deleted while the replay runs, with the broker's defaults, and take the records.
        producer = None if plan.dry_run else make_producer(settings, **{"allow.auto.create.topics": False})
    publisher = _Publisher(producer, signing_key, resume_hint(plan),
                           lambda topic: _topic_exists(consumer, topic, waiting),
                           waiting) if producer is not None else None
    reader = TopicReader(consumer, plan.source_topic, settings.kafka_bootstrap_servers,
                         start="beginning" if plan.from_beginning else "committed",
                         missing_hint="check DLQ_TOPIC or --from-topic",
                         topic_id=lambda: topic_id_of(settings, plan.source_topic, waiting), note=waiting)
    committer = PositionCommitter(consumer, plan.group, waiting, timeout_s=ACK_TIMEOUT_S, note_every_s=WAIT_NOTE_S)
    summary = ReplaySummary(signed=signing_key is not None)
    known_targets: set[str] = set()
    # The records re-published in this run, by origin and content, in about 8 bytes each
    # (consumer/sre/replayed_records.py).
    replayed = ReplayedRecords()

    def checkpoint() -> None:
        if publisher is None:
            return
        publisher.settle()
        # Taken off the publisher's list and counted as one step: a Ctrl-C in between lost the
        # rest from the summary while the interrupt's checkpoint committed past them.
        with interrupt_deferred():
            for refusal in publisher.take_refused():
                summary.refused_by_kafka(refusal, plan.stale_before)
            summary.checkpointed()
        lost = lock.lost() if lock is not None else None
        if lost is not None:
            raise ReplayError(f"this run no longer holds the replay lock of {shown_id(plan.source_topic)} with group "
                              f"{plan.group} ({lost}): it stopped, and committed nothing after its last checkpoint "
                              "(a run that holds the lock now owns the group's position); run again only once "
                              "no other replay of it runs (a run that cannot start names the holder)")
        positions = reader.positions()
        if not positions:
            return
        try:
            committer.commit(positions)
        except CommitStalled as exc:
            raise ReplayError(f"{exc} (a broker that stalls?); the records after its last confirmed position were "
                              f"re-published: check the brokers, then run again{resume_hint(plan)} (it re-publishes "
                              "them, the consumers skip the delivered ones)") from exc
        except KafkaException as exc:
            raise ReplayError(f"could not commit the position of group {plan.group} ({kafka_error_text(exc)}): "
                              "check KAFKA_BOOTSTRAP_SERVERS and that this user's ACLs allow the group "
                              f"{plan.group}; the records after its last committed position were re-published: "
                              f"run again{resume_hint(plan)} (it re-publishes them, the consumers skip the "
                              "delivered ones)") from exc
        summary.committed = True

    try:
        reader.check()
        if plan.to_topic:
            _check_target(consumer, plan.to_topic, settings, known_targets, waiting)
        # Before the group's positions are read: a run that finished meanwhile committed past what
        # it re-published, and positions read before its release would publish all that again.
        if lock is not None:
            lock.acquire()
        reader.open()
        summary.behind = reader.behind
        summary.recreated = list(reader.recreated)
        summary.truncated = list(reader.truncated)
        next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL_S
        for message in reader.records():
            summary.read += 1
            try:
                letter = parse_dead_letter(message)
            except MalformedDeadLetter as exc:
                letter, verdict = None, Verdict.MALFORMED
                count_bounded(summary.malformed, str(exc))
            else:
                verdict = Verdict.FOREIGN if letter is None else judge(letter, plan.filters, replayed,
                                                                       plan.max_replays, plan.stale_before)
            if letter is not None and verdict is Verdict.FATE_UNKNOWN:
                summary.fate_unknown[letter.reason] += 1
            if letter is not None and verdict is Verdict.REPLAY and plan.to_topic is None \
                    and not consumer_topics(letter.origin[0]):
                verdict = Verdict.NOT_CONSUMER_TOPIC
                count_bounded(summary.not_consumer_topics, letter.origin[0])
            if letter is not None and verdict is Verdict.REPLAY:
                target = plan.to_topic or letter.origin[0]
                try:
                    # Checked in a dry run too: the real run would stop here, so the counts would differ.
                    _check_target(consumer, target, settings, known_targets, waiting)
                except TopicError as exc:
                    checkpoint()
                    if summary.committed or (publisher is not None and summary.replayed):
                        # Part-way: positions were committed (or records published): the counts
                        # so far and exit 1, like any failure after the start. A run that changed
                        # nothing (a dry run never does) stays a missing topic at the start (exit 2).
                        raise ReplayError(f"after {summary.read:,} record(s) read: {exc}, then run again"
                                          f"{resume_hint(plan)}: it resumes from group {plan.group}'s committed "
                                          "position, at the record that needs it") from exc
                    raise
            # From produce() to the record's position: one step for a signal (found by review: one
            # landing in between raised with the record published but neither counted nor passed, so
            # the interrupt's checkpoint committed before it and the next run published it again).
            # A signal held here is raised at the block's end, or by publish() before its produce().
            with interrupt_deferred():
                if letter is not None and verdict is Verdict.REPLAY:
                    if publisher is not None:
                        publisher.publish(target, letter)
                    replayed.add(letter)
                    summary.add_replay(letter, target, plan.stale_before)
                summary.verdicts[verdict] += 1
                reader.processed(message)
            if progress is not None:
                progress(summary.read, reader.total)
            if plan.limit is not None and summary.replayed >= plan.limit:
                # Kafka's refusals are counted at a checkpoint: settle first, so a record it
                # refused does not count toward the limit (then the run goes on for the rest).
                checkpoint()
                next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL_S
                if summary.replayed >= plan.limit:
                    summary.limit_reached = True
                    break
            if time.monotonic() >= next_checkpoint:
                checkpoint()
                next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL_S
        checkpoint()
    except KeyboardInterrupt as exc:
        # Keep what was acknowledged: the next run starts after it instead of re-publishing it.
        # A second Ctrl-C during this checkpoint goes through as KeyboardInterrupt: nothing more
        # is committed. One that cannot commit (a report lost to this Ctrl-C) commits nothing, but
        # the run was still interrupted: the operator gets the summary and exit 130, not a failure.
        try:
            checkpoint()
        except ReplayError as failed:
            raise ReplayInterrupted(summary, str(failed)) from exc
        except KafkaException as failed:
            raise ReplayInterrupted(summary, kafka_error_text(failed)) from exc
        raise ReplayInterrupted(summary) from exc
    except ReplayError as exc:
        exc.summary = summary
        raise
    except ReadStopped as exc:
        # Part-way (records may be re-published): the counts so far and exit 1, as for any failure
        # after the start, not the exit 2 of a topic missing before anything was read.
        stopped = ReplayError(f"{exc} after {summary.read:,} record(s) read; positions after the last checkpoint "
                              f"were not committed: the same command{resume_hint(plan)} resumes from there")
        stopped.summary = summary
        raise stopped from exc
    except KafkaException as exc:
        # From consume(), the producer's poll() or flush(): the broker gone, an ACL, a fatal
        # producer error. Nothing after the last checkpoint is committed: no position passes a
        # record whose delivery report did not come.
        stopped = ReplayError(f"Kafka failed after {summary.read:,} record(s) read ({kafka_error_text(exc)}): "
                             "check KAFKA_BOOTSTRAP_SERVERS and the security settings, that the topics exist and "
                             f"that this user's ACLs allow reading {plan.source_topic}, writing the targets and "
                             f"committing group {plan.group}; then run again{resume_hint(plan)}: it resumes "
                             "from the group's committed position (the consumers skip what was delivered)")
        stopped.summary = summary
        raise stopped from exc
    finally:
        if committer.in_flight:
            # Closing would destroy the client under the stalled commit: the process's exit ends it.
            log.warning("the replay's consumer is left open: Kafka has not answered its commit")
        else:
            close_reader(consumer, "the replay's consumer")
    log.info("replay of %s done: %d read, %d replayed", plan.source_topic, summary.read, summary.replayed,
             extra={"topic": plan.source_topic, "count": summary.replayed})
    return summary


def resume_hint(plan: ReplayPlan) -> str:
    """What to leave out of the rerun that resumes: --from-beginning would start over instead."""
    return " without --from-beginning" if plan.from_beginning else ""


def _consumer_topics(settings: Settings, plan: ReplayPlan) -> Callable[[str], bool]:
    """Whether a dead-letter's topic is one the consumers read, as they subscribe: KAFKA_TOPICS'
    names and `^...` patterns (found by review: a fleet subscribed by pattern had every dead-letter
    refused as `other topic`, and the group's position committed past them all). Never the
    dead-letter or receipt topic, which a wide pattern may match too: a forged origin naming one
    would put raw events among the dead-letters or the receipts."""
    subscribed = tuple(settings.kafka_topics)
    never = {plan.source_topic, settings.dlq_topic, settings.outcome_topic}
    return lambda topic: topic not in never and subscribes(subscribed, topic)


def _topic_exists(client: Any, topic: str, note: Callable[[str], None] = lambda text: None) -> bool | None:
    """Whether `topic` exists now (a consumer's metadata request never creates it); None if Kafka
    did not answer."""
    try:
        described = waited(lambda timeout: client.list_topics(topic, timeout=timeout),
                           f"whether topic {topic} still exists", note).topics.get(topic)
    except KafkaException:
        return None
    return described is not None and described.error is None and bool(described.partitions)


def _check_target(client: Any, topic: str, settings: Settings, known: set[str],
                  note: Callable[[str], None] = lambda text: None) -> None:
    # Producing to a missing topic would only fail after message.timeout.ms (5 minutes).
    if topic not in known:
        describe_topic(client, topic, settings.kafka_bootstrap_servers,
                       "create it, or re-publish elsewhere with --to-topic", note)
        known.add(topic)

