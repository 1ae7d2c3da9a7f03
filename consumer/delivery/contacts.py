"""The per-phone contact cooldown at admission (issue 13, point 1; README "Contact cooldown").

    batch taken -> admission (expired, suppressed) -> claim ids (dedup) -> reserve phones -> POST

A customer surveyed (by any campaign of the fleet) is not surveyed again within the cooldown of the
campaign that would survey them now: CONTACT_COOLDOWN, overridden per destination and per campaign
(`CooldownWindows`). Phones are reserved after the ids are claimed, by the same attempt (the claim
tag), and only for the ids claimed: so an id delivered before ends as `skipped`, not `cooldown`
(its own delivery started the cooldown), and an id of unknown fate is still dead-lettered as
`ambiguous`. A phone in cooldown ends its event as `cooldown` (final, committed, counted, never
sent); a phone reserved by a live attempt elsewhere holds its event back (`requeue`): when it comes
round again the other attempt has either been accepted (then `cooldown`) or failed (then it may go).
Either way the event's id claim is released at once.

`PhoneReservation` is one batch's reservations, driven by `claims.Claim` so that every path that
settles or renews an id does the same for its phone, and the claim's exit settles left-over phones
as it settles left-over ids: released when no request carrying them may have left, a contact when
one may have. So no exception leaves a reservation behind, and no phone in cooldown is ever sent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumer.delivery.backoff import REDIS_BACKOFF
from consumer.delivery.batching import PendingEvent
from consumer.errors import InvalidEventError, StateStoreError
from consumer.operations.metrics import Metrics
from consumer.state.cooldown import CooldownStore, PhoneFate, PhoneRequest, PhoneStatus, phone_key
from consumer.state.redis import Keys

log = logging.getLogger(__name__)

RESERVE_TRIES = 3  # a lost reply is asked again under the same tag (idempotent); then Redis counts as away
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

    def reserve(self, events: Sequence[PendingEvent]) -> Reserved:
        """Reserve the events' phones in one round trip (per master); StateStoreError if Redis stays
        away, after releasing what the script may have reserved."""
        answer = Reserved()
        asked: list[PendingEvent] = []
        requests: list[PhoneRequest] = []
        taken = {key: event_id for event_id, key in self._held.items()}
        for event in events:
            try:
                key = self.policy.key(event.recipient.phone)
            except InvalidEventError:
                answer.uncheckable.append(event)
                continue
            owner = taken.setdefault(key, event.recipient.event_id)
            if owner != event.recipient.event_id:  # the same phone twice in one request: one waits
                answer.held.append(event)
                continue
            asked.append(event)
            requests.append(PhoneRequest(key, event.replay_of))
        if not requests:
            return answer
        statuses = self._reserve(requests)
        for event, request, status in zip(asked, requests, statuses, strict=True):
            if status is PhoneStatus.RESERVED:
                answer.reserved.append(event)
                self._held[event.recipient.event_id] = request.key
            elif status is PhoneStatus.COOLING:
                answer.cooling.append(event)
            else:
                answer.held.append(event)
        return answer

    def _reserve(self, requests: list[PhoneRequest]) -> list[PhoneStatus]:
        tries = 0
        while True:
            tries += 1
            try:
                return self.policy.store.reserve(self.tag, requests, window_ms=self.window_ms)
            except StateStoreError as exc:
                delay = REDIS_BACKOFF.delay(tries)
                if tries < RESERVE_TRIES:
                    self.metrics.redis_errors.labels("cooldown").inc()
                    log.warning("phone reservation reply lost (%s); asking again under the same tag in %.1fs",
                                exc, delay)
                if tries >= RESERVE_TRIES or self.stop.wait(delay):
                    # A reservation left behind blocks its phone for one lease, then counts as a contact.
                    with contextlib.suppress(StateStoreError):
                        self.policy.store.settle(PhoneFate.RELEASED, self.tag, [r.key for r in requests])
                    raise

    def renew(self, events: Sequence[PendingEvent]) -> bool:
        """Reserve again under the same tag (refreshes the lease); False if any phone is no longer
        ours (do not send). StateStoreError is left to the caller's renewal loop."""
        requests = [PhoneRequest(self._held[e.recipient.event_id], e.replay_of) for e in events
                    if e.recipient.event_id in self._held]
        if not requests:
            return True
        statuses = self.policy.store.reserve(self.tag, requests, window_ms=self.window_ms)
        return all(s is PhoneStatus.RESERVED for s in statuses)

    def settle(self, fate: PhoneFate, event_ids: Sequence[str]) -> None:
        """Record the fate of these events' request for their phones (retried while Redis is
        away); they are no longer held either way."""
        keys = [self._held.pop(i) for i in event_ids if i in self._held]
        if not keys:
            return
        for attempt in range(1, SETTLE_TRIES + 1):
            try:
                self.policy.store.settle(fate, self.tag, keys)
                return
            except StateStoreError as exc:
                self.metrics.redis_errors.labels("cooldown").inc()
                delay = REDIS_BACKOFF.delay(attempt)
                log.error("could not record a phone's contact in Redis (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
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
