"""Sender threads for one destination: slot, claim, POST, settle, report.

Each thread promises a slot for a due batch (`Batcher.wait_for_demand`), reserves it
(`slots.SlotReserver`; paced unless the batch is full: `pacing.Pacer`), sleeps until shortly
before it while the batch keeps filling, takes the batch, claims its event ids (`claims.Claim`),
POSTs at the slot with retries (`attempts`), settles the ids with the request's fate and reports
every event's outcome to the poll loop (`outcome.BatchReport`). Threads sleep; the poll loop never does.
From the claim to the last settlement, every wait of the batch's requests (for a slot, between
attempts, while bisection sends another part) is its heartbeat's, which keeps the claims still
held alive (`heartbeat.Heartbeat`, every quarter of DEDUP_CLAIM_LEASE_MS).

What a failure leads to is decided by the destination's classification
(`consumer.delivery.failures`):
- retriable (429, 5xx, 408, connection refused): retried with backoff, each attempt in a slot of
  its own, within the attempt and time budget; then dead-lettered;
- ambiguous (read timeout, 504): AMBIGUOUS_POLICY, by default dead-lettered as `ambiguous`;
- account scope (wrong token, locked account): the destination's circuit opens;
- recipient scope (13028 invalid parameters, ...): the batch is bisected to find the bad
  recipients, within ISOLATION_BUDGET_SHARE of the throttle budget (`isolation.bisect`);
- request scope (unknown campaign, invalid flow): the whole batch is dead-lettered; when the
  code says the campaign itself is broken (13002, 13005, 13034), the campaign's circuit opens
  and its batches are dead-lettered without a slot until a probe batch is accepted
  (`campaign_gate`, `consumer.state.campaigns`).

Any exception while a batch is processed still ends in an outcome for each of its events:
`internal_error` if no request carrying it may have left (its claim released), `ambiguous` if
one may have (its claim marked unknown).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

from consumer.delivery.admission import UNCHECKABLE, Admission, AgeScreen
from consumer.delivery.attempts import Attempts, RetryPolicy, Sent
from consumer.delivery.batching import RECIPIENT, Batch, Batcher, PendingEvent, TopicPartition
from consumer.delivery.campaign_gate import CampaignGate, campaign_verdict, open_failure
from consumer.delivery.claims import Claim, event_ids
from consumer.delivery.contacts import ContactCooldown
from consumer.delivery.destination import Destination
from consumer.delivery.heartbeat import Heartbeat, beat_period_s
from consumer.delivery.isolation import IsolationBudget, bisect
from consumer.delivery.outage import RedisOutage
from consumer.delivery.outcome import BatchReport, Outcome
from consumer.delivery.pacing import Pacer, pace_interval_ms
from consumer.delivery.pisano import build_body
from consumer.delivery.quiet_hours import QuietHours
from consumer.delivery.slots import PREPARE_LEAD_S, Slot, SlotReserver
from consumer.errors import PisanoApiError, StateStoreError
from consumer.operations.logs import redact_phones
from consumer.operations.metrics import Metrics
from consumer.operations.threads import LongLivedThread, long_lived
from consumer.outcomes.deadletter import Failure
from consumer.state.circuit import Trip
from consumer.state.dedup import DedupStore, Settlement

log = logging.getLogger(__name__)


AmbiguousPolicy = Literal["dead_letter", "assume_delivered", "resend"]
# Events held back (their id or phone claimed by a live attempt elsewhere) are counted always, and
# logged at most this often per destination: normal in a fleet, but never silent when it lasts.
HELD_LOG_INTERVAL_S = 30.0
AMBIGUOUS_MESSAGE = ("an earlier attempt for this event id may have reached Pisano (its outcome was never "
                     "recorded); check, then replay")


@dataclass(frozen=True)
class FailurePolicy:
    retry: RetryPolicy
    ambiguous: AmbiguousPolicy
    isolation_share: float


class Sender:
    def __init__(self, *, destination: Destination, batcher: Batcher, dedup: DedupStore, metrics: Metrics,
                 report: Callable[[Outcome], None], policy: FailurePolicy, threads: int,
                 throttle_horizon_s: float, claim_lease_ms: int, admission: Admission | None = None,
                 pace_share: float = 0.0, quiet_hours: QuietHours | None = None,
                 cooldown: ContactCooldown | None = None) -> None:
        self.destination = destination
        # The contact policy, screened before each claim (consumer/delivery/admission.py).
        self.admission = admission if admission else None
        # The per-phone cooldown, reserved with each claim (consumer/delivery/contacts.py).
        self.cooldown = cooldown
        self.batcher = batcher
        self.dedup = dedup
        self.metrics = metrics
        self.report = report
        self.policy = policy
        # How often a waiting request renews its claims (consumer/delivery/heartbeat.py).
        self.beat_period_s = beat_period_s(claim_lease_ms)
        self._stop = threading.Event()
        self.outage = RedisOutage(metrics, self._stop)
        self.slots = SlotReserver(destination.limiter, metrics, self._stop, self.outage, throttle_horizon_s,
                                  destination.name,
                                  destination.max_lateness_s if destination.limiter.windows else None,
                                  pace_interval_ms(destination.limiter.windows, destination.limiter.margin_ms,
                                                   pace_share) if pace_share else 0,
                                  warm=destination.client.warm)
        self.pacer = Pacer(batcher, self.slots, self._stop)
        self.dm = metrics.destination(destination.name)
        self.attempts = Attempts(destination, self.slots, policy.retry, metrics, self._stop,
                                 quiet_hours.sending_allowed if quiet_hours else None)
        # Long-lived, so watched (`long_lived`: app.py's delivery factory watches what it made).
        self._threads = [long_lived(self._run, name=f"sender-{destination.name}-{i}", role="sender")
                         for i in range(threads)]
        self._lock = threading.Lock()
        self._work: dict[int, _Work] = {}  # thread -> the batch it processes
        self._held_logged_at = -HELD_LOG_INTERVAL_S  # monotonic; racy by design: at worst a line more

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        """Stop taking work; threads finish the request they are in, up to `timeout`."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def threads(self) -> list[LongLivedThread]:
        """Its sender threads, for the liveness watch (consumer/operations/health.py)."""
        return list(self._threads)

    def in_flight(self, partitions: set[TopicPartition] | None = None) -> int:
        """Events in requests under way (only those of `partitions` when given)."""
        with self._lock:
            if partitions is None:  # the poll loop's load, asked every turn
                return sum(work.count for work in self._work.values())
            return sum(n for work in self._work.values() for tp, n in work.by_partition().items() if tp in partitions)

    # ------------------------------------------------------------------ thread body

    def _run(self) -> None:
        while not self._stop.is_set():
            promised = False
            try:
                if not self.batcher.wait_for_demand(self._stop, timeout=0.5):
                    continue
                promised = True
                if self._short_circuit() or self._campaign_short_circuit():
                    promised = False
                    continue
                # Paced unless its batch is full (consumer/delivery/pacing.py); an urgent slot is
                # counted until its batch is taken, so one full batch makes one urgent slot.
                slot, urgent = self.pacer.reserve()
                try:
                    if slot is None or self._stop.wait(max(0.0, slot.at - PREPARE_LEAD_S - time.monotonic())):
                        continue
                    promised = False
                    batch = self.batcher.take(skip=self.destination.campaigns.blocked())
                finally:
                    self.pacer.taken(urgent)
                if batch is None:
                    self.dm.throttle_wasted.inc()
                    continue
                self.process(batch, slot)
            except Exception:  # a bug here must not silently kill a sender thread
                log.exception("sender thread error; continuing")
                self._stop.wait(1.0)
            # Not BaseException, on purpose (not only KeyboardInterrupt and SystemExit, which ask
            # the process to end): one that escaped `process` (a plug-in's or a token provider's
            # own BaseException, a leaked GeneratorExit or CancelledError) left the batch's events
            # without an outcome (`_process` concludes them for an Exception only; `Claim.__exit__`
            # has settled their claims unknown or released), so their records hold their
            # partitions' commits for good: a thread that kept going would only hide a replica
            # that can no longer commit. The thread ends instead, and since `Health.watch` watches
            # it (consumer/app.py) the replica is not alive: one error line names the thread and
            # the exception, Kubernetes restarts the pod, and the records are read again.
            finally:
                if promised:  # a promise never kept would hold back a due batch for good
                    self.batcher.cancel_promise()

    def _short_circuit(self) -> bool:
        """While the circuit is open, dead-letter the due batch at once, burning no slot."""
        try:
            state, trip = self.destination.circuit.state()
        except StateStoreError as exc:
            self.batcher.cancel_promise()
            self.outage.failed("circuit", exc)
            return True
        if state == "closed":
            return False
        batch = self.batcher.take()
        if batch is not None and trip is not None:
            events = self._skip_delivered(batch.events)
            if events:
                self.report(Outcome("dead_letter", events, Failure(
                    "pisano_error", f"not sent, circuit open: Pisano answered {trip.message}", code=trip.code,
                    http_status=trip.http_status, campaign_id=batch.campaign_id, attempts=0)))
        elif batch is not None:
            self.report(Outcome("requeue", batch.events))
        return True

    def _skip_delivered(self, events: list[PendingEvent],
                        report: Callable[[Outcome], None] | None = None) -> list[PendingEvent]:
        """The events of a batch an open circuit (the token's, the campaign's) refuses, less those
        already delivered: those end `skipped` (through `report`, the sender's by default), as the
        claim would end them (`_claim`). Dead-lettered, a delivered event said `pisano_error` of a
        survey its recipient had, and asked an SRE for a replay it did not need. A peek, one round
        trip: nothing claimed, nothing sent. Redis away: the batch waits, as the claim's failure
        makes it (fail closed), rather than end without the check."""
        report = report or self.report
        if not events:
            return events
        try:
            states = self.dedup.states([e.recipient.event_id for e in events])
        except StateStoreError as exc:
            report(Outcome("requeue", events))
            self.outage.failed("claim", exc)
            return []
        self.outage.recovered()
        delivered = [e for e, state in zip(events, states, strict=True) if state == "d"]
        if delivered:
            self.metrics.duplicates_skipped.inc(len(delivered))
            report(Outcome("skipped", delivered))
        return [e for e, state in zip(events, states, strict=True) if state != "d"]

    def _campaign_short_circuit(self) -> bool:
        """If the campaign whose turn it is has an open circuit (it does not exist at Pisano, has
        no flow), or a half-open one that another batch probes, dead-letter its due batch at once
        (its replays wait for the verdict), burning no slot."""
        campaign = self.batcher.peek()
        trip = self.destination.campaigns.trip_if_refused(campaign) if campaign is not None else None
        if campaign is None or trip is None:
            return False
        batch = self.batcher.take(only=campaign)
        if batch is not None:
            self._refused_by_campaign(batch, trip, self.report)
        return True

    def _refused_by_campaign(self, batch: Batch, trip: Trip, report: Callable[[Outcome], None]) -> None:
        """A batch its campaign's open circuit refuses before any slot is reserved: dead-lettered
        with the code, except the events already delivered (skipped, `_skip_delivered`) and those
        an SRE replayed (the campaign was fixed, by the look of it): those wait for the circuit's
        probe, so a replay made within the cool-down is not dead-lettered again."""
        replays = [e for e in batch.events if _replayed(e)]
        rest = self._skip_delivered([e for e in batch.events if not _replayed(e)], report)
        if replays:
            report(Outcome("requeue", replays))
        if rest:
            report(Outcome("dead_letter", rest, open_failure(trip, batch.campaign_id)))

    # ------------------------------------------------------------------ one batch

    def process(self, batch: Batch, slot: Slot) -> None:
        """Claim, send and settle one batch: every event ends with exactly one outcome."""
        # In flight from here: a taken batch is no longer buffered, and a revoke waits only for
        # what is buffered or in flight (the campaign circuit below may be a Redis read).
        with self._tracking(batch):
            self._process(batch, slot)

    def _process(self, batch: Batch, slot: Slot) -> None:
        outcomes = BatchReport(self.report, batch.events)
        try:
            gate = CampaignGate.enter(self.destination.campaigns, batch.campaign_id)
        except Exception as exc:  # e.g. a malformed circuit hash: the batch still gets its outcomes
            log.exception("could not read the campaign's circuit; the batch is dead-lettered")
            self._conclude_open(outcomes, Claim(self.dedup, self.metrics, self._stop), batch.campaign_id, exc)
            return
        if gate.refusal is not None:  # its circuit opened, or another batch began probing, while the slot was awaited
            # Replays wait for the probe's verdict even here: dead-lettered again they would need
            # another replay. Only a race costs this slot: while a probe is under way, the turn
            # is refused before any slot (`_campaign_short_circuit`).
            self.dm.throttle_wasted.inc()
            self._refused_by_campaign(batch, gate.refusal, outcomes)
            return
        claim = self._new_claim(batch.campaign_id)
        failed: BaseException | None = None
        try:
            with claim:
                self._deliver(claim, batch, slot, outcomes, gate)
        except Exception as exc:
            failed = exc
            log.exception("error while sending a batch of campaign %s; its events are dead-lettered",
                          batch.campaign_id)
        finally:
            try:
                gate.close()
            except Exception as exc:  # never in the way of the events' outcomes below
                log.exception("could not give back the campaign's probe; it ends with its lease")
                failed = failed or exc
        self._conclude_open(outcomes, claim, batch.campaign_id, failed)

    def _new_claim(self, campaign: str) -> Claim:
        suppression = self.admission.suppression if self.admission is not None else None
        # The claims' trips before a POST read the fleet's pause too (`Claim.pause_read`).
        pause_read = self.destination.limiter.stage_pause_read if self.destination.limiter.windows else None
        if self.cooldown is None:
            return Claim(self.dedup, self.metrics, self._stop, suppression=suppression, pause_read=pause_read)
        return Claim(self.dedup, self.metrics, self._stop, cooldown=self.cooldown, suppression=suppression,
                     window_ms=self.cooldown.windows.window_ms(self.destination.name, campaign),
                     pause_read=pause_read)

    def _conclude_open(self, outcomes: BatchReport, claim: Claim, campaign: str, failed: BaseException | None) -> None:
        """The events the batch's processing left without an outcome."""
        open_events = outcomes.open_events()
        if not open_events:
            return
        if failed is None:
            if not self._stop.is_set():  # cannot happen by design; never leave an event behind
                outcomes(Outcome("requeue", claim.let_go(open_events)))
            return  # stopping: released, the records stay uncommitted and are read again
        may_have_left = {event_id for event_id, sent in claim.left_over if sent}
        unknown = [e for e in open_events if e.recipient.event_id in may_have_left]
        rest = [e for e in open_events if e.recipient.event_id not in may_have_left]
        if unknown:
            outcomes(Outcome("dead_letter", unknown, Failure("ambiguous", AMBIGUOUS_MESSAGE, campaign_id=campaign,
                                                             attempt_id=claim.tag)))
        if rest:
            message = f"not sent: internal error ({type(failed).__name__}); report it, then replay"
            outcomes(Outcome("dead_letter", rest, Failure("internal_error", message, campaign_id=campaign)))

    @contextmanager
    def _tracking(self, batch: Batch) -> Iterator[_Work]:
        ident = threading.get_ident()
        with self._lock:
            work = self._work[ident] = _Work(batch.events)
        try:
            yield work
        finally:
            with self._lock:
                self._work.pop(ident, None)

    def _deliver(self, claim: Claim, batch: Batch, slot: Slot, outcomes: BatchReport, gate: CampaignGate) -> None:
        events, ids = self._claim(claim, batch, outcomes)
        if not events:
            return
        campaign = batch.campaign_id
        body = build_body(list(map(RECIPIENT, events)))
        self.metrics.batch_size.observe(len(events))
        self.metrics.batch_age.observe(batch.age(time.monotonic()))
        # Every claim of the batch still held, renewed while any of its requests waits.
        beats = Heartbeat(self._stop, lambda: claim.beat(events), self.beat_period_s, since=claim.claimed_at)
        claim.beat_while_recording(beats.wait)  # a settlement retried through an outage beats too
        # The claims were just taken for this slot; if preparing overran it (a slow Redis, a busy
        # CPU), `SlotReserver.ready` takes a new slot and renews them in its lead time.
        sent = self.attempts.send(campaign, body, slot=slot, fresh=claim.claimed_at,
                                  renew=lambda: self._renew(claim, events, events, beats),
                                  sending=lambda: claim.sending(events, ids),
                                  unsent=lambda: claim.unsent(events, ids), disarm=lambda: claim.disarm(events),
                                  events=events, heartbeat=beats,
                                  screen=self._age_screen(claim, events, ids, body, outcomes))
        self._conclude(claim, campaign, events, sent, outcomes, gate, first=True, ids=ids, beats=beats)

    def _age_screen(self, claim: Claim, events: list[PendingEvent], ids: list[str] | None, body: bytes,
                    outcomes: BatchReport) -> Callable[[float], bytes | None] | None:
        """The request's events weighed for their age before each POST (`admission.AgeScreen`;
        `events` and `ids` lose the refused ones in place): the refused end as at admission,
        unsent, their claims released first, so they are never remembered as delivered."""
        if self.admission is None or not self.admission.weighs_age():
            return None
        screen = AgeScreen(self.admission, events, ids)
        current: list[bytes | None] = [body]

        def weigh(within_s: float) -> bytes | None:
            ended = screen.weigh(within_s)
            if ended:
                claim.settle(Settlement.RELEASED, [e for outcome in ended for e in outcome.events])
                for outcome in ended:
                    outcomes(outcome)
                current[0] = build_body(list(map(RECIPIENT, events))) if events else None
            return current[0]
        return weigh

    def _claim(self, claim: Claim, batch: Batch, outcomes: BatchReport) -> tuple[list[PendingEvent], list[str]]:
        """Claim the batch's ids; report skipped, held and unknown ones; top up once if room.
        Returns the events claimed and their ids, in order."""
        candidates = batch.events
        claimed: list[PendingEvent] = []
        claimed_ids: list[str] = []
        for round_ in range(2):
            if self.admission is not None:
                candidates = self.admission.screen(candidates, outcomes)
                if not candidates:
                    break
            try:
                answer = claim.claim(candidates)  # with the opt-out lookup and the phones: one round trip
            except StateStoreError as exc:  # fail closed: nothing is sent
                outcomes(Outcome("requeue", claim.let_go(candidates)))
                self.outage.failed("claim", exc)
                break
            self.outage.recovered()
            claimed += answer.claimed
            claimed_ids += answer.claimed_ids
            if answer.suppressed:
                log.info("%d events not sent: on the opt-out list", len(answer.suppressed),
                         extra={"count": len(answer.suppressed)})
                outcomes(Outcome("suppressed", answer.suppressed))
            if answer.unlisted:
                outcomes(Outcome("dead_letter", answer.unlisted, Failure(
                    "invalid_event", UNCHECKABLE, campaign_id=batch.campaign_id)))
            if answer.delivered:
                self.metrics.duplicates_skipped.inc(len(answer.delivered))
                outcomes(Outcome("skipped", answer.delivered))
            if answer.held:
                self._held_back(answer.held, "their event ids are claimed by another attempt (a request in flight "
                                "elsewhere, or one a stopped replica left: after its lease, DEDUP_CLAIM_LEASE_MS, it "
                                "ends as ambiguous if a request may have left under it, else it is free)")
                outcomes(Outcome("requeue", claim.let_go(answer.held)))
            if answer.cooling:
                log.info("%d events not sent: phone contacted within its cooldown", len(answer.cooling),
                         extra={"count": len(answer.cooling), "campaign": batch.campaign_id})
                outcomes(Outcome("cooldown", answer.cooling))
            if answer.phone_held:  # another attempt has the phone now: its fate decides, later
                self._held_back(answer.phone_held, "their phones are reserved by another attempt (contact cooldown)")
                outcomes(Outcome("requeue", claim.let_go(answer.phone_held)))
            if answer.uncheckable:
                outcomes(Outcome("dead_letter", answer.uncheckable, Failure(
                    "invalid_event", UNCHECKABLE, campaign_id=batch.campaign_id)))
            for attempt, unknown in _by_attempt(answer.unknown, answer.unknown_attempts).items():
                outcomes(Outcome("dead_letter", unknown, Failure("ambiguous", AMBIGUOUS_MESSAGE,
                                                                 campaign_id=batch.campaign_id, attempt_id=attempt)))
            room = self.destination.max_recipients - len(claimed)
            # (Events the opt-out list refused free no room: they were screened out before the claim.)
            screened = len(candidates) - len(answer.suppressed) - len(answer.unlisted)
            if round_ or room <= 0 or len(answer.claimed) == screened:
                break
            # Skipped ids freed room in a request whose slot is already paid for.
            candidates = self.batcher.top_up(Batch(batch.campaign_id, claimed), room)
            if not candidates:
                break
            outcomes.add(candidates)
            with self._lock:
                self._work[threading.get_ident()].add(candidates)
            batch.events = claimed + candidates
        return claimed, claimed_ids

    def _held_back(self, events: list[PendingEvent], why: str) -> None:
        self.metrics.events_held.inc(len(events))
        now = time.monotonic()
        if now - self._held_logged_at >= HELD_LOG_INTERVAL_S:
            self._held_logged_at = now
            log.info("%d events held back, to be tried again in a few seconds: %s (events_held_total counts "
                     "them all; this line comes at most every %.0fs)", len(events), why, HELD_LOG_INTERVAL_S,
                     extra={"count": len(events), "destination": self.destination.name})

    def _conclude(self, claim: Claim, campaign: str, events: list[PendingEvent], sent: Sent,
                  outcomes: BatchReport, gate: CampaignGate, *, first: bool,
                  ids: list[str] | None = None, beats: Heartbeat | None = None) -> Sent | bool | None:
        """Settle and report a request's events by its fate. Returns what bisection needs: True
        accepted, the answer when refused for a recipient (not settled yet), None otherwise.
        `ids`: the events' ids in order, when known (read once per request). `beats`: the batch's
        heartbeat, for the requests bisection sends (`first` only)."""
        try:
            gate.judge(sent)
        except Exception:  # the campaign's bookkeeping never decides what became of the request
            log.exception("could not record the campaign's verdict; the request's outcome stands")
        if sent.abandoned:  # stopping: free again, the records stay uncommitted
            claim.settle(Settlement.RELEASED, events)
            return None
        if sent.emptied:  # every event grew too old while it waited: each ended, its claim released
            return None
        if sent.claim_lost or sent.held_by_window:  # decided again later (from Redis's state; at the opening)
            claim.settle(Settlement.RELEASED, events)
            outcomes(Outcome("requeue", claim.let_go(events)))
            return None
        if sent.accepted is not None:
            self._delivered(claim, campaign, events, sent, outcomes, ids)
            return True
        assert sent.error is not None and sent.verdict is not None
        if sent.verdict.scope == "account" and sent.verdict.action == "dead_letter":
            self._open_circuit(sent)
        if sent.refused_for_a_recipient and len(events) > 1:
            # Refused whole, so nothing reached Pisano: while bisection sends the parts one at a
            # time (each in a slot of its own: minutes), those waiting their turn are pending, as
            # a retry's are, and each part's renewal arms its own claims only (`_renew`). Left
            # armed, a replica killed meanwhile left every one of them to lapse into "fate
            # unknown", dead-lettered `ambiguous` though never sent. A disarm in doubt may land
            # under a later part's POST: then no part goes under these claims (`Claim.disarm`).
            if not claim.disarm(events):
                claim.settle(Settlement.RELEASED, events)
                outcomes(Outcome("requeue", claim.let_go(events)))
                return None
            if first:
                self._isolate(claim, campaign, events, sent, outcomes, gate, beats or Heartbeat(self._stop))
                return None
            return sent
        self._failed(claim, campaign, events, sent, outcomes)
        return None

    def _delivered(self, claim: Claim, campaign: str, events: list[PendingEvent], sent: Sent,
                   outcomes: BatchReport, ids: list[str] | None = None) -> None:
        assert sent.accepted is not None
        claim.settle(Settlement.DELIVERED, events, ids)
        self.dm.recipients_delivered.inc(len(events))
        log.info("delivered %d recipients", len(events),
                 extra={"campaign": campaign, "request_id": sent.request_id, "count": len(events),
                        "pisano_request_id": sent.accepted.request_id,
                        "attempt": sent.attempts, "destination": self.destination.name})
        outcomes(Outcome("delivered", events, accepted_at_ms=int(time.time() * 1000), request_id=sent.request_id,
                         pisano_request_id=sent.accepted.request_id, attempts=sent.attempts))

    def _failed(self, claim: Claim, campaign: str, events: list[PendingEvent], sent: Sent,
                outcomes: BatchReport, note: str = "") -> None:
        """A final failure of a request: settle the ids as its fate demands, dead-letter."""
        assert sent.error is not None and sent.verdict is not None
        reason = sent.verdict.reason
        if sent.verdict.action == "ambiguous":
            if self.policy.ambiguous == "assume_delivered":
                log.warning("request fate unknown (%s); AMBIGUOUS_POLICY=assume_delivered: counting %d as delivered",
                            redact_phones(str(sent.error)), len(events), extra={"campaign": campaign})
                claim.settle(Settlement.DELIVERED, events)
                outcomes(Outcome("delivered", events, accepted_at_ms=int(time.time() * 1000),
                                 request_id=sent.request_id, attempts=sent.attempts))
                return
            if self.policy.ambiguous == "resend":
                # At-least-once by choice: the ids are freed and the events go round again.
                claim.settle(Settlement.RELEASED, events)
                outcomes(Outcome("requeue", claim.let_go(events)))
                return
            claim.settle(Settlement.UNKNOWN, events)
        else:
            claim.settle(Settlement.RELEASED, events)
            if sent.verdict.action == "retry" and reason == "pisano_error":
                # Retriable answers (5xx, 408) until the attempts or the time budget ran out. A 429
                # keeps `throttled`, no answer at all keeps `transport_error`.
                reason = "retries_exhausted"
        failure = _failure(reason, sent, campaign, note,
                           attempt_id=claim.tag if sent.verdict.action == "ambiguous" else None)
        log.warning("request failed: %s; dead-lettering %d events", redact_phones(failure.message), len(events),
                    extra={"campaign": campaign, "status": failure.http_status, "code": failure.code,
                           "reason": reason, "count": len(events), "attempt": sent.attempts,
                           "destination": self.destination.name})
        outcomes(Outcome("dead_letter", events, failure))

    def _isolate(self, claim: Claim, campaign: str, events: list[PendingEvent], first: Sent,
                 outcomes: BatchReport, gate: CampaignGate, beats: Heartbeat) -> None:
        """Drive the bisection (`isolation.bisect`) that finds the recipients Pisano refused."""
        budget = IsolationBudget.for_windows(self.destination.limiter.windows, self.policy.isolation_share)
        steps = bisect(events, first, budget)
        requests = 0
        reply: Sent | bool | None = None
        # Set once a group's refusal opened the token's or the campaign's circuit: every later group
        # would hear the same, each in a throttle slot (failures.py: none is spent while it is open).
        halted: Failure | None = None
        try:
            step = next(steps)
            while True:
                reply = None
                if step.kind == "send" and halted is not None:
                    claim.settle(Settlement.RELEASED, step.group)  # not sent again: free for a replay
                    # The last request that carried them is the refusal that put them there.
                    outcomes(Outcome("dead_letter", step.group, replace(
                        halted, attempts=step.because.attempts, request_id=step.because.request_id)))
                elif step.kind == "send":
                    requests += 1
                    sent = self._send_group(claim, campaign, step.group, events, beats, outcomes)
                    reply = self._conclude(claim, campaign, step.group, sent, outcomes, gate, first=False)
                    halted = _halting(sent, campaign)
                elif step.kind == "alone":
                    self._failed(claim, campaign, step.group, step.because, outcomes)
                else:
                    claim.settle(Settlement.RELEASED, step.group)
                    outcomes(Outcome("dead_letter", step.group, _failure(
                        "pisano_error", step.because, campaign, " (not isolated: ISOLATION_BUDGET_SHARE spent)")))
                step = steps.send(reply)
        except StopIteration:
            pass
        log.info("isolated the recipients Pisano refused in %d extra requests", requests,
                 extra={"campaign": campaign, "count": len(events), "destination": self.destination.name})

    def _send_group(self, claim: Claim, campaign: str, group: list[PendingEvent], batch: list[PendingEvent],
                    beats: Heartbeat, outcomes: BatchReport) -> Sent:
        # `group` is bisection's own list: the events the age screen refuses leave it in place, so
        # a group refused again is split without them.
        body = build_body(list(map(RECIPIENT, group)))
        return self.attempts.send(campaign, body, slot=None,
                                  renew=lambda: self._renew(claim, group, batch, beats),
                                  sending=lambda: claim.sending(group), disarm=lambda: claim.disarm(group),
                                  events=group, heartbeat=beats,
                                  screen=self._age_screen(claim, group, None, body, outcomes))

    @staticmethod
    def _renew(claim: Claim, request: list[PendingEvent], batch: list[PendingEvent], beats: Heartbeat) -> bool:
        """The renewal before a POST (`SlotReserver.ready`, the gate): the request's claims, armed,
        and every other claim the batch still holds, kept as they are (the parts bisection has yet to
        send stay pending: `_conclude`), so it counts as the heartbeat's beat. The request's
        alone would leave the groups bisection sends later to the beats, which a request delays by
        its whole duration past their due time: a period plus a request without a renewal, longer
        than a lease near its floor (one request + the margin). So while its requests go, no claim
        of the batch goes longer than one request without a renewal (Settings.claim_lease_ms).
        False: do not send. A claim found lost ends the batch's later requests too, as a beat
        that found it would (`Heartbeat.found_lost`): they would reserve a slot each only to be
        refused at their gate. Redis not answering is no loss: each later request tries its own."""
        ids = set(event_ids(request)) if request is not batch else set()
        others = [e for e in claim.still_held(batch) if e.recipient.event_id not in ids] if ids else []
        renewed = claim.renew(request, keep=others)  # the others as they are: pending parts stay so
        if renewed:
            beats.renewed()
        elif renewed is False:
            beats.found_lost()
        return bool(renewed)

    def _open_circuit(self, sent: Sent) -> None:
        """Open the token's circuit for the fleet. Not a reopening: the fleet's other requests in
        flight when the first refusal opened it (other threads, other replicas, each reading the
        state at most once a second) hear the same answer, and each doubled the cool-down, up to
        CIRCUIT_MAX_COOLDOWN_MS after a token fixed at once. Only a failed probe reopens
        (`CircuitBreaker.probe_if_due`)."""
        api = sent.error if isinstance(sent.error, PisanoApiError) else None
        try:
            self.destination.circuit.open(Trip(api.code if api else None, api.http_status if api else None,
                                               str(sent.error)), reopen=False)
        except StateStoreError as exc:
            self.metrics.redis_errors.labels("circuit").inc()
            log.error("could not open the circuit in Redis: %s", exc)
        self.dm.circuit_state.set(1)


