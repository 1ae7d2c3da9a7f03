"""A batch's claim on its event ids, as a context manager (ARCHITECTURE.md invariants 1 and 2).

Inside the `with`: claim the ids, renew the claims before every retry, mark which ids are in a
request that may have left (`sending`), settle them with the request's fate. On exit, whatever
way the block ends, every id still claimed is settled: released when no request carrying it
may have left (it may be sent again), unknown when one may have (never resent on its own). So
no exception can leave a claim behind to block its event for the whole lease.

With the contact cooldown on, the claim also drives the batch's phone reservations
(`contacts.PhoneReservation`, same tag), and with the opt-out list on, its lookup: the list is
asked, the ids claimed and the phones reserved in one round trip (`claim`); every renewal,
settlement and the exit path do for a phone what they do for its id.

What a claim gives up without knowing it is gone from Redis (a claim whose reply was lost and
whose release failed too, as when a cluster master dies mid-trip; a release given up after its
retries) would hold its events back for the whole lease, then end them as `ambiguous` though they
were never sent. So the claim remembers it, never asks for it again, and tags the events it sends
round again (`let_go`): their next claim takes it over (lua/claim.lua, lua/reserve_phones.lua).

A renewal, a disarm or a beat takes nothing anew (the scripts' renewal mode: consumer/state/
arming.py): one whose reply was lost is not cancelled and may land after the release, and then
finds the ids free and answers lost, writing nothing. So it leaves no claim for anyone to wait
for, and an id it finds free (its claim gone: released, or lost with Redis's data) is never sent
under it: the request ends as for any claim lost (`claim_lost`), its next attempt claims afresh.
A batch's first claim must take free ids, so one whose reply was lost (asked again, or released
when Redis stays away) may still land after their release and take them again. So those ids and
phones (`_doubtful`) are released with a tombstone naming the attempt (lua/settle.lua,
lua/settle_phones.lua): the late call finds it and takes nothing, and any other attempt ignores it,
so another replica's copy of the event is sent at once instead of being held back a lease and
then dead-lettered `ambiguous`. They also count as given up once released, and their next attempt
takes over whatever a late call may still leave (a tombstone lost in a failover).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from types import TracebackType
from typing import Any

from consumer.delivery.backoff import REDIS_BACKOFF
from consumer.delivery.batching import ABANDONED_BY, EVENT_ID, REPLAY_OF, PendingEvent
from consumer.delivery.contacts import Asked, ContactCooldown, PhoneReservation
from consumer.errors import StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.arming import Arming
from consumer.state.cooldown import PhoneFate, PhoneStatus
from consumer.state.dedup import ClaimRequests, ClaimStatus, ClaimStatuses, DedupStore, Settlement
from consumer.state.suppression import Suppression
from consumer.state.trip import Step, together

log = logging.getLogger(__name__)

# A phone's fate follows its id's.
PHONE_FATES = {Settlement.DELIVERED: PhoneFate.ACCEPTED, Settlement.UNKNOWN: PhoneFate.UNKNOWN,
               Settlement.RELEASED: PhoneFate.RELEASED}
RENEW_TRIES = 5
CLAIM_TRIES = 3  # a lost reply is asked again under the same tag; then Redis counts as away
SETTLE_TRIES = 15  # about a minute of Redis outage: an outcome must be recorded if at all possible
# The attempts an event remembers having given it up (`PendingEvent.abandoned_by`). Only a failure
# adds one (a lost reply and a failed release), so more is an outage that outlived that many tries
# of this very event. A trip lands in part at the edges of an outage (a master lost mid-trip, one
# back before the others), not while every master refuses: so the first ABANDONED_FIRST are kept,
# and the newest; one dropped between them leaves its claim, if any, to end with its lease.
ABANDONED_LIMIT = 32
ABANDONED_FIRST = 8


@dataclass
class Claimed:
    """The answer to one claim, event by event."""

    claimed: list[PendingEvent] = field(default_factory=list)
    claimed_ids: list[str] = field(default_factory=list)  # their ids, in order: read once per request
    delivered: list[PendingEvent] = field(default_factory=list)
    held: list[PendingEvent] = field(default_factory=list)
    unknown: list[PendingEvent] = field(default_factory=list)
    # The attempt whose unknown mark each unknown event found: its dead-letter's dlq.attempt.id.
    unknown_attempts: list[str] = field(default_factory=list)
    # Claimed ids the contact cooldown refused (their claims released): phone contacted within the
    # cooldown; phone reserved by a live attempt elsewhere; phone not readable into E.164.
    cooling: list[PendingEvent] = field(default_factory=list)
    phone_held: list[PendingEvent] = field(default_factory=list)
    uncheckable: list[PendingEvent] = field(default_factory=list)
    # Events the opt-out list refused (their claims released, never sent): on the list; phone that
    # cannot be looked up (dead-lettered as invalid_event, like `uncheckable`).
    suppressed: list[PendingEvent] = field(default_factory=list)
    unlisted: list[PendingEvent] = field(default_factory=list)

    def add(self, event: PendingEvent, status: ClaimStatus, attempt: str = "") -> None:
        if status is ClaimStatus.CLAIMED:
            self.claimed.append(event)
        elif status is ClaimStatus.DELIVERED:
            self.delivered.append(event)
        elif status is ClaimStatus.HELD:
            self.held.append(event)
        else:
            self.unknown.append(event)
            self.unknown_attempts.append(attempt)


class Claim:
    def __init__(self, dedup: DedupStore, metrics: Metrics, stop: threading.Event, *,
                 cooldown: ContactCooldown | None = None, window_ms: int = 0,
                 suppression: Suppression | None = None,
                 pause_read: Callable[[], Step[Any]] | None = None) -> None:
        self.dedup = dedup
        # The fleet's pause read with the claims' trips that come right before a POST (the first
        # claim, a renewal that arms them): the last round trip before it, so a pause another
        # replica set since this one's last limiter reply is known before the POST leaves into it,
        # for no round trip of its own (`Limiter.stage_pause_read`; None: no throttle to ask).
        self.pause_read = pause_read
        # The opt-out list, looked up in the claim's round trip (README "The opt-out list").
        self.suppression = suppression
        self.metrics = metrics
        self.stop = stop
        self.tag = dedup.new_tag()
        # The batch's phone reservations, when its campaign has a cooldown.
        self.phones = PhoneReservation(cooldown, window_ms, self.tag, metrics, stop) \
            if cooldown is not None and window_ms > 0 else None
        # When the batch's first claim was asked (monotonic): a lease runs from there, however
        # long the rest of the preparation took.
        self.claimed_at: float | None = None
        self._held: dict[str, bool] = {}  # claimed event id -> a request carrying it may have left
        # Claimed ids of signed replays -> the attempt each replays: the scope of their claims, which
        # no other event may take over (`let_go`). Empty for every batch without a replay. (What a
        # release puts back is recorded in the claim itself: consumer/state/lua/claim.lua.)
        self._replays: dict[str, str] = {}
        # Settled on exit, for the sender to report: (events, whether a request may have left).
        self.left_over: list[tuple[str, bool]] = []
        # Ids this attempt gave up while its claim of them may still be in Redis, or tagged events
        # with (`let_go`): never claimed again by it, so a later attempt may take them over.
        self._given_up: set[str] = set()
        # Ids this attempt asked to release: never claimed again by it. A release whose reply was
        # lost is asked again, and the call may still land later than anything after it: under a
        # new claim of the same id and tag (a top-up taking another record of the id), it would
        # remove that claim while its request is on the wire, and another replica could send it.
        self._released: set[str] = set()
        # Ids a first claim's trip may have claimed though its reply was lost (`_ask`): the call is
        # not cancelled, and it may land after their release and take them again under this tag
        # (a first claim takes free ids: it cannot run in the renewal mode). Once released they
        # count as given up, so their next attempt takes over what the late call may leave
        # instead of waiting out the lease and then dead-lettering them `ambiguous`, never sent.
        # Their release leaves a tombstone the late call finds (`_settle_steps`), for the copies
        # other replicas read.
        self._doubtful: set[str] = set()
        # The batch's heartbeat wait once its requests go (`beat_while_recording`), and the ids whose
        # outcome is being recorded meanwhile: a beat leaves them out (renewing an id whose
        # delivered mark landed on some masters would find it "lost").
        self._wait: Callable[[float], bool] | None = None
        self._recording: set[str] = set()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.phones is not None:
            try:
                self.phones.left_over({i for i, sent in self._held.items() if sent})
            except Exception:  # never mask the error; a reservation left behind expires into a contact
                log.exception("could not settle left-over phone reservations")
        if not self._held:
            return
        self.left_over = list(self._held.items())
        unknown = [i for i, sent in self.left_over if sent]
        released = [i for i, sent in self.left_over if not sent]
        if error is not None:
            log.error("batch processing failed after claiming (%s); settling %d claims: %d unknown, %d released",
                      type(error).__name__, len(self.left_over), len(unknown), len(released))
        self._held.clear()
        try:
            self._settle_ids(Settlement.UNKNOWN, unknown)
            self._settle_ids(Settlement.RELEASED, released)
        except Exception:  # never mask the error that brought us here; the lease bounds the claims
            log.exception("could not settle %d left-over claims; they expire with their lease", len(self.left_over))

    def claim(self, events: Sequence[PendingEvent]) -> Claimed:
        """Look the events up in the opt-out list, claim their ids and reserve their phones, in one
        round trip (one pipelined packet per master: consumer/state/trip.py); StateStoreError if
        Redis stays away. The claims are armed (consumer/state/arming.py): the first POST may
        follow them without a renewal, `claimed_at` counting as fresh.

        The three answers come together, so the claim and the reservation are optimistic: each
        event's id is claimed even if the list has it, each phone reserved even if its id turns out
        delivered, held or of unknown fate. What the event does not use is released afterwards
        (one more round trip, only when there is such an event), so the outcomes are the ones the
        steps taken in turn would give: suppressed before skipped, skipped or ambiguous before
        cooldown. Signed replays of ambiguous dead-letters are the exception: with the opt-out list
        on, they are claimed only once it has answered (a second round trip, for them alone), so that
        a replay the list refuses never overrides the unknown mark at all.

        A lost reply (a timeout, a failover) leaves the ids maybe claimed under this tag. Claims
        and reservations are idempotent per tag, so the trip is asked again under the same tag: its
        answer says what is really ours. Parked instead, with a release that may fail as well, the
        ids would stay claimed for the whole lease and then end as ambiguous without ever being
        sent, each round wasting a throttle slot. Only if Redis stays away is what the scripts may
        have claimed or reserved released, and the error raised."""
        if self.claimed_at is None:
            self.claimed_at = time.monotonic()
        answer = Claimed()
        if self._given_up or self._released:  # ours maybe, promised to a later attempt (`let_go`), or released
            gone = self._given_up | self._released
            answer.held += [e for e in events if e.recipient.event_id in gone]
            events = [e for e in events if e.recipient.event_id not in gone]
        if self.suppression is None:
            self._trip(answer, [], list(events))
            return answer
        first = [e for e in events if not e.replay_of]
        replays = [e for e in events if e.replay_of]
        refused = self._trip(answer, list(events), first)
        replays = [e for e in replays if e.recipient.event_id not in refused]
        if replays:
            try:
                self._trip(answer, [], replays)
            except StateStoreError:  # the first trip's events go round again with the rest: let them go
                claimed = answer.claimed_ids
                for event_id in claimed:
                    self._held.pop(event_id, None)
                self._release_or_give_up(claimed, self.phones.keys_of(claimed) if self.phones is not None else [])
                raise
        return answer

    def _trip(self, answer: Claimed, screen: list[PendingEvent], claim: list[PendingEvent]) -> set[str]:
        """One round trip: the opt-out lookup of `screen`, the claim of `claim` and their phones.
        Adds what it learnt to `answer`; returns the ids the opt-out list refused."""
        lookup = self.suppression.lookup([e.recipient for e in screen]) \
            if self.suppression is not None and screen else None
        asked = self.phones.ask(claim) if self.phones is not None and claim else None
        ids = event_ids(claim)  # once for the claim, the release after a lost reply and `_held`
        requests = _requests(claim, ids)
        if requests.replays is not None or self._replays:
            # The latest claim of an id decides its scope: a plain claim after a replay's has none.
            for i, r in zip(ids, requests.replays or repeat(None), strict=False):
                if r:
                    self._replays[i] = r
                else:
                    self._replays.pop(i, None)
        steps: list[Step[Any]] = [self.dedup.stage_claim(self.tag, requests, Arming.ARM)]
        if lookup is not None:
            assert self.suppression is not None
            steps.append(self.suppression.stage(lookup))
        if asked is not None:
            assert self.phones is not None
            steps.append(self.phones.step(asked, Arming.ARM))
        phones_answer = len(steps) - 1
        if self.pause_read is not None:
            steps.append(self.pause_read())
        answers = self._ask(steps, ids, [r.key for r in asked.requests] if asked else [], claim)
        statuses: ClaimStatuses = answers[0]
        refused: set[str] = set()
        if lookup is not None:
            for event, listed in zip(screen, answers[1], strict=True):
                if listed is None:
                    answer.unlisted.append(event)
                elif listed:
                    answer.suppressed.append(event)
                else:
                    continue
                refused.add(event.recipient.event_id)
        release: list[str] = []
        claimed: list[PendingEvent] = []
        whole = not refused and len(statuses) == len(claim) and statuses.count(ClaimStatus.CLAIMED) == len(claim)
        if whole:
            claimed = list(claim)  # the common answer, taken whole: this runs for every event of every request
        else:
            for event, status, attempt in zip(claim, statuses, statuses.attempts, strict=True):
                if event.recipient.event_id in refused:
                    if status is ClaimStatus.CLAIMED:
                        release.append(event.recipient.event_id)
                elif status is ClaimStatus.CLAIMED:
                    claimed.append(event)
                else:
                    answer.add(event, status, attempt)
        unused: list[str] = []
        if asked is not None:
            assert self.phones is not None
            phones, unused = self.phones.take(asked, answers[phones_answer], claimed)
            refusals = phones.cooling + phones.held + phones.uncheckable
            release += [e.recipient.event_id for e in refusals]
            whole = whole and len(phones.reserved) == len(claimed)
            claimed = phones.reserved
            answer.cooling += phones.cooling
            answer.phone_held += phones.held
            answer.uncheckable += phones.uncheckable
        # Every id of the trip when all were claimed (the ids are in `claim`'s order then).
        claimed_ids = ids if whole else event_ids(claimed)
        answer.claimed += claimed
        answer.claimed_ids += claimed_ids
        self._held.update(dict.fromkeys(claimed_ids, False))
        if self._doubtful or (self.phones is not None and self.phones.doubtful):
            self._bury_unclaimed(ids, claimed_ids, release, unused, asked)
        self._release(release, unused)
        return refused

    def _bury_unclaimed(self, ids: list[str], claimed_ids: list[str], release: list[str], unused: list[str],
                        asked: Asked | None) -> None:
        """A try of this trip got no reply and may still land after this answer, whatever it was. The
        ids and phones it did not give this attempt (held by another, delivered, refused...) join
        the release (`release`, `unused`), which leaves a tombstone for each (`_settle_steps`) and
        takes nothing else: else, once their holder let go, the late try would take them under an
        attempt that never sends. (A phone another attempt holds stays that attempt's, carrying
        the tombstone, which its release puts back: lua/settle_phones.lua.)"""
        if self._doubtful:
            taken = set(claimed_ids).union(release)
            release += [i for i in ids if i in self._doubtful and i not in taken]
        if asked is not None and self.phones is not None and self.phones.doubtful:
            taken = self.phones.live_keys().union(unused)
            unused += [r.key for r in asked.requests if r.key in self.phones.doubtful and r.key not in taken]

    def _ask(self, steps: list[Step[Any]], ids: list[str], keys: list[str],
             events: Sequence[PendingEvent]) -> list[Any]:
        """`together(steps)`, asked again under the same tag after a lost reply; if Redis stays
        away, what the trip may have claimed or reserved is released and StateStoreError raised.
        A release that fails too leaves them given up (`let_go`)."""
        tries = 0
        while True:
            tries += 1
            try:
                return together(steps)
            except StateStoreError as exc:
                self._doubtful.update(ids)  # the call may still land, later than anything after it
                if self.phones is not None:
                    self.phones.doubtful.update(keys)
                delay = REDIS_BACKOFF.delay(tries)
                if tries < CLAIM_TRIES:  # the last failure is counted by the caller's outage
                    self.metrics.redis_errors.labels("claim").inc()
                    log.warning("claim reply lost (%s); claiming again under the same tag in %.1fs", exc, delay)
                if tries >= CLAIM_TRIES or self.stop.wait(delay):
                    self._release_or_give_up(ids, keys)  # some masters may have run the trip
                    raise

    def _release_or_give_up(self, ids: list[str], keys: list[str]) -> None:
        """Release once what a failed trip may hold (Redis is failing already: one try, not a
        minute of them); if that fails too, they are given up (`let_go`)."""
        self._released.update(ids)  # (see `_released`)
        try:
            together(self._release_steps(ids, keys))
        except StateStoreError:
            self._give_up(ids, keys)
            return
        self._released_doubtful(ids, keys)

    def _released_doubtful(self, ids: list[str], keys: list[str]) -> None:
        """These ids and phones were just released: those a lost first-claim reply may take again
        later (`_doubtful`) count as given up from now on (`let_go`)."""
        doubtful_keys = self.phones.doubtful if self.phones is not None else set()
        if self._doubtful or doubtful_keys:
            self._give_up([i for i in ids if i in self._doubtful], [k for k in keys if k in doubtful_keys])

    def _release_steps(self, ids: list[str], keys: list[str]) -> list[Step[Any]]:
        return self._settle_steps(Settlement.RELEASED, ids, keys)

    def _settle_steps(self, outcome: Settlement, ids: list[str], keys: list[str]) -> list[Step[Any]]:
        """The settlement of these ids and phones, one round trip. A release names no replay: a
        claim that replaced an unknown mark recorded it, and puts back that mark only (lua/
        settle.lua). Those a lost first-claim reply may take again (`_doubtful`) are released with
        a tombstone (lua/settle.lua, lua/settle_phones.lua): that late call takes nothing, so
        another replica's copy finds them free, not held by an attempt that never sends."""
        late_ids: list[str] = []
        late_keys: list[str] = []
        phones = self.phones
        if outcome is Settlement.RELEASED:
            if self._doubtful:
                late_ids = [i for i in ids if i in self._doubtful]
                ids = [i for i in ids if i not in self._doubtful] if late_ids else ids
            if phones is not None and phones.doubtful:
                late_keys = [k for k in keys if k in phones.doubtful]
                keys = [k for k in keys if k not in phones.doubtful] if late_keys else keys
        steps: list[Step[Any]] = [self.dedup.stage_settle(outcome, self.tag, ids)]
        if late_ids:
            steps.append(self.dedup.stage_settle(outcome, self.tag, late_ids, tombstone=True))
        if phones is not None:
            store = phones.policy.store
            if keys:
                steps.append(store.stage_settle(PHONE_FATES[outcome], self.tag, keys))
            if late_keys:
                steps.append(store.stage_settle(PhoneFate.RELEASED, self.tag, late_keys, tombstone=True))
        return steps

    def _release(self, ids: list[str], keys: list[str]) -> None:
        """Release, in one round trip, the ids claimed and the phones reserved that their events do
        not use (suppressed, skipped, held, ambiguous, or refused by the cooldown); retried like any
        settlement. A release that never lands leaves them given up: the events this replica sends
        round again take them over (`let_go`); a copy read by another replica is held for the
        lease, then finds an armed claim lapsed into an unknown mark (dead-lettered as `ambiguous`,
        replayable after a check) and an armed reservation counting as a contact (at worst a survey
        not sent), a pending one lapsed into what it replaced (consumer/state/arming.py)."""
        self._record(Settlement.RELEASED, ids, keys)

    def let_go(self, events: list[PendingEvent]) -> list[PendingEvent]:
        """These events go round again, to be claimed by a later attempt. Each whose id or phone
        this attempt gave up while its claim or reservation may still be in Redis carries this
        attempt's tag from now on (`PendingEvent.abandoned_by`), so its next claim takes them over
        (lua/claim.lua, lua/reserve_phones.lua) instead of waiting out the lease. Only when this
        attempt holds neither for a request that may still leave: its id and phone are then
        promised, never asked for again by it, so a takeover can never meet a request of ours."""
        phones = self.phones
        if not self._given_up and (phones is None or not phones.given_up):
            return events
        live = phones.live_keys() if phones is not None else set()
        for event in events:
            event_id = event.recipient.event_id
            key = phones.key_for(event) if phones is not None else None
            doubtful = event_id in self._given_up or (phones is not None and key in phones.given_up)
            if not doubtful or event_id in self._held or key in live:
                continue
            # What a signed replay claimed (over the unknown mark it may override) is that replay's
            # alone: another event taking it over would send over a mark nobody checked for it.
            scopes = (self._replays.get(event_id), phones.replay_of.get(key) if phones is not None and key else None)
            if any(scope is not None and scope != event.replay_of for scope in scopes):
                continue
            self._given_up.add(event_id)
            if phones is not None and key is not None:
                phones.given_up.add(key)
            event.abandoned_by = _remembered(event.abandoned_by, self.tag)
        return events

    def _give_up(self, ids: list[str], keys: list[str]) -> None:
        """A release that did not land: these ids and phones may still be ours in Redis."""
        self._given_up.update(ids)
        if self.phones is not None:
            self.phones.given_up.update(keys)

    def renew(self, events: Sequence[PendingEvent], keep: Sequence[PendingEvent] = ()) -> bool | None:
        """Claim again under the same tag (idempotent; refreshes the lease), and the phones with
        them, in one round trip, armed: the renewal just before a POST (consumer/state/arming.py).
        `keep`: the batch's other claims, renewed in the same trip as they are (as a beat does):
        the parts bisection has yet to send wait pending, and only a POST's own claims are armed.
        True renewed; False a claim is lost (taken by another attempt, lapsed, or gone from Redis:
        a renewal takes no free id); None Redis did not answer, or stopping (do not send either,
        but no claim is known lost: as `beat`)."""
        for attempt in range(1, RENEW_TRIES + 1):
            try:
                return self._renewed(events, Arming.ARM, keep)
            except StateStoreError as exc:
                self.metrics.redis_errors.labels("claim").inc()
                delay = REDIS_BACKOFF.delay(attempt)
                log.error("could not renew claims (%s); retrying in %.1fs", exc, delay)
                if self.stop.wait(delay):
                    return None
        return None

    def disarm(self, events: Sequence[PendingEvent]) -> bool:
        """The request carrying these events certainly failed, as every attempt before it did
        (an ambiguous one is never retried): their claims are pending again while the retry waits
        (consumer/state/arming.py), so a replica killed in that wait leaves events the next one
        sends instead of dead-letters. Once, not retried: a claim left armed only lapses unknown.

        False when its reply did not come back (StateStoreError): the request must not be sent
        again under these claims. The script call may still run, later than anything sent after
        it (a call is not cancelled when its connection is given up, and the renewal before the
        next POST goes on another connection, which Redis may serve first): it would leave the
        claims pending under a POST that may reach Pisano, to lapse into free and be sent again
        by the next replica. Landing after their release, it finds them free and writes nothing
        (a disarm takes no id: `_renewed`)."""
        held = self.still_held(events)
        if not held:
            return True
        try:
            self._renewed(held, Arming.PENDING)
        except StateStoreError as exc:
            self.metrics.redis_errors.labels("claim").inc()
            log.warning("could not mark the claims of a failed request as unsent (%s): the request is not sent "
                        "again under them, its events go round again", exc)
            return False
        return True

    def _renewed(self, events: Sequence[PendingEvent], arming: Arming, keep: Sequence[PendingEvent] = ()) -> bool:
        """A renewal, a disarm or a beat: in the renewal mode, which renews only this attempt's own
        claims and reservations and answers LOST, writing nothing, where they are gone (a late call
        after the release must leave nothing behind; after a Redis that lost its data, the ids
        are given up and claimed afresh by their next attempt). `keep`: more of them, renewed as
        they are (Arming.KEEP) in the same trip. True when every one is renewed."""
        steps: list[Step[Any]] = []
        if keep:  # staged first: the dedup store keeps the latest claim's grouping for `events`' settlement
            steps.append(self.dedup.stage_claim(self.tag, _requests(keep, event_ids(keep)), Arming.KEEP,
                                                renewal=True))
        steps.append(self.dedup.stage_claim(self.tag, _requests(events, event_ids(events)), arming, renewal=True))
        claims_answers = len(steps)
        if self.phones is not None:
            if keep:
                steps.append(self.phones.renewal(keep, Arming.KEEP))
            steps.append(self.phones.renewal(events, arming))
        phones_answers = len(steps)
        if arming is Arming.ARM and self.pause_read is not None:  # the renewal before a POST
            steps.append(self.pause_read())
        answers = together(steps)
        return all(s is ClaimStatus.CLAIMED for answer in answers[:claims_answers] for s in answer) and \
            all(s is PhoneStatus.RESERVED for answer in answers[claims_answers:phones_answers] for s in answer)

    def still_held(self, events: Sequence[PendingEvent]) -> list[PendingEvent]:
        """The events among these whose claims this attempt still holds (not settled yet)."""
        return [e for e in events if e.recipient.event_id in self._held]

    def beat_while_recording(self, wait: Callable[[float], bool]) -> None:
        """Wait with `wait` (the batch's heartbeat's) between the retries of a settlement, so the
        claims of the batch's requests still to come stay alive through an outage of up to a
        minute (`_record`)."""
        self._wait = wait

    def beat(self, events: Sequence[PendingEvent]) -> bool | None:
        """`renew` once, for the claims still held among `events`, while their request waits
        (consumer/delivery/heartbeat.py): True renewed, False one is lost (do not send), None Redis
        did not answer (not retried here: the next beat, or the renewal before the POST, is)."""
        held = self.still_held(events)
        if self._recording:
            held = [e for e in held if e.recipient.event_id not in self._recording]
        if not held:
            return True
        try:
            return self._renewed(held, Arming.KEEP)
        except StateStoreError:
            self.metrics.redis_errors.labels("claim").inc()
            return None

    def sending(self, events: Sequence[PendingEvent], ids: list[str] | None = None) -> None:
        """These ids are about to leave in a request: from now on their fate may be unknown.
        `ids`: the events' ids in order, when the caller has them (`Claimed.claimed_ids`)."""
        self._held.update(dict.fromkeys(event_ids(events) if ids is None else ids, True))

    def unsent(self, events: Sequence[PendingEvent], ids: list[str] | None = None) -> None:
        """The request these ids were about to leave in (`sending`) did not leave (late for its
        throttle slot at the wire), and none before it carried them: an error from now on releases
        them, as before `sending`. `ids`: as for `sending`."""
        for event_id in event_ids(events) if ids is None else ids:
            if event_id in self._held:  # one settled meanwhile stays settled
                self._held[event_id] = False

    def settle(self, outcome: Settlement, events: Sequence[PendingEvent], ids: list[str] | None = None) -> None:
        """Record the fate of these events' request, for their ids and their phones in one round
        trip. Until it is recorded they stay held, so an exception here still ends them as unknown
        on exit if a request may have left. `ids`: as for `sending`."""
        ids = event_ids(events) if ids is None else ids
        # Taken from the reservation first: a phone whose fate could not be recorded is not settled
        # again on exit; its reservation expires into a contact.
        keys = self.phones.keys_of(ids) if self.phones is not None else []
        self._record(outcome, ids, keys)
        if len(ids) >= len(self._held) and self._held.keys() <= set(ids):
            self._held.clear()  # the request held every id left (its whole batch): no pop per id
        else:
            for event_id in ids:
                self._held.pop(event_id, None)

    def _settle_ids(self, outcome: Settlement, ids: list[str]) -> None:
        self._record(outcome, ids, [])

    def _pause(self, seconds: float) -> None:
        """Sleep between a settlement's retries, beating the batch's other claims when it has a
        heartbeat; never cut short (stopping, a claim lost end its wait early: the rest is slept)."""
        end = time.monotonic() + seconds
        if self._wait is not None:
            self._wait(seconds)
        time.sleep(max(0.0, end - time.monotonic()))

    def _record(self, outcome: Settlement, ids: list[str], keys: list[str]) -> None:
        """Record an outcome in Redis for these ids and phone keys (one round trip), retrying while
        Redis is away (bounded, not interruptible: an outcome must be recorded if at all possible).
        Its waits beat the batch's other claims (`beat_while_recording`): bisection's groups still
        to be sent must not lapse while a partial cluster outage holds this for up to a minute."""
        if not ids and not keys:
            return
        if outcome is Settlement.RELEASED:
            self._released.update(ids)  # any try may land late: never claimed again (`_released`)
        steps = self._settle_steps(outcome, ids, keys)
        try:
            for attempt in range(1, SETTLE_TRIES + 1):
                try:
                    together(steps)
                    if outcome is Settlement.RELEASED:
                        self._released_doubtful(ids, keys)
                    return
                except StateStoreError as exc:
                    self.metrics.redis_errors.labels("settle").inc()
                    delay = REDIS_BACKOFF.delay(attempt)
                    log.error("could not record an outcome in Redis (%s); retrying in %.1fs", exc, delay)
                    self._recording.update(ids)
                    self._pause(delay)
        finally:
            self._recording.clear()
        if outcome is Settlement.RELEASED:
            self._give_up(ids, keys)
            log.error("gave up releasing %d claims and %d phone reservations in Redis; the events this "
                      "replica sends round again take them over, copies read elsewhere find them ambiguous "
                      "once their lease expires", len(ids), len(keys))
            return
        log.error("gave up recording an outcome in Redis; duplicates of these %d events will be "
                  "dead-lettered as ambiguous once their claim lease expires, and their %d phone reservations "
                  "count as contacts once it does", len(ids), len(keys))


def _remembered(tags: tuple[str, ...], tag: str) -> tuple[str, ...]:
    """`tags` and `tag`, bounded: the first ABANDONED_FIRST and the newest (ABANDONED_LIMIT)."""
    tags = (*tags, tag)
    if len(tags) <= ABANDONED_LIMIT:
        return tags
    return tags[:ABANDONED_FIRST] + tags[ABANDONED_FIRST - ABANDONED_LIMIT:]


def event_ids(events: Iterable[PendingEvent]) -> list[str]:
    return list(map(EVENT_ID, events))


def _requests(events: Sequence[PendingEvent], ids: list[str]) -> ClaimRequests:
    """The claim's requests as columns (`ClaimRequests`): no object per id."""
    return ClaimRequests(ids, list(map(REPLAY_OF, events)), list(map(ABANDONED_BY, events)))
