"""Consumed records waiting to be decoded and mapped, in the order they were consumed.

The poll loop decodes from the head of the backlog for at most a turn's time budget, so one fetch
of large or slow records cannot hold it (or its liveness clock) for long; the rest waits for the
next turn. Every record goes through `consumer.ingest.intake.decode_and_map`, the one guard: it
becomes a PendingEvent or is dead-lettered with its reason.

When the schema registry fails (RegistryError) the record stays at the head and everything behind
it waits, in order, with a bounded, jittered backoff: the records may be fine, so they are never
dead-lettered for it. Meanwhile `/readyz` is false and `schema_registry_errors_total{kind}`
counts the failures; our own bound on registry requests per second (`busy`) only waits a little.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable

from consumer.delivery.batching import PendingEvent, TopicPartition
from consumer.errors import RecordError, RegistryError
from consumer.ingest.avro import Decoder
from consumer.ingest.freshness import Freshness
from consumer.ingest.intake import decode_and_map, native_recipient
from consumer.ingest.mapping import Mapper, Recipient
from consumer.ingest.records import InboundRecord
from consumer.operations.health import Health
from consumer.operations.logs import LogBudget
from consumer.operations.metrics import Metrics
from consumer.outcomes.deadletter import Failure
from consumer.sre.replay_signature import NOT_A_REPLAY, VerifiedReplay

log = logging.getLogger(__name__)

# A failing registry is asked again after these waits (jittered), the last one repeated.
REGISTRY_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
# After the registry failed a record's naming (`name`), records are named without it this long:
# each naming runs on the poll thread, and a registry that hangs costs a timeout a record.
NAMING_PAUSE_S = 30.0

DeadLetter = Callable[[InboundRecord, TopicPartition, int, Failure], None]


class Backlog:
    def __init__(self, decoder: Decoder, mapper: Mapper, max_message_bytes: int, *, metrics: Metrics,
                 health: Health, dead_letter: DeadLetter, log_budget: LogBudget,
                 verify_replay: Callable[[InboundRecord], VerifiedReplay] = lambda record: NOT_A_REPLAY,
                 stale_after_ms: int | None = None, freshness: Freshness | None = None,
                 expire: Callable[[list[PendingEvent]], None] = lambda events: None) -> None:
        self.decoder = decoder
        self.mapper = mapper
        self.fused = native_recipient(decoder, mapper)  # decode and map natively where it can
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self.health = health
        self.dead_letter = dead_letter
        self.log_budget = log_budget
        # A record is a replay only if the replay tool signed it; by default nothing is.
        self.verify_replay = verify_replay
        # Records older than this (Kafka timestamp) are dead-lettered as `stale` (intake.check_age).
        self.stale_after_ms = stale_after_ms
        # Events past MAX_EVENT_AGE end here as `expired` (consumer/ingest/freshness.py), unsent.
        self.freshness = freshness
        self.expire = expire
        self._records: deque[tuple[InboundRecord, TopicPartition, int]] = deque()
        self._retry_at = 0.0
        self._failures = 0
        self._naming_paused_until = 0.0  # `name`'s own pause: it makes no record wait, so not `_retry_at`

    def __len__(self) -> int:
        return len(self._records)

    @property
    def waiting_for_registry(self) -> bool:
        return self._failures > 0

    def wait_s(self, now: float) -> float:
        """Seconds until a record can be decoded: 0 when one can now, or the time left until the
        registry is asked again. The poll loop waits that long in its poll (bounded by its own
        timeout) instead of turning on nothing: the records only wait (`decode` returns none)."""
        return max(0.0, self._retry_at - now) if self._records else 0.0

    def add(self, record: InboundRecord, tp: TopicPartition, epoch: int) -> None:
        self._records.append((record, tp, epoch))

    def drop(self, tps: set[TopicPartition]) -> None:
        """Forget the records of partitions revoked from us: their next owner reads them again.
        If none is left, none waits for the registry: /readyz no longer says so (on an idle topic
        it said so for good). The backoff still runs: the next record waits for its end."""
        self._records = deque(item for item in self._records if item[1] not in tps)
        if not self._records and self._failures:
            self._failures = 0
            self.health.registry_ok = True

    def take(self, tps: set[TopicPartition]) -> list[tuple[InboundRecord, TopicPartition, int]]:
        """Take out the records of these partitions, undecoded (their position moved back while
        their dead-letter marks could not load: `Pipeline._hold_read_again`)."""
        taken = [item for item in self._records if item[1] in tps]
        if taken:
            self._records = deque(item for item in self._records if item[1] not in tps)
        return taken

    def name(self, record: InboundRecord) -> Recipient | None:
        """The recipient of a record that ends without its pass through the backlog (read again
        after it was dead-lettered before: `Pipeline._ended_before`), for its receipt only; None
        when it has none now (it ends as it ended all the same). On the poll thread: after the
        registry failed (a timeout, when it hangs), it is not asked again for NAMING_PAUSE_S, or
        480 records read again would wait 480 timeouts. No record waits and none is dead-lettered
        here, so neither /readyz nor the backlog's own backoff hears of it."""
        now = time.monotonic()
        if now < self._naming_paused_until:
            return None
        try:
            return decode_and_map(record, self.decoder, self.mapper, self.max_message_bytes, fused=self.fused)
        except RegistryError as exc:
            if exc.kind != "busy":  # our own bound on registry requests: asked no one
                self._naming_paused_until = now + NAMING_PAUSE_S
            return None
        except Exception:  # RecordError, a plug-in mapper's own: it ends as it ended all the same
            return None

    def end(self, ended: Callable[[InboundRecord, TopicPartition, int], bool]) -> None:
        """Take out the records `ended(record, tp, epoch)` gave an outcome without decoding them
        (read again after a position moved back, dead-lettered before)."""
        self._records = deque(item for item in self._records if not ended(*item))

    def decode(self, now: float, deadline: float, live: Callable[[TopicPartition, int, int], bool]
               ) -> list[PendingEvent]:
        """Events from the head of the backlog, until it is empty, `deadline` (monotonic) has
        passed, or the registry fails; records that cannot be events are dead-lettered. `live(tp,
        epoch, offset)`: whether a record still counts (consumer/outcomes/offsets.py); one that
        does not is dropped undecoded."""
        events: list[PendingEvent] = []
        if now < self._retry_at:
            return events
        expired: list[PendingEvent] = []
        try:
            self._decode(events, expired, now, deadline, live)
        finally:
            if expired:
                self.expire(expired)
        return events

    def _decode(self, events: list[PendingEvent], expired: list[PendingEvent], now: float, deadline: float,
                live: Callable[[TopicPartition, int, int], bool]) -> None:
        records = self._records
        was_failing = self._failures > 0
        # One wall-clock reading per turn: a turn lasts milliseconds, the stale limit is hours.
        now_ms = int(time.time() * 1000)
        decoder, mapper, max_bytes, fused = self.decoder, self.mapper, self.max_message_bytes, self.fused
        stale_after_ms = self.stale_after_ms
        verify_replay, freshness, monotonic = self.verify_replay, self.freshness, time.monotonic
        while records:
            record, tp, epoch = records[0]
            if live(tp, epoch, record.offset()):  # else revoked, or read again: the other copy counts
                # Verified before decoding: a replay dead-lettered at intake carries its count,
                # so `replay --max-replays` stops it too.
                replay = verify_replay(record)
                record.replays = replay.count
                try:
                    recipient = decode_and_map(record, decoder, mapper, max_bytes,
                                               stale_after_ms=stale_after_ms, now_ms=now_ms, fused=fused)
                except RegistryError as exc:
                    self._failed(exc, now)
                    return
                except RecordError as exc:
                    self.dead_letter(record, tp, epoch, Failure(exc.reason, str(exc)))
                else:
                    event = PendingEvent(record, tp, record.offset(), epoch, recipient, now, replay.attempt)
                    if freshness is None:
                        events.append(event)
                    elif (wrong := freshness.wrong_unit(recipient)) is not None:
                        self.dead_letter(record, tp, epoch, Failure("invalid_event", wrong))
                    elif freshness.too_old(recipient, record, now_ms):
                        expired.append(event)
                    else:
                        events.append(event)
                if was_failing:
                    was_failing = False
                    self._recovered()
            records.popleft()
            if monotonic() >= deadline:  # every record: a plug-in mapper may be slow
                break

    def _failed(self, exc: RegistryError, now: float) -> None:
        if exc.kind == "busy":  # our own bound on registry requests: not a failure, just wait a little
            self._retry_at = now + (exc.retry_after_s or 0.05)
            return
        self.metrics.registry_errors.labels(exc.kind).inc()
        backoff = REGISTRY_BACKOFF_S[min(self._failures, len(REGISTRY_BACKOFF_S) - 1)]
        self._failures += 1
        # Jittered so that a fleet does not ask a recovering registry all at once.
        self._retry_at = now + backoff * random.uniform(0.5, 1.0)
        if self.health.registry_ok or self.log_budget.allow("registry"):
            log.error("schema registry unavailable (%s); records wait, partitions pause; asking again in %.0fs",
                      exc, backoff)
        self.health.registry_ok = False

    def _recovered(self) -> None:
        self._failures = 0
        if not self.health.registry_ok:
            log.info("schema registry answering again; decoding resumes")
        self.health.registry_ok = True