class _Work:
    """The events of the batch a sender thread processes, from its take to its last outcome (its
    top-ups too), for `Sender.in_flight`. Their count is kept; their count per partition, wanted
    only while a revoke waits for them, is made when first asked: not a pass over every batch's
    events for a figure rarely read. Guarded by the sender's lock."""

    __slots__ = ("_by_partition", "count", "events")

    def __init__(self, events: list[PendingEvent]) -> None:
        self.events = [list(events)]  # copies (of references): `_claim` rebinds the batch's list
        self.count = len(events)
        self._by_partition: Tally[TopicPartition] | None = None

    def add(self, events: list[PendingEvent]) -> None:
        self.events.append(list(events))
        self.count += len(events)
        if self._by_partition is not None:
            self._by_partition.update(e.tp for e in events)

    def by_partition(self) -> Tally[TopicPartition]:
        if self._by_partition is None:
            self._by_partition = Tally(e.tp for events in self.events for e in events)
        return self._by_partition


def _by_attempt(events: list[PendingEvent], attempts: list[str]) -> dict[str, list[PendingEvent]]:
    """Events of unknown fate grouped by the attempt whose mark they found: one dead-letter
    failure (one dlq.attempt.id) per attempt."""
    groups: dict[str, list[PendingEvent]] = {}
    for event, attempt in zip(events, attempts, strict=True):
        groups.setdefault(attempt, []).append(event)
    return groups


