"""The poll loop: Kafka records in, outcomes out, offsets committed only behind durable outcomes.

    poll -> backlog -> decode -> map -> batch (sender threads take it from there) ... outcome -> commit

The loop never sleeps on anything but `consume` with a short timeout: throttle waits and Redis
outages happen in the sender threads, and backpressure pauses the partitions while the loop
keeps polling (ARCHITECTURE.md invariant 4). Records that cannot become a recipient are dead-lettered
here with their reason (invariant 7); the others finish as delivered, skipped or dead-lettered
by the senders (invariant 1).

Every consumed message is read once into an `InboundRecord` and waits in the `Backlog`, which
decodes it through one guard (`consumer.ingest.intake.decode_and_map`): the process never dies of
a record. A turn decodes for at most TURN_BUDGET_S, so one fetch of large or slow records cannot
hold the loop (and its liveness clock) past a turn; while records wait there, or for the schema
registry, fetching is paused. Memory is bounded in events (MAX_BUFFERED_EVENTS) and in bytes
(MAX_BUFFERED_BYTES) of records without an outcome, and a record without an outcome for
STUCK_RECORD_MS makes the replica not ready.

With receipts (OUTCOME_TOPIC, consumer/outcomes/receipts.py), a record finishes only once its
receipt is acknowledged: every final outcome goes through `_finish`, which produces the receipt
and finishes the offset from its delivery report; a dead-letter's receipt follows the dead-letter's
acknowledgement.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections import Counter as TallyCounter
from collections import deque
from collections.abc import Callable
from functools import partial
from operator import itemgetter
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.config.settings import Settings
from consumer.delivery.batching import KAFKA_TIMESTAMP, TP, PendingEvent
from consumer.delivery.lanes import Lanes
from consumer.delivery.outcome import FILTERED, Outcome
from consumer.delivery.pisano_codes import code_label
from consumer.ingest import fused
from consumer.ingest.avro import Decoder
from consumer.ingest.backlog import Backlog
from consumer.ingest.freshness import Freshness
from consumer.ingest.mapping import Mapper, Recipient
from consumer.ingest.membership import GroupWatch, committed_metadata, missing_topics, rejoin_limit_s
from consumer.ingest.records import InboundRecord
from consumer.operations.collector import FullPasses
from consumer.operations.health import Health
from consumer.operations.logs import LogBudget, redact_phones
from consumer.operations.metrics import Metrics, observe_ages
from consumer.outcomes.deadletter import DeadLetterQueue, Failure
from consumer.outcomes.offsets import OffsetTracker
from consumer.outcomes.owned_marks import LOAD_TURN_S
from consumer.outcomes.receipts import ReceiptWriter
from consumer.sre.replay_signature import NOT_A_REPLAY, ReplayVerifier
from consumer.state.dead_letters import DeadLetterMarks
from consumer.state.witness import CommittedStamps

log = logging.getLogger(__name__)

# Outcomes that end a record with nothing more to make durable: its offset may be committed.
FINISHED = ("delivered", "skipped", *FILTERED)

POLL_TIMEOUT_S = 0.05
POLL_BATCH = 1000
RESUME_AT = 0.5  # resume fetching once the buffers are down to half of MAX_BUFFERED_EVENTS (and bytes)
# Decode and map for at most this long per turn; the rest of the backlog waits for the next turn.
# One record can still take longer (a 1 MiB record through a JMESPath filter takes about 2 s),
# which MAX_MESSAGE_BYTES bounds far below the 60 s liveness window.
TURN_BUDGET_S = 0.2
HOLD_S = 2.0  # an event held back (its id in flight elsewhere) is tried again this much later
GAUGE_INTERVAL_S = 5.0
# Every partition's position is committed again this often, moved or not: a coordinator that
# fails over can lose a commit it had confirmed, and a confirmed commit is never sent twice.
RECOMMIT_INTERVAL_S = 15.0
# Leaving the group at the end, each step bounded: inside the 15 s the chart's grace period keeps
# beyond SHUTDOWN_GRACE_MS, with the producer's final 5 s flush.
LEAVE_TIMEOUT_S = 3.0
CLOSE_TIMEOUT_S = 5.0
# Reading the group's committed offsets at the start (their stamps of the Redis state), each call.
STAMPS_TIMEOUT_S = 10.0


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        consumer_factory: Callable[[Callable[[KafkaError | None, list[TopicPartition]], None]], Any],
        producer: Any,
        decoder: Decoder,
        mapper: Mapper,
        delivery_factory: Callable[[Callable[[Outcome], None]], Lanes],
        metrics: Metrics,
        health: Health,
        replays: ReplayVerifier | None = None,
        dead_letter_marks: DeadLetterMarks | None = None,
        receipts: ReceiptWriter | None = None,
        stamps: CommittedStamps | None = None,
    ) -> None:
        self.settings = settings
        self._consumer_factory = consumer_factory
        self._generation = 0  # of the Kafka consumer: one replaced (`_check_membership`) is ignored
        self.consumer = self._new_consumer()
        self._group = GroupWatch(rejoin_limit_s(settings.kafka))
        self._closing: threading.Thread | None = None  # the close() of the last consumer replaced
        self.producer = producer
        self.decoder = decoder
        self.mapper = mapper
        self.metrics = metrics
        self.health = health
        self.tracker = OffsetTracker()
        # With marks, a record read again after a SIGKILL or rebalance is dead-lettered only once.
        self.dlq = DeadLetterQueue(producer, settings.dlq_topic, marks=dead_letter_marks,
                                   group=settings.kafka_group_id, compat_headers=settings.dlq_compat_headers,
                                   on_acknowledged=self._count_dead_letter,
                                   on_marks_error=metrics.redis_errors.labels("marks").inc)
        self.receipts = receipts  # with OUTCOME_TOPIC: on the same producer as the dead-letters
        # Each commit stamps the Redis state, read back by the next start (consumer/state/witness.py).
        self.stamps = stamps
        self.outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        # The sending side, one lane per destination: batches are filled here, taken by senders.
        self.delivery = delivery_factory(self.outcomes.put)
        self._stop = threading.Event()
        self._stop_deadline = math.inf  # monotonic: the end of SHUTDOWN_GRACE_MS once stopping
        self._paused = False
        self._held: deque[tuple[float, list[PendingEvent]]] = deque()  # ids in flight elsewhere
        self._mapped_natively = fused.records_mapped()  # the process's count, reported by its increase
        self._topic_names: dict[str, str] = {}  # one name object per topic (InboundRecord.of)
        self._record_bytes = 1024  # moving average of a record's size: how many fit in the byte room
        self._last_commit = 0.0
        self._last_recommit = time.monotonic()
        self._last_gauges = 0.0
        self._log_budget = LogBudget()
        self._full_passes = FullPasses(time.monotonic())  # cyclic garbage lives a minute at most
        # Partitions given up (revoked or lost) during the current consume call, and those of them
        # assigned back during it: that call may hand back records of the earlier assignment.
        self._given_up: set[tuple[str, int]] = set()
        self._assigned_back: set[tuple[str, int]] = set()
        # Assigned partitions kept paused until their dead-letter marks are loaded (Redis failed at
        # the assignment): read before, a record dead-lettered by the previous owner would be sent.
        self._unmarked: set[tuple[str, int]] = set()
        # Records read again after their partition's position moved back while its dead-letter
        # marks could not be loaded (Redis failed a moment ago): undecoded until they are
        # (`_hold_read_again`), or one dead-lettered before could be sent.
        self._unjudged: dict[tuple[str, int], list[tuple[InboundRecord, tuple[str, int], int]]] = {}
        # Consumed records not decoded yet: the rest of a turn's slice, or waiting for the registry.
        self.backlog = Backlog(decoder, mapper, settings.max_message_bytes, metrics=metrics, health=health,
                               dead_letter=lambda record, tp, epoch, failure: self._dead_letter(
                                   record, tp, record.offset(), epoch, failure),
                               log_budget=self._log_budget,
                               verify_replay=(lambda r: replays.replay(r.topic(), r.key(), r.value(), r.headers())
                                              if r.headers() else NOT_A_REPLAY)
                               if replays is not None else (lambda r: NOT_A_REPLAY),
                               stale_after_ms=settings.stale_after_ms,
                               freshness=Freshness(settings.max_event_age_ms) if settings.max_event_age_ms else None,
                               expire=lambda events: self.outcomes.put(Outcome("expired", events)))

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM): stop fetching, flush, commit, leave the group, all within
        SHUTDOWN_GRACE_MS from now (a revocation under way when it comes keeps to it too)."""
        if self._stop_deadline == math.inf:
            self._stop_deadline = time.monotonic() + self.settings.shutdown_grace_ms / 1000
        self._stop.set()

    def _new_consumer(self) -> Any:
        generation = self._generation + 1

        def on_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
            if generation == self._generation:  # not a replaced consumer's, served by its close()
                self._on_commit(error, partitions)

        consumer = self._consumer_factory(on_commit)
        self._generation = generation  # (only once it exists: one that failed replaces nothing)
        return consumer

    def _read_stamps(self) -> None:
        """The group's committed offsets as they are before this replica commits anything: their
        stamps witness the Redis state of the last commits (consumer/state/witness.py)."""
        if self.stamps is None:
            return
        try:
            committed = committed_metadata(self.consumer, self.settings.kafka_topics, STAMPS_TIMEOUT_S)
        except KafkaException as exc:
            self.stamps.unread(str(exc))
            return
        self.stamps.read(committed)

    def _subscribe(self) -> None:
        def current(callback: Callable[[Any, list[TopicPartition]], None]) -> Callable[..., None]:
            # A replaced consumer's close() serves its own callbacks in another thread: they must not
            # touch this loop's state (confluent-kafka assigns and unassigns by itself then).
            return lambda consumer, partitions: callback(consumer, partitions) if consumer is self.consumer else None

        self.consumer.subscribe(self.settings.kafka_topics, on_assign=current(self._on_assign),
                                on_revoke=current(self._on_revoke), on_lost=current(self._on_lost))
        self._group.left(time.monotonic())

    def run(self) -> None:
        self._read_stamps()
        self._subscribe()
        self.delivery.start()
        log.info("consuming %s as group %s", ",".join(self.settings.kafka_topics), self.settings.kafka_group_id)
        try:
            while not self._stop.is_set():
                self._step()
            self._shutdown()
        finally:
            self._close()
            self.producer.flush(5)
            # Acknowledgements that flush served, with no poll after it, for partitions close()
            # could not revoke in time: unmarked, their next owner would write second copies.
            self.dlq.write_marks()
            if self.receipts is not None:
                self.receipts.write_marks()
            log.info("stopped")

    def _close(self) -> None:
        """Leave the group, then close the consumer, both bounded. A cooperative rebalance under
        way while the replica stops (a SIGTERM right after another replica left, its partitions
        handed over during the shutdown) was seen to leave close() waiting for good: so the
        subscription is dropped first and its revocation served here; close() then has nothing to
        revoke, and runs in a thread of its own: past CLOSE_TIMEOUT_S the replica exits without it
        (the group drops the member after its session timeout; what it did not commit, the next
        owner reads again)."""
        deadline = time.monotonic() + LEAVE_TIMEOUT_S
        try:
            self.consumer.unsubscribe()
            while self.consumer.assignment() and time.monotonic() < deadline:
                self.consumer.consume(num_messages=1, timeout=POLL_TIMEOUT_S)  # serves the revocation
        except Exception as exc:  # a consumer failed fatally, say: close() is still worth a try
            log.warning("could not leave the consumer group before closing (%s)", exc)
        closer = threading.Thread(target=self.consumer.close, name="kafka-close", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            log.error("the Kafka consumer did not close within %.0fs; exiting without it: the group drops this "
                      "member after its session timeout, and the next owner reads again what it did not "
                      "commit", CLOSE_TIMEOUT_S)

    def _step(self) -> None:
        now = time.monotonic()
        self.health.loop_at = now
        room = min(self.settings.max_buffered_events - self._load(),
                   (self.settings.max_buffered_bytes - self.tracker.unfinished_bytes) // self._record_bytes)
        # With a backlog the turn's time goes to decoding it; the poll only serves callbacks then.
        # Not while its records wait for the schema registry's retry: nothing can be decoded and
        # nothing is fetched (paused), so a zero timeout would spin the loop (a core, and the GIL
        # against the senders) for as long as the registry is away.
        timeout = min(POLL_TIMEOUT_S, self.backlog.wait_s(now)) if self.backlog else POLL_TIMEOUT_S
        self._given_up.clear()
        self._assigned_back.clear()
        messages = self.consumer.consume(num_messages=max(1, min(POLL_BATCH, room)), timeout=timeout)
        if messages:
            self._take(messages, now)
        if self.backlog:
            events = self.backlog.decode(now, now + TURN_BUDGET_S, self.tracker.live)
            if events:
                self.delivery.add(events)
                for topic, count in TallyCounter(map(itemgetter(0), map(TP, events))).items():
                    self.metrics.events_decoded.labels(topic).inc(count)
                mapped = fused.records_mapped()
                if mapped > self._mapped_natively:
                    self.metrics.events_mapped_natively.inc(mapped - self._mapped_natively)
                    self._mapped_natively = mapped
        while self._held and self._held[0][0] <= now:
            _, events = self._held.popleft()
            current = [e for e in events if self.tracker.live(e.tp, e.epoch, e.offset)]
            for event in current:
                event.enqueued_at = now
            self.delivery.add(current)
        self._drain_outcomes()
        self.dlq.poll(0)
        if self._unmarked:
            self._resume_marked()
        if self.receipts is not None:
            self.receipts.poll(0)
        if now - self._last_commit >= self.settings.commit_interval_ms / 1000:
            recommit = now - self._last_recommit >= RECOMMIT_INTERVAL_S
            self._commit(all_known=recommit)
            self._last_commit = now
            if recommit:
                self._last_recommit = now
        self._backpressure()
        if now - self._last_gauges >= GAUGE_INTERVAL_S:
            self._update_gauges()
            self._check_membership(now)
            self._last_gauges = now
            self._log_budget.roll(log)
            self._full_passes.collect_if_due(now)

    def _shutdown(self) -> None:
        if self._stop_deadline == math.inf:  # stopped without request_stop (a fatal error)
            self._stop_deadline = time.monotonic() + self.settings.shutdown_grace_ms / 1000
        deadline = self._stop_deadline
        grace = max(0.0, deadline - time.monotonic())
        log.info("stopping: flushing buffered events for up to %.0fs", grace, extra={"count": self.delivery.buffered})
        self.health.stopping = True
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        self.delivery.flush_all()
        # Events held by quiet hours are not waited for: they stay uncommitted for the next owner.
        waiting = self.delivery.held_count()
        # Nor dead-letters waiting for Redis: they leave once it answers, asked again every 30 s.
        while time.monotonic() < deadline and (self.delivery.buffered > waiting or self.delivery.in_flight()
                                               or self.dlq.unsettled or self._receipts_in_flight()):
            self.consumer.consume(num_messages=1, timeout=POLL_TIMEOUT_S)  # serve callbacks, fetch nothing
            self._drain_outcomes()
            self.dlq.poll(0)
            if self.receipts is not None:
                self.receipts.poll(0)
        self.delivery.stop(timeout=max(0.0, deadline - time.monotonic()))
        self._drain_outcomes()
        self.dlq.flush(max(0.5, deadline - time.monotonic()))
        self._drain_outcomes()
        self._flush_receipts(max(0.5, deadline - time.monotonic()))
        self._commit(sync=True, all_known=True)
        left = self.delivery.buffered + self.delivery.in_flight()
        if left:
            log.warning("stopped with %d events unsent; they stay uncommitted for the next owner",
                        left, extra={"count": left})

    # ------------------------------------------------------------------ records in

    def _take(self, messages: list[Any], now: float) -> None:
        """Snapshot each message (its headers read once, safely) and queue it for decoding."""
        consumed: dict[str, int] = {}
        taken_bytes = 0
        now_ms = int(time.time() * 1000)  # when these were read, for receipts: once per poll
        track, add, snapshot, topics = self.tracker.track, self.backlog.add, InboundRecord.of, self._topic_names
        tps: dict[tuple[str, int], tuple[str, int]] = {}  # one tuple per partition, not per record
        owns, release, assigned_back, strays = self.tracker.owns, self.tracker.release, self._assigned_back, 0
        moves_back = self.tracker.moves_back
        # With records dead-lettered before a restart or rebalance (the marks loaded at assignment),
        # those records end as they ended, before they are decoded (`_add_unless_ended`). Chosen
        # once a call: nothing more per record in the common case.
        if self.dlq.any_marked():
            add = self._add_unless_ended
        if self._unjudged:  # (rare: a move back while the marks paused) their partitions' records wait too
            add = partial(self._add_or_hold, add)
        for message in messages:
            error = message.error()
            if error is not None:
                self._consume_error(error)
                continue
            record = snapshot(message, now_ms, topics)
            topic = record.topic()
            tp = (topic, record.partition())
            known = tps.get(tp)
            if known is None:
                if not owns(tp):
                    # A partition revoked or lost meanwhile, its record handed back late by the
                    # client (collected in the same consume as the rebalance callback): the new
                    # owner's. Tracked here, it would be processed and its offset committed by a
                    # replica that no longer owns it, moving the owner's committed offset back.
                    strays += 1
                    continue
                known = tps[tp] = tp
                if tp not in assigned_back:  # a call after the one that assigned it back: the fetch goes on
                    release(tp)
            tp = known
            size = record.size
            taken_bytes += size
            consumed[topic] = consumed.get(topic, 0) + 1
            add(record, tp, track(tp, record.offset(), size, now))
        if strays:
            log.warning("%d records of partitions no longer assigned to this replica were handed back after their "
                        "revocation; left to their new owner", strays, extra={"count": strays})
        if self.tracker.moves_back != moves_back:
            self._drop_superseded()
            self._end_read_again(list(tps))
        taken = sum(consumed.values())
        if taken:
            self._record_bytes = max(1, (self._record_bytes + taken_bytes // taken) // 2)
        # Counted per poll, not per record: a metric lock per record is measurable at 20k/s.
        for topic, count in consumed.items():
            self.metrics.events_consumed.labels(topic).inc(count)

    def _add_unless_ended(self, record: InboundRecord, tp: tuple[str, int], epoch: int) -> None:
        """`Backlog.add`, or the end of a record read again that was dead-lettered before
        (`_ended_before`)."""
        if not self._ended_before(record, tp, epoch):
            self.backlog.add(record, tp, epoch)

    def _add_or_hold(self, add: Callable[[InboundRecord, tuple[str, int], int], None], record: InboundRecord,
                     tp: tuple[str, int], epoch: int) -> None:
        """`add`, unless the record's partition waits for its dead-letter marks (`_hold_read_again`)."""
        held = self._unjudged.get(tp)
        if held is None:
            add(record, tp, epoch)
        else:
            held.append((record, tp, epoch))

    def _end_read_again(self, tps: list[tuple[str, int]]) -> None:
        """A position moved back (rare): the records this replica dead-lettered, or gave their
        receipts, since the partition was assigned are read again, and their marks were not loaded
        at the assignment. Loaded now, and the copies this call took end as the first did, never
        sent (one record, one outcome): loaded whole, not over the next turns (`LOAD_TURN_S`), or
        those copies would go on without. While the marks cannot load (Redis failed a moment ago),
        the partitions are held from the fetch, and the copies taken wait for them undecoded."""
        self.dlq.assigned(tps, now=True)
        if self.receipts is not None:
            self.receipts.assigned(tps, now=True)  # (their receipts wait for them: `ReceiptWriter.record`)
        self._hold_unmarked(tps)
        unloaded = self.dlq.unloaded()
        self._hold_read_again({tp for tp in tps if tp in unloaded})
        if self.dlq.any_marked():
            self.backlog.end(self._ended_before)

    def _hold_read_again(self, tps: set[tuple[str, int]]) -> None:
        """The records taken of partitions whose position moved back and whose dead-letter marks
        could not be loaded: out of the backlog until they are (`_resume_marked`), then judged as
        records read again (`_ended_before`). Decoded before, one this replica dead-lettered (a 429
        storm, over by then) would be sent: one record, two outcomes. Their partitions are not
        fetched meanwhile (`_hold_unmarked`), so they are at most one consume call's."""
        for tp in tps:
            self._unjudged.setdefault(tp, []).extend(self.backlog.take({tp}))

    def _ended_before(self, record: InboundRecord, tp: tuple[str, int], epoch: int) -> bool:
        """Whether `record` was dead-lettered before (`DeadLetterQueue.read_again`); if so, it
        ends dead-lettered again here, never sent: at once when its dead-letter was acknowledged,
        else through the dead-letter topic again (a second copy beats a record with two outcomes)."""
        marks = self.dlq.marked(tp)
        before = self.dlq.read_again(record, marks) if marks else None
        if before is None:
            return False
        failure, acknowledged = before
        recipient = self._named_for_receipt(record) if self.receipts is not None else None
        if acknowledged:
            self._finish(record, tp, record.offset(), epoch, "dead_letter", recipient=recipient, failure=failure)
        else:
            self._dead_letter(record, tp, record.offset(), epoch, failure, recipient)
        return True

    def _named_for_receipt(self, record: InboundRecord) -> Recipient | None:
        """The recipient of a record ended before it is decoded (`_ended_before`), for its receipt
        only: its receipt may be the record's first (its replica killed before the first was
        acknowledged), and one keyed by its origin alone reads as a record that cannot be decoded.
        None when it cannot (or the registry does not answer now): the receipt goes without it."""
        return self.backlog.name(record)

    def _drop_superseded(self) -> None:
        """A partition's position moved back (consumer/outcomes/offsets.py): the first copies of
        the records read again leave the batches and the held events, as a revoked partition's
        do; those a sender holds already are sent, and their outcomes no longer count."""
        live = self.tracker.live
        dropped = self.delivery.drop(lambda e: not live(e.tp, e.epoch, e.offset))
        self._held = deque((at, [e for e in events if live(e.tp, e.epoch, e.offset)]) for at, events in self._held)
        if dropped:
            log.info("%d buffered events dropped: their records are read again", len(dropped),
                     extra={"count": len(dropped)})

    def _consume_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        self.metrics.kafka_errors.labels(error.name()).inc()
        if error.fatal():
            raise KafkaException(error)
        log.warning("Kafka consume error: %s", error.str())

    def _dead_letter(self, message: Any, tp: tuple[str, int], offset: int, epoch: int, failure: Failure,
                     recipient: Recipient | None = None) -> None:
        if self._log_budget.allow(failure.reason):
            log.warning("dead-lettering: %s", redact_phones(failure.message),
                        extra={"topic": tp[0], "partition": tp[1], "offset": offset, "reason": failure.reason,
                               "campaign": failure.campaign_id})

        def done() -> None:
            # The receipt after the dead-letter's acknowledgement: a receipt never names a
            # dead-letter that is not there (a record read again is not dead-lettered twice).
            self._finish(message, tp, offset, epoch, "dead_letter", recipient=recipient, failure=failure)

        self.dlq.send(message, failure, done, counts=lambda: self.tracker.live(tp, epoch, offset))

    def _count_dead_letter(self, failure: Failure) -> None:
        self.metrics.dead_letters.labels(failure.reason, code_label(failure.code)).inc()

    def _finish(self, message: Any, tp: tuple[str, int], offset: int, epoch: int, kind: str, *,
                recipient: Recipient | None = None, failure: Failure | None = None, reason: str | None = None,
                request_id: str | None = None, pisano_request_id: str | None = None, attempts: int = 0,
                decided_at_ms: int | None = None) -> None:
        """A record's final outcome (`kind`: an outcome kind, or a receipt outcome such as
        `cooldown`): with receipts, its offset finishes once its receipt is acknowledged."""
        if self.receipts is None:
            self.tracker.finish(tp, offset, epoch)
            return
        if not self.tracker.live(tp, epoch, offset):
            return  # revoked meanwhile (or read again): the copy that counts writes its receipt
        self.receipts.record(message, kind, lambda: self.tracker.finish(tp, offset, epoch), recipient=recipient,
                             failure=failure, reason=reason, request_id=request_id,
                             pisano_request_id=pisano_request_id, attempts=attempts, decided_at_ms=decided_at_ms,
                             counts=lambda: self.tracker.live(tp, epoch, offset))

    def _receipts_in_flight(self) -> int:
        return self.receipts.in_flight if self.receipts is not None else 0

    def _flush_receipts(self, timeout: float) -> None:
        if self.receipts is not None:
            self.receipts.flush(timeout)

    # ------------------------------------------------------------------ outcomes back

    def _drain_outcomes(self) -> None:
        live = self.tracker.live
        while True:
            try:
                outcome = self.outcomes.get_nowait()
            except queue.Empty:
                return
            if outcome.kind in FINISHED and self.receipts is None:
                # Nothing more to make durable: the offsets of the events still ours finish now.
                current = self.tracker.finish_events(outcome.events)
            else:
                current = [e for e in outcome.events if live(e.tp, e.epoch, e.offset)]
                if outcome.kind == "delivered" and self.receipts is not None and len(current) < len(outcome.events):
                    self._late_acceptance([e for e in outcome.events if not live(e.tp, e.epoch, e.offset)],
                                          outcome)
            if outcome.kind in FINISHED:
                if self.receipts is not None:
                    for event in current:
                        self._finish(event.message, event.tp, event.offset, event.epoch, outcome.kind,
                                     recipient=event.recipient, request_id=outcome.request_id,
                                     pisano_request_id=outcome.pisano_request_id, attempts=outcome.attempts,
                                     decided_at_ms=outcome.accepted_at_ms or None)
                if outcome.kind in FILTERED:
                    self.metrics.events_filtered.labels(outcome.kind).inc(len(current))
                elif outcome.kind == "delivered":
                    self._observe_latency(current, outcome.accepted_at_ms)
            elif outcome.kind == "requeue":
                # Back after a pause, not at once: the other attempt needs time to finish, and
                # asking again right away would spend a throttle slot on nothing.
                self._held.append((time.monotonic() + HOLD_S, current))
            else:
                assert outcome.failure is not None
                for event in current:
                    self._dead_letter(event.message, event.tp, event.offset, event.epoch, outcome.failure,
                                      recipient=event.recipient)

    def _late_acceptance(self, events: list[PendingEvent], outcome: Outcome) -> None:
        """Events Pisano accepted after their partition was revoked or lost (a request outlives
        REVOKE_GRACE_MS: a retry waiting for its throttle slot, a slow Pisano), or after its
        position moved back past them. Their offsets are the next owner's (or the copy's read
        again), which finds their ids delivered: its receipt can only say `duplicate`. Only this
        replica knows they were accepted, so their receipts are written here, committing nothing:
        the first receipt of each origin tells the truth."""
        assert self.receipts is not None
        for event in events:
            self.receipts.record(event.message, "delivered", lambda: None, recipient=event.recipient,
                                 request_id=outcome.request_id, pisano_request_id=outcome.pisano_request_id,
                                 attempts=outcome.attempts, decided_at_ms=outcome.accepted_at_ms or None)

    def _observe_latency(self, events: list[PendingEvent], accepted_at_ms: int) -> None:
        observe_ages(self.metrics.end_to_end, accepted_at_ms, map(KAFKA_TIMESTAMP, events))

    # ------------------------------------------------------------------ offsets

    def _commit(self, sync: bool = False, tps: list[tuple[str, int]] | None = None, all_known: bool = False) -> None:
        """Commit what moved. An asynchronous commit counts only once its result comes back
        (`_on_commit`): one that fails, as they do during a rebalance, is sent again next time."""
        points = self.tracker.commit_points(tps, all_known=all_known)
        if not points:
            return
        offsets = [self._stamped(t, p, o) for (t, p), o in points.items()]
        stamped = self.stamps is not None and not self.stamps.refused
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=not sync)
        except KafkaException as exc:
            log.warning("commit failed (%s); will commit again", exc)
            self._refused_stamps(exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None)
            result = None
        if sync and result:
            self._on_commit(None, result)
        if sync and stamped and self.stamps is not None and self.stamps.refused:
            # Refused for the stamp's size: made again at once without it. A revocation's commit,
            # or the last one at a stop, is not sent again: the next owner would read the
            # partition's tail again.
            self._commit(sync=True, tps=tps, all_known=all_known)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._refused_stamps(error, *(p.error for p in partitions))
        if error is not None:
            log.info("commit not accepted (%s); will commit again", error.str())
            return
        confirmed = {(p.topic, p.partition): p.offset for p in partitions if p.error is None and p.offset >= 0}
        log.debug("commit confirmed: %s", ",".join(f"{t}[{p}]@{o}" for (t, p), o in confirmed.items()))
        counted = self.tracker.committed(confirmed)
        self.dlq.committed(counted)  # the dead-letter marks below these points go
        if self.receipts is not None:  # not a confirmation from before a move back: the marks above it still count
            self.receipts.committed(counted)

    def _stamped(self, topic: str, partition: int, offset: int) -> TopicPartition:
        metadata = self.stamps.metadata((topic, partition)) if self.stamps is not None else None
        # (confluent-kafka refuses metadata=None: a TypeError)
        return TopicPartition(topic, partition, offset) if metadata is None else \
            TopicPartition(topic, partition, offset, metadata=metadata)

    def _refused_stamps(self, *errors: KafkaError | None) -> None:
        """A broker whose offset.metadata.max.bytes is below a stamp refuses the whole commit:
        the next ones go without it (consumer/state/witness.py)."""
        if self.stamps is not None and any(e is not None and e.code() == KafkaError.OFFSET_METADATA_TOO_LARGE
                                           for e in errors):
            self.stamps.refuse()

    # ------------------------------------------------------------------ group membership

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            tp = (p.topic, p.partition)
            back = tp in self._given_up  # in this consume call: it may hand back the earlier assignment's records
            self.tracker.assign(tp, held=back)
            if back:
                self._assigned_back.add(tp)
        tps = [(p.topic, p.partition) for p in partitions]
        self.dlq.assigned(tps)  # the records of these partitions dead-lettered already
        if self.receipts is not None:  # and those that have their receipt already
            self.receipts.assigned(tps)
        self.health.joined = True
        self.metrics.assigned_partitions.set(len(self.tracker.assigned()))
        if partitions:
            log.info("assigned %s", _names(partitions))
        consumer.incremental_assign(partitions)
        # Said either way: librdkafka keeps a partition's pause across an unassign and an assign, so
        # one revoked while the replica was paused, assigned back after it resumed, would never be
        # fetched again.
        if partitions:  # (stopping: nothing more is fetched, as in `_shutdown`)
            (consumer.pause if self._paused or self.health.stopping else consumer.resume)(partitions)
        self._hold_unmarked(tps)
        self._group.joined()

    def _unloaded(self) -> set[tuple[str, int]]:
        """Partitions whose dead-letter marks are not loaded (Redis failed, or a later turn loads
        them), or whose receipt marks a later turn loads (`LOAD_TURN_S`)."""
        unloaded = self.dlq.unloaded()
        return unloaded | self.receipts.deferred() if self.receipts is not None else unloaded

    def _hold_unmarked(self, tps: list[tuple[str, int]]) -> None:
        """Pause the partitions whose marks could not be loaded (Redis failed), or are loaded over
        the next poll turns (many marks at one assignment: `LOAD_TURN_S` a turn): fetched once
        they are (`_resume_marked`)."""
        unloaded = self._unloaded()
        unmarked = [TopicPartition(*tp) for tp in tps if tp in unloaded]
        if unmarked:
            self._unmarked.update(tp for tp in tps if tp in unloaded)
            self.consumer.pause(unmarked)
            if self.dlq.marks_paused():
                log.warning("dead-letter marks of %s not loaded (Redis failed); not fetched until they are",
                            _names(unmarked))
            elif self.receipts is not None and self.receipts.marks_paused():  # (a move back: `_end_read_again`)
                log.warning("receipt marks of %s not loaded (Redis failed); not fetched until they are",
                            _names(unmarked))
            else:
                log.info("marks of %s are loaded over the next poll turns (%.0fs of loading a turn); not "
                         "fetched until they are", _names(unmarked), LOAD_TURN_S)

    def _resume_marked(self) -> None:
        """Fetch the partitions whose marks are loaded now (a poll after the marks' pause, or a
        later turn's load)."""
        loaded = self._unmarked - self._unloaded()
        if not loaded:
            return
        self._unmarked -= loaded
        for tp in sorted(loaded & self._unjudged.keys()):
            self._judge_held(self._unjudged.pop(tp))
        if not self._paused and not self.health.stopping:
            self.consumer.resume([TopicPartition(*tp) for tp in sorted(loaded)])

    def _judge_held(self, records: list[tuple[InboundRecord, tuple[str, int], int]]) -> None:
        """Records held for their partition's marks (`_hold_read_again`), the marks loaded now: those
        dead-lettered before end as they ended, the others are decoded. Not those read again once
        more meanwhile (another move back): the later copies count."""
        live = self.tracker.live
        add = self._add_unless_ended if self.dlq.any_marked() else self.backlog.add
        for record, tp, epoch in records:
            if live(tp, epoch, record.offset()):
                add(record, tp, epoch)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        if not tps:
            return
        self._given_up |= tps
        dropped = self.delivery.drop(lambda e: e.tp in tps)
        self.backlog.drop(tps)
        self._held = deque((at, [e for e in events if e.tp not in tps]) for at, events in self._held)
        # Requests under way for these partitions finish (bounded) so their offsets can be committed
        # now instead of being processed again by the next owner. Once stopping (SIGTERM during
        # this wait, or close() revoking after the shutdown), only what is left of
        # SHUTDOWN_GRACE_MS: the pod's grace period is sized from it. Looked at on every pass.
        revoke_end = time.monotonic() + self.settings.revoke_grace_ms / 1000

        def left() -> float:
            return min(revoke_end, self._stop_deadline) - time.monotonic()

        while left() > 0 and self.delivery.in_flight(tps):
            self._drain_outcomes()
            self.dlq.poll(0.02)
        self._drain_outcomes()
        self.dlq.flush(max(0.0, left()))
        self._drain_outcomes()
        self._flush_receipts(max(0.0, left()))
        self._commit(sync=True, tps=list(tps), all_known=True)
        self._forget(tps)
        log.info("revoked %s (%d buffered events left for the next owner)", _names(partitions), len(dropped))
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # The group moved on without us: someone else owns these now; committing would be wrong.
        tps = {(p.topic, p.partition) for p in partitions}
        self._given_up |= tps
        self.delivery.drop(lambda e: e.tp in tps)
        self.backlog.drop(tps)
        self._held = deque((at, [e for e in events if e.tp not in tps]) for at, events in self._held)
        self._forget(tps)
        log.warning("lost %s (session timed out?); their records will be processed by the new owner",
                    _names(partitions))
        consumer.incremental_unassign(partitions)
        self.health.joined = False  # out of the group until the next assignment
        self._group.left(time.monotonic())

    def _check_membership(self, now: float) -> None:
        """Replace a Kafka consumer that has stayed outside its group longer than any rebalance
        takes while Kafka answers (consumer/ingest/membership.py). It owns no partition then:
        nothing of this loop's state belongs to it. The time counts while Kafka answers and has a
        subscribed topic: after an outage the client has the whole time of a rebalance to rejoin."""
        if self._group.inside and not self.consumer.memberid():
            # Out of the group without a lost assignment: an empty one's session timed out (librdkafka
            # calls on_lost only with partitions); the client's member id was reset.
            self._group.left(now)
            self.health.joined = False
        if not self.health.kafka_ok:
            self._group.restart(now)
            return
        if self._stop.is_set() or not self._group.overdue(now) or self.tracker.assigned():
            return  # (stopping: the shutdown closes the client; a new one would only be closed again)
        try:
            # The producer: the consumer itself may be the client that hangs.
            missing = missing_topics(self.settings.kafka_topics, self.producer.list_topics(timeout=5))
        except KafkaException:
            self._group.restart(now)  # not answering after all
            return
        if len(missing) == len(self.settings.kafka_topics):
            log.warning("not in consumer group %s for %.0fs: no such topic in Kafka: %s (KAFKA_TOPICS); the "
                        "client joins once one exists", self.settings.kafka_group_id, self._group.outside_for(now),
                        ",".join(missing))
            self._group.restart(now)
            return
        if self._closing is not None and self._closing.is_alive():
            # Each replacement after it would leave one more client (threads, connections) behind.
            log.error("not in consumer group %s for %.0fs, but the Kafka consumer replaced before has not closed "
                      "yet: not replacing another; if this repeats, restart the replica",
                      self.settings.kafka_group_id, self._group.outside_for(now))
            self._group.restart(now)
            return
        log.error("not in consumer group %s for %.0fs although Kafka answers, longer than any rebalance takes "
                  "(max.poll.interval.ms plus twice session.timeout.ms): replacing the Kafka consumer. If this "
                  "repeats, look for the group coordinator's errors in the brokers' logs",
                  self.settings.kafka_group_id, self._group.outside_for(now))
        try:
            new = self._new_consumer()
        except KafkaException as exc:
            # Where the first one was not (a TLS file unreadable mid-rotation, say): the loop goes on
            # with the old client, and tries again after another limit.
            log.error("could not create a new Kafka consumer (%s); trying again in %.0fs: check the Kafka "
                      "client's settings and files (KAFKA_CONFIG_*, TLS certificates)", exc, self._group.limit_s)
            self._group.restart(now)
            return
        self.metrics.consumer_replaced.inc()
        old, self.consumer = self.consumer, new
        self._group.joined()
        self._subscribe()  # outside from now: the new consumer has the same time to join
        # Its close() may never return (the client hung): in a thread of its own, never waited for.
        self._closing = threading.Thread(target=_close_quietly, args=(old,), name="kafka-close-replaced", daemon=True)
        self._closing.start()

    def _forget(self, tps: set[tuple[str, int]]) -> None:
        # Their dead-letters and receipts not acknowledged by now are the next owner's to write:
        # produced again here after an outage, they would be second copies.
        self.dlq.forget(tps)
        if self.receipts is not None:
            self.receipts.forget(tps)
        self._unmarked -= tps
        for tp in tps:
            self._unjudged.pop(tp, None)  # read again by the next owner
            self.tracker.revoke(tp)
            # Another replica reports these partitions now; a stale series would show false lag.
            for gauge in (self.metrics.consumer_lag, self.metrics.unfinished_records):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp[0], str(tp[1]))
        self.metrics.assigned_partitions.set(len(self.tracker.assigned()))

    # ------------------------------------------------------------------ flow control

    def _load(self) -> int:
        # Dead-letters waiting for their acknowledgement count too: with the dead-letter topic
        # down they pile up, and fetching must stop before memory runs out.
        held = sum(len(events) for _, events in self._held) + sum(map(len, self._unjudged.values()))
        return self.delivery.buffered + self.delivery.in_flight() + len(self.backlog) + held + self.dlq.in_flight \
            + self._receipts_in_flight()

    def _backpressure(self) -> None:
        load, limit = self._load(), self.settings.max_buffered_events
        held_bytes, byte_limit = self.tracker.unfinished_bytes, self.settings.max_buffered_bytes
        blocked = bool(self.backlog)  # records wait for the next turn's slice, or for the registry
        if not self._paused and (load >= limit or held_bytes >= byte_limit or blocked):
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(assignment)
            self._paused = True
            self.metrics.partitions_paused.set(1)
            if self.backlog.waiting_for_registry:
                why = "waiting for the schema registry"
            elif blocked:
                why = f"decoding a backlog of {len(self.backlog)} records"
            else:
                why = f"buffers full ({load} events, {held_bytes} bytes)"
            log.info("%s: pausing fetch, still polling", why, extra={"count": load})
        elif (self._paused and load <= limit * RESUME_AT and held_bytes <= byte_limit * RESUME_AT
              and not blocked):
            assignment = self.consumer.assignment()
            if self._unmarked:  # still waiting for their marks
                assignment = [p for p in assignment if (p.topic, p.partition) not in self._unmarked]
            if assignment:
                self.consumer.resume(assignment)
            self._paused = False
            self.metrics.partitions_paused.set(0)
            log.info("buffers drained (%d events): fetching again", load)

    def _update_gauges(self) -> None:
        self.metrics.buffered_events.set(self.delivery.buffered)
        self.metrics.buffered_bytes.set(self.tracker.unfinished_bytes)
        held = self.delivery.held_count()
        self.metrics.send_window_held_events.set(held)
        now = time.monotonic()
        # Marking the held records walks them all (~0.2 s for 100,000): only once the oldest
        # record nears the stuck limit. A record let go keeps 3/4 of STUCK_RECORD_MS at least.
        if held and self.tracker.oldest_unfinished_age(now) >= self.settings.stuck_record_ms / 1000 / 4:
            self.tracker.waiting([(e.tp, e.offset) for e in self.delivery.held_events()
                                  if self.tracker.live(e.tp, e.epoch, e.offset)], now)
        self._check_stuck(now)
        self.metrics.held_events.set(sum(len(events) for _, events in self._held))
        for tp in self.tracker.assigned():
            self.metrics.unfinished_records.labels(tp[0], str(tp[1])).set(self.tracker.unfinished(tp))
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            # Every partition with a position, committed or not: a partition whose commit point
            # has not moved (caught up, or stuck behind a record without an outcome) still has a lag.
            position = self.tracker.commit_points([tp], all_known=True).get(tp)
            if position is None:
                continue
            self.metrics.consumer_lag.labels(tp[0], str(tp[1])).set(max(0, high - position))


    def _check_stuck(self, now: float) -> None:
        """A record without an outcome for STUCK_RECORD_MS (its dead-letter refused for good, say)
        makes the replica not ready and fires the chart's alert, instead of holding its partition
        back in silence. Records held by quiet hours are not stuck (`OffsetTracker.waiting`)."""
        age = self.tracker.oldest_unfinished_age(now)
        self.metrics.oldest_unfinished_age.set(age)
        self.health.observe_oldest_record(age, self.settings.stuck_record_ms / 1000)


def _close_quietly(consumer: Any) -> None:
    try:
        consumer.close()
    except Exception as exc:  # the replaced client is of no use any more, whatever its state
        log.warning("the replaced Kafka consumer did not close cleanly (%s)", exc)


def _names(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{p.topic}[{p.partition}]" for p in partitions)
