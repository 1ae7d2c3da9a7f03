"""A circuit breaker per destination (a Pisano token), shared by the fleet in Redis.

When Pisano says the token or the account is wrong (README, failure classification: scope
`account`), nothing will work until someone fixes it, so the fleet stops calling Pisano for that
token instead of burning a throttle slot per batch to hear the same answer. While the circuit is
open, batches are dead-lettered at once with the code Pisano gave. After a cool-down one replica
asks Pisano whether it accepts the token now (an empty request that sends no SMS, `token_probe`);
yes closes the circuit for everyone, no reopens it with a longer cool-down. The probe needs no
traffic, so the fleet is ready again as soon as the token is fixed.

Keys (hash-tagged with the token's limiter, so one cluster slot holds them):
    ...:circuit            hash: code, status, message, cooldown_ms   (exists while not closed)
    ...:circuit:cooldown   string with a TTL: the circuit is open while it exists, then half-open
    ...:circuit:probe      string with a TTL: the replica that holds it probes; the value is
                           the probe's owner token, so only that probe gives it back
                           (lua/release_probe.lua: a probe slower than its lease must not free
                           the lease another replica took since)
Replicas read the state at most once a second, so a replica may send for up to a second after
another one opened the circuit; it then hears the same answer and the circuit stays open.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from consumer.delivery.failures import classify
from consumer.delivery.pisano_codes import CODES
from consumer.delivery.slots import NoSlot, send_in_slot
from consumer.errors import PisanoApiError, PisanoTransportError
from consumer.operations.logs import redact_text
from consumer.state.limiter import Limiter
from consumer.state.redis import Keys, load_script, stored_number, stored_text, translated

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
REFRESH_S = 1.0
STATE_TTL_MS = 86_400_000  # an abandoned open circuit does not outlive a day
# How long a probe goes on taking slots when one cannot be used on time (most often its first:
# after a cool-down its pooled connection has expired, and one set up at the slot is late at the
# wire, then kept for the next). The probe's lease (consumer/app.py) covers it, with the last
# slot's wait and one request's whole deadline: a probe outliving its lease lets another replica probe.
PROBE_SLOT_WITHIN_S = 5.0


@dataclass(frozen=True)
class Trip:
    """Why the circuit opened: Pisano's answer, repeated on every dead-letter while it is open."""

    code: int | None
    http_status: int | None
    message: str


class TokenProbe(Protocol):
    def probe_token(self, campaign_id: str = ..., leave_by: float | None = None) -> PisanoApiError | None:
        """Pisano's answer to an empty request (None: accepted); SlotMissed, nothing sent, when it
        would leave after `leave_by`."""


class CircuitStore(Protocol):
    """Where the fleet keeps one destination's circuit: Redis (`RedisCircuitStore`) or memory
    (`consumer.state.memory.MemoryCircuitStore`); both pass tests/contract/test_circuit_contract.py."""

    def read(self) -> tuple[dict[str, str], int]:
        """The trip's fields (empty: closed) and the cool-down left in ms (<= 0: over)."""

    def previous_cooldown_ms(self) -> int | None:
        """The cool-down of the trip in force, if any (a reopening doubles it)."""

    def write_open(self, fields: dict[str, str], cooldown_ms: int) -> None:
        """Open: store the trip, start the cool-down, drop any probe lease."""

    def try_probe(self, lease_ms: int) -> str | None:
        """Take the probe lease if no one holds it: its owner token, else None."""

    def release_probe(self, owner: str) -> None:
        """Give the probe lease back (the probe had no verdict), only if `owner` still holds it."""

    def probe_held(self) -> bool:
        """Whether someone holds the probe lease (not taking it)."""

    def clear(self) -> None:
        """Close: forget the trip, the cool-down and the probe lease."""