def _halting(sent: Sent, campaign: str) -> Failure | None:
    """The dead-letter of a bisection's groups not sent again after this answer: refused for the
    token (its circuit opened) or for the campaign itself (`CAMPAIGN_CODES`), as the batches the
    open circuit refuses before any slot are (`Sender._short_circuit`, `campaign_gate.open_failure`).
    None: the search goes on."""
    api = sent.error if isinstance(sent.error, PisanoApiError) else None
    if api is None or sent.verdict is None or sent.verdict.action != "dead_letter":
        return None
    trip = campaign_verdict(sent)
    if isinstance(trip, Trip):
        return open_failure(trip, campaign)
    if sent.verdict.scope == "account":
        return Failure("pisano_error", f"not sent again, circuit open: Pisano answered {api.message}", code=api.code,
                       http_status=api.http_status, campaign_id=campaign, attempts=0)
    return None


def _failure(reason: str, sent: Sent, campaign: str, note: str = "", attempt_id: str | None = None) -> Failure:
    api = sent.error if isinstance(sent.error, PisanoApiError) else None
    return Failure(
        reason=reason,
        message=(api.message if api else getattr(sent.error, "message", str(sent.error))) + note,
        code=api.code if api else None,
        http_status=api.http_status if api else None,
        campaign_id=campaign,
        attempts=sent.attempts,
        attempt_id=attempt_id,
        request_id=sent.request_id,
    )


def _replayed(event: PendingEvent) -> bool:
    """A record `pisano-sms replay` published and signed (consumer/sre/replay_signature.py)."""
    return event.replay_of is not None or getattr(event.message, "replays", 0) > 0
