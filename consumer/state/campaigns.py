"""A circuit breaker per campaign of a destination, shared by the fleet in Redis.

Some refusals mean that one campaign is broken, not the token and not a recipient: 13002 the
campaign does not exist (a typo in a route table, a campaign deleted at Pisano), 13005 its node
has no flow, 13034 its flow is invalid (`consumer.delivery.failures.CAMPAIGN_CODES`). Every
batch of that campaign would get the same answer, each spending a throttle slot the other
campaigns need. So the first such answer opens the campaign's circuit for the whole fleet:

- *Open.* Its batches are dead-lettered with Pisano's code at once, without a slot
  (`Sender._campaign_short_circuit`).
- *Probe.* After `CIRCUIT_COOLDOWN_MS` one replica sends the campaign's next real batch as the
  probe (its events wanted to go anyway; no SMS is sent by a refusal). The others keep
  dead-lettering meanwhile.
- *Close or reopen.* Accepted: closed for everyone. The same kind of refusal: reopened with twice
  the cool-down (up to `CIRCUIT_MAX_COOLDOWN_MS`). Anything else (a 503, a timeout): no verdict,
  the next batch probes again.

Each campaign's state is a `CircuitBreaker` over a `CircuitStore` of its own (keys
`...:cc:<campaign>` beside the token's circuit in Redis; `MemoryCircuitStore`s in memory). While
open it is read at most once a second per campaign (to see the cool-down end); while closed only
every CLOSED_REFRESH_S, so the common case costs no Redis round trip per request: a replica that
has not read the news yet sends at most one more batch, and Pisano's answer to it opens the
circuit here too. Tests: tests/contract/test_campaign_circuit_contract.py.
A Redis error here never stops a send: this breaker saves slots, it guards no invariant.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Literal

from consumer.errors import StateStoreError
from consumer.state.circuit import CircuitBreaker, CircuitStore, State, Trip

log = logging.getLogger(__name__)


class Probe(str):
    """The admission of the batch that probes a half-open circuit: equal to "probe", carrying the
    owner token of its lease, so `record` gives back this probe's lease and no later one's."""

    owner: str

    def __new__(cls, owner: str) -> Probe:
        probe = super().__new__(cls, "probe")
        probe.owner = owner
        return probe


Admission = Literal["send"] | Probe | Trip  # a probe is always its Probe: it gives back its own lease
MAX_TRACKED = 1000  # closed campaigns are forgotten beyond this many (ids come from records)
CLOSED_REFRESH_S = 30.0


class CampaignCircuits:
    def __init__(self, stores: Callable[[str], CircuitStore], *, cooldown_ms: int, max_cooldown_ms: int,
                 probe_lease_ms: int, name: str = "default") -> None:
        self.stores = stores
        self.cooldown_ms = cooldown_ms
        self.max_cooldown_ms = max_cooldown_ms
        self.probe_lease_ms = probe_lease_ms
        self.name = name
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def state(self, campaign: str) -> State:
        """The fleet's state for the campaign (read from the store at most once a second)."""
        return self._breaker(campaign).state()[0]

    def trip_if_refused(self, campaign: str) -> Trip | None:
        """The Trip a batch of the campaign would be refused with by `admit` after its slot: the
        circuit is open, or half-open while another batch probes it. None when it may be sent or
        probed (or Redis cannot say)."""
        breaker = self._breaker(campaign)
        try:
            state, trip = breaker.state()
            if state == "closed" or (state == "half_open" and not breaker.store.probe_held()):
                return None
        except StateStoreError:
            return None
        return trip or Trip(None, None, "campaign circuit open")

    def blocked(self) -> frozenset[str]:
        """Campaigns known here to be open: their batches are not worth a slot."""
        with self._lock:
            breakers = list(self._breakers.items())
        return frozenset(c for c, b in breakers if b.known_state() == "open")

    def open_count(self) -> int:
        with self._lock:
            breakers = list(self._breakers.values())
        return sum(1 for b in breakers if b.known_state() != "closed")

    def admit(self, campaign: str) -> Admission:
        """May a batch of the campaign be sent? "send" (closed), "probe" (half-open and this batch
        is the fleet's one probe), or the Trip to dead-letter it with (open, or another replica
        probes). Redis away: "send", the slot was reserved anyway."""
        breaker = self._breaker(campaign)
        try:
            state, trip = breaker.state()
            if state == "closed":
                return "send"
            owner = breaker.try_probe() if state == "half_open" else None
            if owner is not None:
                log.info("probing the campaign's circuit with a real batch", extra={"campaign": campaign})
                return Probe(owner)
        except StateStoreError as exc:
            log.warning("could not read the campaign's circuit (%s); sending", exc, extra={"campaign": campaign})
            return "send"
        return trip or Trip(None, None, "campaign circuit open")

    def record(self, campaign: str, admission: Admission, verdict: bool | Trip | None) -> None:
        """What Pisano said to a batch of the campaign: True accepted, a Trip when it refused the
        campaign itself, None otherwise."""
        breaker = self._breaker(campaign)
        # A probe gives back its own lease only (the Probe `admit` returned carries its owner).
        owner = admission.owner if isinstance(admission, Probe) else None
        try:
            if isinstance(verdict, Trip):
                breaker.open(verdict, reopen=admission == "probe")
            elif verdict is True and (admission == "probe" or breaker.known_state() != "closed"):
                breaker.close()
            elif owner is not None:  # a probe without a verdict: the next batch probes
                breaker.store.release_probe(owner)
        except StateStoreError as exc:
            log.error("could not record the campaign's circuit in Redis: %s", exc, extra={"campaign": campaign})

    def _breaker(self, campaign: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(campaign)
            if breaker is None:
                if len(self._breakers) >= MAX_TRACKED:
                    for known, old in list(self._breakers.items()):
                        if old.known_state() == "closed":
                            del self._breakers[known]
                breaker = self._breakers[campaign] = CircuitBreaker(
                    self.stores(campaign), cooldown_ms=self.cooldown_ms, max_cooldown_ms=self.max_cooldown_ms,
                    probe_lease_ms=self.probe_lease_ms, name=f"{self.name}, campaign {campaign}",
                    subject="the campaign", fix="the campaign id (mapping, route table) or its flow at Pisano",
                    closed_refresh_s=CLOSED_REFRESH_S)
            return breaker
