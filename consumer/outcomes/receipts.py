"""The outcome topic (receipts): one Avro record per input record, saying how it ended (README, "Receipts").

    record's outcome -> Receipt (phone as a salted hash) -> Avro (schemas/receipt.avsc) -> OUTCOME_TOPIC
                                                              acknowledged -> its offset may be committed

With OUTCOME_TOPIC set, a record's offset is committed only once its receipt is acknowledged, as
for dead-letters: the producer is the dead-letter queue's (idempotent, `acks=all`), and a failed
delivery is produced again after a backoff, for ever; a receipt topic that is down stops commits
and, through the full buffers, fetching; it never loses a receipt. A fatal error of the producer
ends the poll loop instead (`poll()` raises it once, consumer/outcomes/producer_fatal.py). A topic
whose max.message.bytes is below the producer's batch refuses a burst's batches as too large:
those receipts go again at once, in smaller poll turns (CLEAN_TURNS), not after a backoff.
A dead-lettered record gets its receipt after its dead-letter is acknowledged, so a receipt never
names a dead-letter that is not there.

Once per record: a partition commits only up to its oldest record without an outcome, so after a
rebalance or a crash its next owner reads again records that already have a receipt. With `marks`
(consumer/state/receipt_marks.py) each acknowledged receipt marks its origin, a replica assigned a
partition loads its marks (while the marks pause, on the first poll after the pause), and a record
marked already ends without a second receipt. A receipt this replica wrote for a record whose
partition it gave up and was assigned back, acknowledged after that assignment loaded the marks,
counts as loaded too. A partition whose position moves back (an offset reset) loads its marks
again at once (`assigned(now=True)`), and the receipts this replica acknowledged while the marks
could not be written are kept in memory: a record read again then gets no second receipt. While
that load cannot be made (the marks pause), the partition is not fetched (`deferred`) and the
receipts of its records wait for it (`record`).

What is left is at least once: a receipt acknowledged but not marked yet when its replica dies
(the mark is written in the next poll turn), or acknowledged while Redis is away (receipts go on
without marks for MARKS_PAUSE_S), gets a second receipt with the same origin coordinates when read
again. The second says what the second pass saw: a dead-lettered record `dead_lettered` again (its
dead-letter is not written twice, consumer/state/dead_letters.py), a delivered one `duplicate`
(dedup stopped a second SMS). So a reader takes the *first* receipt of each origin (topic,
partition, offset): all receipts of one record have the same key, so they are in one partition of
the receipt topic, in order.

The key is the event id; a record without one (it could not be decoded or mapped) is keyed by its
origin, `topic[partition]@offset`. The value is schemaless Avro, or with OUTCOME_SCHEMA_ID the
Confluent wire format (magic byte 0, the 4-byte schema id, then the Avro body) for the id under
which the operator registered schemas/receipt.avsc: the consumer never registers schemas itself.

The phone is never in clear: `phone_hash` is the lower-case hex SHA-256 of OUTCOME_PHONE_SALT
followed by the canonical phone (what was sent to Pisano, e.g. `+905321234567`), both UTF-8, so a
CRM holding the salt can compute it for a lookup, and no one without it can.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import operator
import struct
import time
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import KafkaError

from consumer.errors import StateStoreError
from consumer.ingest.mapping import Recipient
from consumer.outcomes.confirmed_commits import ConfirmedCommits
from consumer.outcomes.deadletter import MARKS_PAUSE_S, RETRY_BACKOFF_S, Failure, error_text
from consumer.outcomes.failed_deliveries import FailedDeliveries
from consumer.outcomes.owned_marks import LOAD_TURN_S, OwnedMarks, go_on_without
from consumer.outcomes.producer_fatal import ProducerFatal
from consumer.outcomes.retry_queue import RetryQueue
from consumer.state.dead_letters import Origin, TopicPartition
from consumer.state.receipt_marks import ReceiptMarks

log = logging.getLogger(__name__)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "receipt.avsc"
# The receipt's outcome symbols (schemas/receipt.avsc), in the schema's order.
ReceiptOutcome = typing.Literal["accepted", "duplicate", "cooldown", "suppressed", "expired", "dead_lettered"]
RECEIPT_OUTCOMES: tuple[str, ...] = typing.get_args(ReceiptOutcome)
# The poll loop's outcome kinds (consumer/delivery/outcome.py) whose name differs from the
# receipt's; a policy's kind (cooldown, suppressed, expired) is its receipt outcome as it is.
_FROM_KIND = {"delivered": "accepted", "skipped": "duplicate", "dead_letter": "dead_lettered"}
# The reason of a contact policy's outcome, when its report names none (README, "Contact policy").
_POLICY_REASONS = {"expired": "max_event_age", "suppressed": "opt_out_list", "cooldown": "contact_cooldown"}
MIN_SALT_CHARS = 16
_WIRE_MAGIC = 0
# The receipt's fields that every event of one request shares (schemas/receipt.avsc, in its order).
SHARED_FIELDS = ("consumer_group", "campaign_id", "destination", "outcome", "reason", "detail", "pisano_http_status",
                 "pisano_code", "request_id", "pisano_request_id", "attempts")
MAX_SHARED_KEPT = 256
# A receipt topic whose max.message.bytes is below librdkafka's batch (batch.size, 1 MB) refuses
# a burst's batches whole as too large, though each receipt (a few hundred bytes) fits: every
# refused receipt produced again at once would be batched and refused again, for ever. So after
# such a refusal each poll turn produces at most half as many receipts as were refused, and the
# limit doubles again after CLEAN_TURNS turns with acknowledgements and no refusal.
CLEAN_TURNS = 10
_NO_TURN_LIMIT = 1 << 16  # a limit this high is no limit: back to librdkafka's batching


def receipt_outcome(kind: str) -> str:
    """The receipt outcome of a final outcome kind of the poll loop; ValueError for one that is
    not final (requeue) or unknown."""
    outcome = _FROM_KIND.get(kind, kind)
    if outcome not in RECEIPT_OUTCOMES:
        raise ValueError(f"no receipt outcome for {kind!r}; add it to schemas/receipt.avsc and RECEIPT_OUTCOMES")
    return outcome


class PhoneHasher:
    """SHA-256 of the salt followed by the canonical phone, lower-case hex (module docstring)."""

    def __init__(self, salt: str) -> None:
        if len(salt) < MIN_SALT_CHARS:
            raise ValueError(f"the salt is shorter than {MIN_SALT_CHARS} characters")
        self._salted = hashlib.sha256(salt.encode("utf-8"))

    def __call__(self, phone: str) -> str:
        digest = self._salted.copy()  # the salt's state, hashed once
        digest.update(phone.encode("utf-8"))
        return digest.hexdigest()

    def __repr__(self) -> str:  # the salt is a secret
        return "PhoneHasher(***)"


@dataclass(slots=True)
class Receipt:
    """One record's outcome; the fields of schemas/receipt.avsc, timestamps in epoch milliseconds."""

    origin_topic: str
    origin_partition: int
    origin_offset: int
    consumer_group: str
    outcome: str
    consumed_at: int
    decided_at: int
    event_id: str | None = None
    campaign_id: str | None = None
    destination: str | None = None
    reason: str | None = None
    detail: str | None = None
    pisano_http_status: int | None = None
    pisano_code: int | None = None
    request_id: str | None = None
    pisano_request_id: str | None = None
    attempts: int = 0
    phone_hash: str | None = None
    event_time: int | None = None

    @property
    def key(self) -> bytes:
        """The event id; the origin for a record without one."""
        if self.event_id is not None:
            return self.event_id.encode("utf-8")
        return origin_key(self.origin_topic, self.origin_partition, self.origin_offset)

    @property
    def origin(self) -> tuple[str, int, int]:
        return self.origin_topic, self.origin_partition, self.origin_offset