class RedisCircuitStore:
    def __init__(self, client: Any, keys: Keys, token: str, campaign: str | None = None) -> None:
        """The token's circuit, or with `campaign` that campaign's (consumer.state.campaigns)."""
        self.client = client
        self._key, self._cooldown_key, self._probe_key = (
            keys.circuit(token) if campaign is None else keys.campaign_circuit(token, campaign))
        self._release_probe = load_script(client, "release_probe")

    def read(self) -> tuple[dict[str, str], int]:
        with translated("reading the circuit"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self._key)
            pipe.pttl(self._cooldown_key)
            fields, cooldown_left = pipe.execute()
        return {stored_text(k): stored_text(v) for k, v in fields.items()}, int(cooldown_left)

    def previous_cooldown_ms(self) -> int | None:
        with translated("reading the circuit"):
            previous = self.client.hget(self._key, "cooldown_ms")
        return stored_number(stored_text(previous)) if previous else None

    def write_open(self, fields: dict[str, str], cooldown_ms: int) -> None:
        with translated("opening the circuit"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self._key, mapping={**fields, "cooldown_ms": cooldown_ms})
            pipe.pexpire(self._key, STATE_TTL_MS)
            pipe.set(self._cooldown_key, "1", px=cooldown_ms)
            pipe.delete(self._probe_key)
            pipe.execute()

    def try_probe(self, lease_ms: int) -> str | None:
        owner = uuid.uuid4().hex  # per probe: a lapsed probe tells its lease from the next one's
        with translated("the circuit probe"):
            return owner if self.client.set(self._probe_key, owner, nx=True, px=lease_ms) else None

    def release_probe(self, owner: str) -> None:
        with translated("the circuit probe"):
            self._release_probe(keys=[self._probe_key], args=[owner])

    def probe_held(self) -> bool:
        with translated("the circuit probe"):
            return bool(self.client.exists(self._probe_key))

    def clear(self) -> None:
        with translated("closing the circuit"):
            self.client.delete(self._key, self._cooldown_key, self._probe_key)


class CircuitBreaker:
    def __init__(self, store: CircuitStore, *, cooldown_ms: int, max_cooldown_ms: int, probe_lease_ms: int,
                 name: str = "default", subject: str = "the token", fix: str = "the token or the account",
                 closed_refresh_s: float | None = None) -> None:
        self.store = store
        self.name = name
        self.subject = subject  # what Pisano refused or accepts, for the logs
        self.fix = fix  # what an SRE fixes before replaying
        self.cooldown_ms = cooldown_ms
        self.max_cooldown_ms = max_cooldown_ms
        self.probe_lease_ms = probe_lease_ms
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._trip: Trip | None = None
        self._read_at = -REFRESH_S
        # While closed, how long the state read here stays good (default REFRESH_S).
        self.closed_refresh_s = closed_refresh_s

    def state(self) -> tuple[State, Trip | None]:
        """The fleet's state for this destination, read from the store at most once per REFRESH_S."""
        with self._lock:
            refresh = REFRESH_S if self._state != "closed" or self.closed_refresh_s is None else self.closed_refresh_s
            if time.monotonic() - self._read_at < refresh:
                return self._state, self._trip
        fields, cooldown_left = self.store.read()
        state: State = "closed" if not fields else ("open" if cooldown_left > 0 else "half_open")
        trip = Trip(stored_number(fields.get("code")), stored_number(fields.get("status")),
                    fields.get("message", "")) if fields else None
        with self._lock:
            self._state, self._trip, self._read_at = state, trip, time.monotonic()
        return state, trip

    def known_state(self) -> State:
        """The state as last read or set here, without asking the store."""
        with self._lock:
            return self._state

    def try_probe(self) -> str | None:
        """Become the one replica that probes a half-open circuit: the lease's owner token (what
        gives it back), None when another probe holds it."""
        return self.store.try_probe(self.probe_lease_ms)

    def open(self, trip: Trip, *, reopen: bool = True) -> None:
        """Open (or reopen after a failed probe) with a cool-down twice the last, up to the maximum.
        `reopen=False`: a request sent while another replica opened it heard the same answer; the
        trip in force stays as it is (no doubling), it is only learned here."""
        previous = self.store.previous_cooldown_ms()
        if previous and not reopen:
            with self._lock:
                self._read_at = -REFRESH_S  # read the trip in force on the next look
            self.state()
            return
        cooldown = min(self.max_cooldown_ms, previous * 2) if previous else self.cooldown_ms
        # Pisano's or a proxy's text may echo a URL's password or a header, and a phone: masked as in
        # a log line before it reaches Redis (and then cut: a cut URL would hide its @ from the mask).
        message = redact_text(trip.message)
        self.store.write_open({"code": str(trip.code or ""), "status": str(trip.http_status or ""),
                               "message": message[:500]}, cooldown)
        with self._lock:
            self._state, self._trip, self._read_at = "open", trip, time.monotonic()
        log.error("Pisano circuit OPEN for destination %s: Pisano answered %s (%s); not calling it for %.0fs, "
                  "dead-lettering meanwhile. Fix %s, then replay the dead-letters",
                  self.name, trip.code or trip.http_status, message, cooldown / 1000, self.fix,
                  extra={"code": trip.code, "status": trip.http_status, "destination": self.name})

    def probe_if_due(self, probe: Callable[[], bool | Trip | None]) -> None:
        """Half-open: one replica asks Pisano (`probe`: True accepted, a Trip refused again, None
        no verdict) and closes or reopens the circuit for the fleet."""
        state, _ = self.state()
        owner = self.try_probe() if state == "half_open" else None
        if owner is None:
            return
        try:
            result = probe()
        except BaseException:
            # No verdict either (the throttle's Redis refusing, a bug): the lease goes back now, not
            # when it expires, so the next round can probe; the error goes on to the caller's log.
            self._give_back(owner)
            raise
        if result is True:
            self.close()
        elif isinstance(result, Trip):
            self.open(result)
        else:  # no verdict (Pisano down, no slot): let the next round, on any replica, try again
            self.store.release_probe(owner)

    def _give_back(self, owner: str) -> None:
        try:
            self.store.release_probe(owner)
        except Exception:  # Redis away: the lease ends on its own
            log.warning("could not give the circuit's probe back to Redis; the next probe waits for its lease")

    def close(self) -> None:
        """Close after a successful probe (callers skip this while the circuit is closed)."""
        self.store.clear()
        with self._lock:
            was = self._state
            self._state, self._trip, self._read_at = "closed", None, time.monotonic()
        if was != "closed":
            log.warning("Pisano circuit CLOSED for destination %s: Pisano accepts %s again", self.name, self.subject)


