"""The per-phone contact cooldown at admission (issue 13, point 1; README "Contact cooldown").

    batch taken -> admission (expired) -> one round trip: opt-out list, claim ids, reserve phones -> POST

A customer surveyed (by any campaign of the fleet) is not surveyed again within the cooldown of the
campaign that would survey them now: CONTACT_COOLDOWN, overridden per destination and per campaign
(`CooldownWindows`). Phones are reserved by the same attempt as the ids (the claim tag), in the
same round trip as the claim (`claims.Claim.claim`), so optimistically: for every event of the batch.
Only the ids claimed keep theirs: so an id delivered before ends as `skipped`, not `cooldown` (its
own delivery started the cooldown), and an id of unknown fate is still dead-lettered as
`ambiguous`; the phones of the others are released at once, which puts back any contact a
reservation covered (lua/settle_phones.lua), so the state is as if they had never been asked. A
phone in cooldown ends its event as `cooldown` (final, committed, counted, never
sent); a phone reserved by a live attempt elsewhere holds its event back (`requeue`): when it comes
round again the other attempt has either been accepted (then `cooldown`) or failed (then it may go).
Either way the event's id claim is released at once.

`PhoneReservation` is one batch's reservations, driven by `claims.Claim` so that every path that
settles or renews an id does the same for its phone, and the claim's exit settles left-over phones
as it settles left-over ids: released when no request carrying them may have left, a contact when
one may have. So no exception leaves a reservation behind, and no phone in cooldown is ever sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumer.delivery.backoff import REDIS_BACKOFF
from consumer.delivery.batching import PendingEvent
from consumer.errors import InvalidEventError, StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.arming import Arming
from consumer.state.cooldown import CooldownStore, PhoneFate, PhoneRequest, PhoneStatus, phone_key
from consumer.state.redis import Keys
from consumer.state.trip import Step

log = logging.getLogger(__name__)

SETTLE_TRIES = 15  # as claims.SETTLE_TRIES: a contact must be recorded if at all possible


@dataclass(frozen=True)
class CooldownWindows:
    """The cooldown (ms, 0 off) of each campaign: the campaign's override, else its destination's,
    else CONTACT_COOLDOWN."""

    default_ms: int
    destinations: dict[str, int] = field(default_factory=dict)
    campaigns: dict[str, int] = field(default_factory=dict)

    def window_ms(self, destination: str, campaign: str) -> int:
        if campaign in self.campaigns:
            return self.campaigns[campaign]
        return self.destinations.get(destination, self.default_ms)

    @property
    def longest_ms(self) -> int:
        """How long a contact must be kept: the longest cooldown any campaign may ask about."""
        return max([self.default_ms, *self.destinations.values(), *self.campaigns.values()])

    def __bool__(self) -> bool:
        return self.longest_ms > 0


class ContactCooldown:
    """The policy of one fleet: its store, its windows, and how a recipient's phone becomes a key
    (the opt-out list's keyed hash, `Suppression.phone_entry`: the phone never in clear)."""

    def __init__(self, store: CooldownStore, windows: CooldownWindows, keys: Keys,
                 phone_entry: Callable[[str], str]) -> None:
        self.store = store
        self.windows = windows
        self.keys = keys
        self.phone_entry = phone_entry

    def key(self, phone: str) -> str:
        """InvalidEventError when the phone cannot be read back into E.164."""
        return phone_key(self.keys, self.phone_entry(phone).partition(":")[2])


@dataclass
class Reserved:
    reserved: list[PendingEvent] = field(default_factory=list)
    cooling: list[PendingEvent] = field(default_factory=list)
    held: list[PendingEvent] = field(default_factory=list)
    uncheckable: list[PendingEvent] = field(default_factory=list)


@dataclass
class Asked:
    """The phones a trip asks for (`PhoneReservation.ask`): each event's phone key (None: its phone
    cannot be read back into E.164), and one request per phone not yet held by the batch."""

    keys: dict[str, str | None] = field(default_factory=dict)  # event id -> its phone's key
    requests: list[PhoneRequest] = field(default_factory=list)


class PhoneReservation:
    """One batch's phone reservations, under its claim tag."""

    def __init__(self, policy: ContactCooldown, window_ms: int, tag: str, metrics: Metrics,
                 stop: threading.Event) -> None:
        self.policy = policy
        self.window_ms = window_ms
        self.tag = tag
        self.metrics = metrics
        self.stop = stop
        self._held: dict[str, str] = {}  # event id -> phone key reserved for it
        # Keys given up while their reservation may still be in Redis, or promised to a later
        # attempt (`claims.Claim.let_go`): never asked for again under this tag.
        self.given_up: set[str] = set()
        # Keys a first claim's trip may have reserved though its reply was lost: given up once
        # released (`claims.Claim._doubtful`).
        self.doubtful: set[str] = set()
        # Keys asked for a signed replay -> the attempt it replays: a reservation that may cover that
        # attempt's unknown contact is the replay's alone (`claims.Claim.let_go`). Empty mostly.
        self.replay_of: dict[str, str] = {}

    def key_for(self, event: PendingEvent) -> str | None:
        """The key of the event's phone; None when it cannot be read back into E.164."""
        try:
            return self.policy.key(event.recipient.phone)
        except InvalidEventError:
            return None

    def live_keys(self) -> set[str]:
        """The phones the batch holds for its events."""
        return set(self._held.values())

    def ask(self, events: Sequence[PendingEvent]) -> Asked:
        """The reservations to ask for these events, before anyone knows which of their ids will be
        claimed (optimistic: they travel with the claim, `claims.Claim.claim`). A phone the batch
        holds already is not asked again; a phone twice is asked once, for the first event; a phone
        given up is never asked again (its events are held back: a later attempt takes it over)."""
        asked = Asked()
        seen: set[str] = set(self._held.values()) | self.given_up
        at: dict[str, int] = {}  # key -> its request's index
        for event in events:
            key = self.key_for(event)
            asked.keys[event.recipient.event_id] = key
            if key is not None and key in at and event.abandoned_by:
                # A later event of the phone carries attempts that gave it up unsent: the request
                # takes their reservation over whichever event asked first, else it held the batch
                # back until the lease ran out and then counted as a contact nobody made. Within one
                # replay scope only (what a replay gave up may cover the mark only it may override).
                request = asked.requests[at[key]]
                if request.replay_of == event.replay_of:
                    extra = tuple(t for t in event.abandoned_by if t not in request.abandoned_by)
                    asked.requests[at[key]] = request._replace(abandoned_by=request.abandoned_by + extra)
            if key is not None and key not in seen:
                seen.add(key)
                at[key] = len(asked.requests)
                asked.requests.append(PhoneRequest(key, event.replay_of, event.abandoned_by))
                if event.replay_of:  # the latest asker decides the key's scope
                    self.replay_of[key] = event.replay_of
                elif self.replay_of:
                    self.replay_of.pop(key, None)
        return asked

    def step(self, asked: Asked, arming: Arming) -> Step[list[PhoneStatus]]:
        return self.policy.store.stage_reserve(self.tag, asked.requests, window_ms=self.window_ms, arming=arming)

    def take(self, asked: Asked, statuses: Sequence[PhoneStatus],
             claimed: Sequence[PendingEvent]) -> tuple[Reserved, list[str]]:
        """Give each phone reserved to the first event claimed that has it (and the same replay
        scope: a reservation that overrode a replay's unknown contact is that replay's alone); the
        other events claimed are refused as they would have been, asked one by one after their
        claim. Also returns the keys reserved that no event claimed takes: to release."""
        answer = Reserved()
        status_of = {r.key: (s, r.replay_of) for r, s in zip(asked.requests, statuses, strict=True)}
        taken: set[str] = set()
        holders = set(self._held.values())
        for event in claimed:
            key = asked.keys.get(event.recipient.event_id)
            if key is None:
                answer.uncheckable.append(event)
                continue
            status, scope = status_of.get(key, (PhoneStatus.HELD, None))
            # The same phone twice in one request: one waits. A reservation that may have overridden
            # a replay's unknown contact is that replay's alone.
            if key in holders or key in taken or \
                    (status is PhoneStatus.RESERVED and scope is not None and scope != event.replay_of):
                answer.held.append(event)
            elif status is PhoneStatus.RESERVED:
                taken.add(key)
                answer.reserved.append(event)
                self._held[event.recipient.event_id] = key
            elif status is PhoneStatus.COOLING:
                answer.cooling.append(event)
            else:
                answer.held.append(event)
        unused = [r.key for r, s in zip(asked.requests, statuses, strict=True)
                  if s is PhoneStatus.RESERVED and r.key not in taken]
        return answer, unused

    def renewal(self, events: Sequence[PendingEvent], arming: Arming) -> Step[list[PhoneStatus]]:
        """Reserve again under the same tag (refreshes the lease), armed or not as the claims
        renewed with them, in the renewal mode (a phone no longer ours is left as it is: LOST):
        every answer must be RESERVED, else a phone is no longer ours (do not send)."""
        requests = [PhoneRequest(self._held[e.recipient.event_id], e.replay_of) for e in events
                    if e.recipient.event_id in self._held]
        return self.policy.store.stage_reserve(self.tag, requests, window_ms=self.window_ms, arming=arming,
                                               renewal=True)

    def keys_of(self, event_ids: Sequence[str]) -> list[str]:
        """The keys held for these events, no longer held (their fate is about to be recorded)."""
        return [self._held.pop(i) for i in event_ids if i in self._held]

    def settle(self, fate: PhoneFate, event_ids: Sequence[str]) -> None:
        """Record the fate of these events' request for their phones (retried while Redis is
        away); they are no longer held either way."""
        keys = [self._held.pop(i) for i in event_ids if i in self._held]
        if not keys:
            return
        # Those a lost first-claim reply may reserve again are released with a tombstone, so that
        # late call takes nothing (lua/settle_phones.lua).
        late = [k for k in keys if k in self.doubtful] if fate is PhoneFate.RELEASED and self.doubtful else []
        plain = [k for k in keys if k not in self.doubtful] if late else keys
        for attempt in range(1, SETTLE_TRIES + 1):
            try:
                if plain:
                    self.policy.store.settle(fate, self.tag, plain)
                if late:
                    self.policy.store.settle(fate, self.tag, late, tombstone=True)
                    self.given_up.update(late)  # never asked for again under this tag
                return
            except StateStoreError as exc:
                self.metrics.redis_errors.labels("cooldown").inc()
                delay = REDIS_BACKOFF.delay(attempt)
                log.error("could not record a phone's contact in Redis (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
        if fate is PhoneFate.RELEASED:  # maybe still ours: a later attempt takes them over (`claims.Claim.let_go`)
            self.given_up.update(keys)
        log.error("gave up recording the contact of %d phones in Redis; their reservations count as contacts "
                  "once their lease expires", len(keys))

    def left_over(self, may_have_left: set[str]) -> None:
        """Settle every phone still held: a contact if a request carrying its event may have left,
        released otherwise (the claim's exit path)."""
        if not self._held:
            return
        held = list(self._held)
        self.settle(PhoneFate.UNKNOWN, [i for i in held if i in may_have_left])
        self.settle(PhoneFate.RELEASED, [i for i in held if i not in may_have_left])