def _origin(message: Any) -> Origin:
    """A record's origin for the receipt marks. Its fingerprint (a topic created again reuses
    offsets) is the Kafka timestamp and the value's size: cheaper than the dead-letter marks'
    digest, which this runs too often for, and as sure to tell two records at one offset apart."""
    _, timestamp = message.timestamp()
    return Origin(message.topic(), message.partition(), message.offset(), f"{timestamp}:{len(message.value() or b'')}")


def origin_key(topic: str, partition: int, offset: int) -> bytes:
    return f"{topic}[{partition}]@{offset}".encode()


def build_receipt(message: Any, outcome: str, *, group: str, hasher: PhoneHasher,
                  recipient: Recipient | None = None, failure: Failure | None = None,
                  destination: str | None = None, reason: str | None = None, request_id: str | None = None,
                  pisano_request_id: str | None = None, attempts: int = 0,
                  decided_at_ms: int | None = None) -> Receipt:
    """The receipt of `message` (a consumed record) ending in `outcome` (RECEIPT_OUTCOMES)."""
    if outcome not in RECEIPT_OUTCOMES:
        raise ValueError(f"not a receipt outcome: {outcome!r}")
    now_ms = int(time.time() * 1000)
    _, timestamp = message.timestamp()
    campaign = recipient.campaign_id if recipient is not None else failure.campaign_id if failure else None
    return Receipt(
        origin_topic=message.topic(), origin_partition=message.partition(), origin_offset=message.offset(),
        consumer_group=group, outcome=outcome,
        consumed_at=getattr(message, "consumed_at_ms", 0) or now_ms,
        decided_at=decided_at_ms or now_ms,
        event_id=recipient.event_id if recipient is not None else None,
        campaign_id=campaign,
        destination=destination,
        reason=failure.reason if failure is not None else reason or _POLICY_REASONS.get(outcome),
        detail=error_text(failure.message) if failure is not None and failure.message else None,
        pisano_http_status=failure.http_status if failure is not None else None,
        pisano_code=failure.code if failure is not None else None,
        request_id=failure.request_id if failure is not None else request_id,
        pisano_request_id=pisano_request_id,
        attempts=failure.attempts if failure is not None else attempts,
        phone_hash=hasher(recipient.phone) if recipient is not None else None,
        event_time=recipient.event_time_ms if recipient is not None and recipient.event_time_ms is not None
        else timestamp if timestamp and timestamp > 0 else None,
    )