def token_verdict(answer: PisanoApiError | None) -> bool | Trip | None:
    """What Pisano's answer to a token probe says: True accepted, a Trip refused, None unclear.

    Read as a sender's answer is (`classify`): a refusal of the account scope refuses the token,
    and so does a 401 or 403 without a code. Any other code of Pisano's table accepts it: Pisano
    checks the token first, so a code about the request (13015, 13028 and 13002 for the empty
    request to the nil campaign, but also 13013 "Permission denied" or 13038) came from a Pisano
    that took the token. Read as a refusal, or as no verdict, it kept the circuit open for good,
    every batch dead-lettered while the token was fine. Throttled, failing (5xx, 408) or codeless
    answers say nothing of the token: no verdict, the next round probes again."""
    if answer is None:
        return True
    verdict = classify(answer)
    if verdict.action != "dead_letter":
        return None
    if verdict.scope == "account":
        return Trip(answer.code, answer.http_status, answer.message)
    return True if answer.code in CODES else None


def token_probe(client: TokenProbe, limiter: Limiter, *, warm: Callable[[float], object] | None = None,
                wasted: Callable[[], object] | None = None) -> Callable[[], bool | Trip | None]:
    """The probe of a half-open circuit: Pisano's verdict on the token, in a throttle slot, its
    first byte checked at the wire like a sender's (`send_in_slot`; `warm` and `wasted` as there)."""

    def probe() -> bool | Trip | None:
        try:
            answer = send_in_slot(limiter, PROBE_SLOT_WITHIN_S, lambda leave_by: client.probe_token(leave_by=leave_by),
                                  warm=warm, wasted=wasted)
        except PisanoTransportError:
            return None
        # No slot usable on time: no verdict, the next round (on any replica) probes in one of its own.
        return None if isinstance(answer, NoSlot) else token_verdict(answer)

    return probe