def _varint(n: int) -> bytes:
    """Avro's int and long: zigzag, then 7 bits a byte, low first. A large number's bytes past its
    first two are taken from the numbers encoded lately: offsets and timestamps (three of them per
    receipt) near one another share them."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x4000:
        return _groups(z)
    high = z >> 14
    rest = _HIGH_GROUPS.get(high)
    if rest is None:
        if len(_HIGH_GROUPS) >= MAX_HIGH_GROUPS:
            _HIGH_GROUPS.clear()
        rest = _HIGH_GROUPS[high] = _groups(high)
    return bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80)) + rest


def _groups(z: int) -> bytes:
    """A zigzagged number's 7-bit groups, low first, each but the last with its high bit set."""
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


MAX_HIGH_GROUPS = 1024
_HIGH_GROUPS: dict[int, bytes] = {}


_SMALL = [_varint(n) for n in range(64)]  # lengths, union branches, enum indexes: most are small


def avro_long(n: int) -> bytes:
    """An Avro int or long (`n` within 64 bits) as its bytes (also the native core's probes of
    logical types: consumer/ingest/fused.py)."""
    return _SMALL[n] if 0 <= n < 64 else _varint(n)


def _text_bytes(text: str) -> bytes:
    # A lone surrogate (Pisano's request id is any JSON string) is written as its escape: strict
    # UTF-8 refuses it, and the poll loop would fail on a request already accepted.
    data = text.encode("utf-8", "backslashreplace")
    return avro_long(len(data)) + data


def _field_writer(avro_type: Any) -> Callable[[Any], bytes]:
    """The encoder of one field of the receipt's schema (the types it uses, nothing more)."""
    if isinstance(avro_type, list):  # ["null", X]: branch 0 for None, 1 for a value
        assert avro_type[0] == "null" and len(avro_type) == 2, avro_type
        inner = _field_writer(avro_type[1])
        return lambda value: b"\x00" if value is None else b"\x02" + inner(value)
    if isinstance(avro_type, dict) and avro_type.get("type") == "enum":
        index = {symbol: avro_long(n) for n, symbol in enumerate(avro_type["symbols"])}
        return index.__getitem__
    name = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    if name in ("int", "long"):
        return avro_long
    if name == "string":
        return _text_bytes
    raise ValueError(f"receipt schema: no encoder for {avro_type!r}")


class ReceiptCodec:
    """Receipts to Avro bytes and back: schemaless, or the Confluent wire format with `schema_id`.

    Encoding runs for every record, so it is done here field by field from the schema file (a
    few microseconds) rather than through fastavro's generic writer (ten times that); the unit
    tests hold it to fastavro's bytes. Decoding (the demo, the tests, a reader) uses fastavro, on
    the schema without its logical types: the timestamps come back as the longs they were written
    as (through a datetime, a float lost a millisecond now and then, and a time past year 9999,
    a valid long, could not be read at all)."""

    def __init__(self, schema_id: int | None = None, schema: Any = None) -> None:
        raw = json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) if schema is None else schema
        self.schema = fastavro.parse_schema(raw)
        self._plain = fastavro.parse_schema(_without_logical_types(raw))
        self.schema_id = schema_id
        self._header = struct.pack(">bI", _WIRE_MAGIC, schema_id) if schema_id is not None else b""
        fields = raw["fields"]
        names = tuple(f["name"] for f in fields)
        self._values = operator.attrgetter(*names)
        writers = [_field_writer(f["type"]) for f in fields]
        # The fields a request's events share, when the schema has them side by side (ours does):
        # their bytes are made once per request, not once per receipt (half the encoding's work).
        first = names.index(SHARED_FIELDS[0]) if SHARED_FIELDS[0] in names else len(names)
        end = first + len(SHARED_FIELDS)
        if names[first:end] != SHARED_FIELDS:
            first = end = len(names)
        self._first, self._end = first, end
        self._writers_before, self._writers_shared = writers[:first], writers[first:end]
        self._writers_after = writers[end:]
        numbers = [n for n, f in enumerate(fields[first:end]) if _is_number(f["type"])]
        self._numbers: Callable[[tuple[Any, ...]], Iterable[Any]] = \
            operator.itemgetter(*numbers, *numbers) if numbers else (lambda shared: ())  # a tuple even for one
        self._shared_bytes: dict[tuple[Any, ...], bytes] = {}

    def encode(self, receipt: Receipt) -> bytes:
        values = self._values(receipt)
        shared = values[self._first:self._end]
        middle = self._shared_bytes.get(shared)
        # Kept by equality: a number equal to a kept one but not an int (1.0, a float Avro's long
        # refuses) is written on its own, never given the int's bytes.
        if middle is None or not _INTEGRAL.issuperset(map(type, self._numbers(shared))):
            middle = b"".join([write(value) for write, value in zip(self._writers_shared, shared, strict=True)])
            if len(self._shared_bytes) >= MAX_SHARED_KEPT:  # dropped whole: a request's receipts come together
                self._shared_bytes.clear()
            self._shared_bytes[shared] = middle
        return b"".join([self._header,
                         *[write(value) for write, value in zip(self._writers_before, values, strict=False)],
                         middle,
                         *[write(value) for write, value in zip(self._writers_after, values[self._end:], strict=True)]])

    def decode(self, value: bytes) -> Receipt:
        """A receipt as written (either format: the header's length is known from `schema_id`)."""
        buffer = io.BytesIO(value)
        if self._header and buffer.read(len(self._header)) != self._header:
            raise ValueError("not a receipt of this schema id (Confluent wire format header)")
        fields = fastavro.schemaless_reader(buffer, self._plain, None)
        assert isinstance(fields, dict)
        return Receipt(**fields)


_INTEGRAL = frozenset({int, bool, type(None)})  # written alike when equal (True as 1)


def _is_number(avro_type: Any) -> bool:
    """Whether a field of the receipt's schema holds an int or a long (or null)."""
    if isinstance(avro_type, list):
        return any(_is_number(branch) for branch in avro_type)
    return (avro_type.get("type") if isinstance(avro_type, dict) else avro_type) in ("int", "long")


def _without_logical_types(schema: Any) -> Any:
    """The schema with every logicalType dropped: the same bytes, read as their Avro types."""
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(item) for item in schema]
    return schema


@dataclass
class _Pending:
    key: bytes
    value: bytes
    outcome: str
    on_done: Callable[[], None]
    origin: Origin | None = None  # with marks only
    attempts: int = 0
    tp: TopicPartition = ("", 0)  # the record's partition and its generation when this was written
    generation: int = 0  # (`ReceiptWriter.forget`)
    counts: Callable[[], bool] | None = None  # whether its record's outcome still counts (the tracker's)
    turn_limit: float = math.inf  # the writer's receipts-per-turn limit when this was last produced


class ReceiptWriter:
    """Produces receipts; `on_done` runs from the delivery report once Kafka acknowledged one.
    `poll()` must be called from the poll loop (it serves the producer's delivery reports)."""

    def __init__(self, producer: Any, topic: str, *, group: str, hasher: PhoneHasher, codec: ReceiptCodec,
                 route: Callable[[str], str | None] = lambda campaign: None,
                 on_acknowledged: Callable[[str], None] = lambda outcome: None,
                 marks: ReceiptMarks | None = None, clock: Callable[[], float] = time.monotonic,
                 on_marks_error: Callable[[], None] = lambda: None) -> None:
        self.producer = producer
        self._on_marks_error = on_marks_error  # redis_errors_total{operation="marks"}
        self.topic = topic
        self.group = group
        self.hasher = hasher
        self.codec = codec
        self.route = route  # campaign -> destination name
        self.on_acknowledged = on_acknowledged  # the metric, by outcome
        self.in_flight = 0
        self._retry: RetryQueue[_Pending] = RetryQueue()
        self.marks = marks
        self.already_receipted = 0  # records read again whose receipt was acknowledged before
        # Offset -> fingerprint of the marks of our partitions, loaded at assignment.
        # A partition whose marks cannot load, however long it waits, goes on without them, and
        # its failure pauses no other partition's marks.
        self._receipted: OwnedMarks[str] = OwnedMarks(self._load_partition, without=partial(
            go_on_without, log, "receipt marks", "a record of it read again after a rebalance or restart may get "
            "a second receipt", on_marks_error))
        self._acknowledged: list[Origin] = []  # to mark in the next poll()
        # Partitions whose position moved back and whose marks are loaded again (`assigned(now=True)`),
        # with the receipts of their records waiting for that load (`record`).
        self._reloading: set[TopicPartition] = set()
        self._waiting: list[tuple[TopicPartition, Callable[[], bool] | None, Callable[[], None]]] = []
        self._commits = ConfirmedCommits(clock)  # confirmed commit points: the marks below them go, later
        self._marks_paused_until = 0.0
        self._skipped = 0  # since the last poll(), for one log line per turn
        # Bumped when a partition is revoked or lost: its receipts written before are abandoned.
        self._generations: dict[TopicPartition, int] = {}
        self._fatal = ProducerFatal("receipts")  # the producer failed for good: poll() raises
        # Receipts produced per poll turn at most, while the topic refuses batches as too large.
        self._turn_limit = math.inf
        self._turn_produced = 0
        self._refused_too_large = 0  # since the last turn began
        self._acknowledged_now = 0  # since the last turn began
        self._clean_turns = 0
        self._failed = FailedDeliveries("receipt", log)  # said once a poll turn, not once a receipt

    def record(self, message: Any, kind: str, on_done: Callable[[], None], *, recipient: Recipient | None = None,
               failure: Failure | None = None, reason: str | None = None, request_id: str | None = None,
               pisano_request_id: str | None = None, attempts: int = 0, decided_at_ms: int | None = None,
               counts: Callable[[], bool] | None = None) -> None:
        """Produce the receipt of `message` ending as `kind` (an outcome kind of the poll loop or a
        receipt outcome); `on_done` once it is acknowledged. `counts`: whether the record's outcome
        still counts; a receipt waiting for its topic once it does not (the position moved back
        past it) is dropped: the copy read again writes the receipt of its origin."""
        outcome = receipt_outcome(kind)
        if self._reloading and (tp := (message.topic(), message.partition())) in self._reloading:
            # Read again after its position moved back, while its marks cannot load (Redis failed a
            # moment ago): written now, it could be the record's second receipt. It waits, its
            # record uncommitted, for the load (`_load_marks`); a revoke abandons it (`forget`).
            self._waiting.append((tp, counts, partial(
                self.record, message, kind, on_done, recipient=recipient, failure=failure, reason=reason,
                request_id=request_id, pisano_request_id=pisano_request_id, attempts=attempts,
                decided_at_ms=decided_at_ms, counts=counts)))
            return
        # None for a partition consumed without its marks (`OwnedMarks.without`): its key fails every call.
        without = self._receipted.without  # empty but after a foreign key: no lookup per record
        origin = _origin(message) if self.marks is not None \
            and not (without and (message.topic(), message.partition()) in without) else None
        if origin is not None and (self._receipted.of((origin.topic, origin.partition)) or {}).get(origin.offset) \
                == origin.fingerprint:
            self.already_receipted += 1  # read again after a rebalance or a restart: it has its receipt
            self._skipped += 1
            on_done()
            return
        campaign = recipient.campaign_id if recipient is not None else failure.campaign_id if failure else None
        routed = campaign is not None and not (failure is not None and failure.reason == "unroutable")
        receipt = build_receipt(message, outcome, group=self.group, hasher=self.hasher, recipient=recipient,
                                failure=failure, destination=self.route(campaign) if routed and campaign else None,
                                reason=reason, request_id=request_id, pisano_request_id=pisano_request_id,
                                attempts=attempts, decided_at_ms=decided_at_ms)
        self.write(receipt, on_done, origin, counts=counts)

    def write(self, receipt: Receipt, on_done: Callable[[], None], origin: Origin | None = None, *,
              counts: Callable[[], bool] | None = None) -> None:
        self.in_flight += 1
        tp = (receipt.origin_topic, receipt.origin_partition)
        self._produce(_Pending(receipt.key, self.codec.encode(receipt), receipt.outcome, on_done, origin, tp=tp,
                               generation=self._generations.get(tp, 0), counts=counts))

    # ---------------------------------------------------------------- marks (the poll loop's group callbacks)

    def assigned(self, tps: list[TopicPartition], *, now: bool = False) -> None:
        """Load the marks of newly assigned partitions: their records with a receipt already.
        While the marks pause (Redis failed a moment ago), on the first poll() after the pause:
        records read before that may get a second receipt, not every record of the assignment.

        `now`: these partitions' positions moved back (an offset reset), and the records read
        again may have had their receipts since the assignment, marked in the store, not in the
        marks loaded then. Loaded again in this call, whatever the turn's budget; while they cannot
        load, those partitions are held from the fetch (`deferred`) and their receipts wait for
        the load (`record`): a record read again ends with the one receipt it had."""
        if self.marks is None:
            return
        self._receipted.assigned(tps)
        if now:
            self._reloading.update(tps)
            # Acknowledged, not marked yet: the load does not see them.
            self._remember(self._acknowledged)
        self._load_marks(tps if now else None)

    def _load_partition(self, tp: TopicPartition) -> dict[int, str]:
        assert self.marks is not None
        return self.marks.receipted(self.group, tp)

    def _load_marks(self, now: list[TopicPartition] | None = None) -> None:
        if self.marks is None or not self._receipted.unloaded or self._marks_paused():
            return
        try:
            if now is not None:  # (a move back: rare, and each partition's load is bounded)
                self._receipted.load_all(only=now)
            else:
                self._receipted.load_all(LOAD_TURN_S)  # the rest next turn (`deferred`)
        except Exception as exc:  # an outage, or a stored value no one expected: only the marks pause
            self._marks_failed("read", exc)
        if self._reloading:
            self._reloaded()

    def _reloaded(self) -> None:
        """Write the waiting receipts of the partitions whose marks loaded again after a move back
        (or that go on without them: a key no wait mends), looked up in those marks first."""
        self._reloading &= self._receipted.unloaded
        ready = [(counts, call) for tp, counts, call in self._waiting if tp not in self._reloading]
        if ready:
            self._waiting = [item for item in self._waiting if item[0] in self._reloading]
            for counts, call in ready:
                if counts is None or counts():  # else read again once more: that copy writes it
                    call()

    def _remember(self, origins: list[Origin]) -> None:
        """Keep in memory these receipts of ours that are not marked in the store (acknowledged
        since the last write, or while it failed): a record of one of our partitions read again
        after its position moves back finds them, as it finds the store's (`assigned(now=True)`)."""
        owned = self._receipted.owned
        for origin in origins:
            if (origin.topic, origin.partition) in owned:
                self._receipted.remember((origin.topic, origin.partition), origin.offset, origin.fingerprint)

    def deferred(self) -> set[TopicPartition]:
        """Our partitions whose receipt marks wait for a later poll turn's load (`LOAD_TURN_S`),
        not for Redis: not to be read until they load (a record read before would get a second
        receipt). While the marks pause after a failure, only those whose position moved back
        (`assigned(now=True)`): the other partitions' receipts go on without them then."""
        if self.marks is None:
            return set()
        if self._marks_paused():
            return self._reloading
        return self._receipted.unloaded

    def forget(self, tps: set[TopicPartition]) -> None:
        """Partitions revoked from us or lost. Their receipts not acknowledged yet are abandoned:
        their records were not committed, so the next owner reads them again and writes their
        receipts; ours, produced again after an outage of the receipt topic, would be second ones
        (and might land first). One already at the broker may still land: the marks' window."""
        for tp in tps:
            self._generations[tp] = self._generations.get(tp, 0) + 1
        self._receipted.forget(tps)
        self._reloading -= tps
        if self._waiting:  # waiting for the marks of a partition no longer ours: its next owner writes them
            self._waiting = [item for item in self._waiting if item[0] not in tps]
        self.in_flight -= self._retry.keep(lambda pending: not self._abandoned(pending))

    def _abandoned(self, pending: _Pending) -> bool:
        return pending.generation != self._generations.get(pending.tp, 0) \
            or (pending.counts is not None and not pending.counts())

    def committed(self, points: dict[TopicPartition, int]) -> None:
        """Commits the broker confirmed: the marks below them are removed MARKS_KEEP_S later
        (`ConfirmedCommits`: the coordinator may still lose them; the partition's next owner then
        reads the records again)."""
        if self.marks is not None:
            self._commits.add(points)
        self._receipted.trim(points)

    def write_marks(self) -> None:
        """Mark the receipts acknowledged since the last call, remove the marks below commits."""
        origins, self._acknowledged = self._acknowledged, []
        commits = self._commits.due()
        without = self._receipted.without
        if without:  # partitions consumed without their marks: their key would fail the whole call
            origins = [o for o in origins if (o.topic, o.partition) not in without]
        if self.marks is None or (not origins and not commits):
            return
        if self._marks_paused():
            # Not marked: a next owner reading these records again may write second receipts; this
            # replica, reading them again after a move back, finds them in memory.
            self._remember(origins)
            return
        marks, group = self.marks, self.group
        try:
            # A key found foreign by a call takes its own partition out (`OwnedMarks.isolating`),
            # so the other partitions' marks are written, and their commits' removals made.
            self._receipted.isolating(lambda part: marks.mark(group, part), origins, _partition)
            without = self._receipted.without  # taken again: the marks' call may have added one
            due = [(tp, offset) for tp, offset in commits.items() if tp not in without]
            self._receipted.isolating(lambda part: marks.forget_below(group, dict(part)), due, _point_partition)
        except Exception as exc:  # an outage: only the marks pause
            self._remember(origins)  # maybe not marked (as while paused)
            self._marks_failed("write", exc)

    def _marks_paused(self) -> bool:
        return time.monotonic() < self._marks_paused_until

    def marks_paused(self) -> bool:
        """Whether the marks pause after a failure of Redis (their loads too)."""
        return self._marks_paused()

    def _marks_failed(self, what: str, exc: Exception) -> None:
        self._on_marks_error()
        self._marks_paused_until = time.monotonic() + MARKS_PAUSE_S
        # Our own words for an outage; only the type of anything else, which may quote what was stored.
        shown = exc if isinstance(exc, StateStoreError) else type(exc).__name__
        log.warning("could not %s receipt marks (%s); writing receipts without them for %.0fs: a record read "
                    "again after a rebalance or restart may get a second receipt", what, shown, MARKS_PAUSE_S)

    def poll(self, timeout: float = 0.0) -> None:
        with self._fatal.polling():
            self._poll(timeout)
        self._fatal.raise_once()

    def _poll(self, timeout: float) -> None:
        self._new_turn()
        if self._retry:
            due = self._retry.take_due(time.monotonic())
            kept = [p for p in due if not self._abandoned(p)]
            self.in_flight -= len(due) - len(kept)
            for pending in kept:
                self._produce(pending)
        self.producer.poll(timeout)
        self.write_marks()
        self._load_marks()
        self._failed.say(self.topic)
        if self._skipped:  # only after a restart or a rebalance: one line per turn
            log.info("%d records read again had their receipt already (a restart or rebalance before their "
                     "commit); no second receipt", self._skipped, extra={"count": self._skipped})
            self._skipped = 0

    def _new_turn(self) -> None:
        """Adjust the receipts-per-turn limit to what the last turn saw (CLEAN_TURNS)."""
        refused, self._refused_too_large = self._refused_too_large, 0
        acknowledged, self._acknowledged_now = self._acknowledged_now, 0
        self._turn_produced = 0
        if refused:
            self._turn_limit = max(1, min(self._turn_limit, refused) // 2)
            self._clean_turns = 0
            log.warning("%d receipts refused by %s as too large, in batches: at most %d a poll turn for now (its "
                        "max.message.bytes is below the producer's batch.size)", refused, self.topic,
                        self._turn_limit, extra={"count": refused})
        elif acknowledged and self._turn_limit < math.inf:
            self._clean_turns += 1
            if self._clean_turns >= CLEAN_TURNS:
                self._clean_turns = 0
                self._turn_limit = self._turn_limit * 2 if self._turn_limit * 2 < _NO_TURN_LIMIT else math.inf

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` for every receipt to be acknowledged."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            self.poll(min(0.1, max(0.0, deadline - time.monotonic())))
        self.write_marks()  # before the commit that follows a flush (revoke): the next owner loads them
        return self.in_flight == 0

    def _produce(self, pending: _Pending) -> None:
        if self._turn_produced >= self._turn_limit:  # the next turn's (`_new_turn`), not a failure
            self._retry.put(pending)
            return
        self._turn_produced += 1
        pending.turn_limit = self._turn_limit
        try:
            self.producer.produce(self.topic, key=pending.key, value=pending.value,
                                  on_delivery=lambda err, _msg: self._delivered(pending, err))
        except BufferError:
            self._later(pending, "the producer queue is full")
        except Exception as exc:  # KafkaException: the client refused it outright (unknown topic, ...)
            self._fatal.note(exc)
            self._later(pending, str(exc))

    def _delivered(self, pending: _Pending, err: KafkaError | None) -> None:
        if err is not None:
            self._fatal.note(err)
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and pending.turn_limit > 1:
                # Refused with a batch too large, maybe: again next turn, in smaller turns.
                self._refused_too_large += 1
                if self._abandoned(pending):
                    self.in_flight -= 1
                else:
                    self._retry.put(pending)
                return
            self._later(pending, err.str())  # refused alone too: the topic is misconfigured
            return
        self._acknowledged_now += 1
        self.in_flight -= 1
        if pending.origin is not None:
            self._acknowledged.append(pending.origin)
            if pending.tp in self._receipted.owned and (pending.counts is None or self._abandoned(pending)):
                # Not the receipt of the copy that counts: written for a record read before its
                # partition was given up and assigned back to us (the marks loaded then lack it),
                # or Pisano's acceptance after the hand-over (`counts` None). The copy read
                # again, which counts, must not get a second receipt.
                self._receipted.remember(pending.tp, pending.origin.offset, pending.origin.fingerprint)
            if not self._fatal.serving and self._abandoned(pending):
                # Served outside poll() after its partition was revoked or lost (the final flush of
                # a shutdown, after which no poll() comes): marked now, or the next owner writes a
                # second receipt.
                self.write_marks()
        self.on_acknowledged(pending.outcome)
        pending.on_done()

    def _later(self, pending: _Pending, why: str) -> None:
        if self._abandoned(pending):  # its partition is someone else's now (`forget`): not produced again
            self.in_flight -= 1
            return
        backoff = RETRY_BACKOFF_S[min(pending.attempts, len(RETRY_BACKOFF_S) - 1)]
        pending.attempts += 1
        self._retry.put(pending, time.monotonic() + backoff)
        self._failed.add(why, backoff)


def _partition(origin: Origin) -> TopicPartition:
    return origin.topic, origin.partition


def _point_partition(point: tuple[TopicPartition, int]) -> TopicPartition:
    return point[0]


def first_receipts(receipts: Iterable[Receipt]) -> dict[tuple[str, int, int], Receipt]:
    """Each origin's first receipt, from receipts in the order of their partition of the receipt
    topic: the record's outcome (a second one comes from reading it again, module docstring)."""
    first: dict[tuple[str, int, int], Receipt] = {}
    for receipt in receipts:
        first.setdefault(receipt.origin, receipt)
    return first
