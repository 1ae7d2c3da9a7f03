"""One request to Pisano with its retries: each attempt in a throttle slot of its own.

Before every attempt the claims are renewed inside the slot's lead time (`SlotReserver.ready`),
except a first attempt whose claims were just taken for its slot: retries and bisection can
outlast a claim's lease, and an expired claim lets a replay send the same event elsewhere. The
renewal comes before the slot, never between the slot and the POST, so it cannot make a POST
late. An attempt whose send window has closed meanwhile (a retry's backoff ran past it) is not
sent: `held_by_window`, its claims released and its events back to wait for the opening
(consumer/delivery/quiet_hours.py). Its waits (for a slot, between attempts) are its heartbeat's,
which keeps the claims alive meanwhile (consumer/delivery/heartbeat.py); a claim it finds lost
ends the request unsent (`claim_lost`), as a failed renewal does. After its waits, each attempt's
events are weighed for their age again (`screen`, consumer/delivery/admission.py `AgeScreen`): one
past MAX_EVENT_AGE (or stale) by then is left out of the POST and ends `expired` (or `stale`), its
claim released; a request left with none is not sent (`emptied`). Just before each POST the claim
learns that its ids may now have left (`sending`), so an exception from then on settles them as
unknown, never as free to send again.

Every attempt gets a request id of its own (32 hex digits), logged with its answer; the one of
the attempt that decided the events' fate goes into their receipts (consumer/outcomes/receipts.py),
so a receipt leads to the log line of its request.

An attempt found late at the wire (`SlotMissed`: its first byte would have left after its slot
allowed, consumer/delivery/request_deadline.py) sent nothing and is no attempt: the request takes
a new slot, its claims renewed when that slot lies beyond the reach of their claim or last renewal.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.config.tokens import TokenSource
from consumer.config.windows import CLOUD_LONGEST_MS
from consumer.delivery.backoff import Backoff
from consumer.delivery.destination import Destination
from consumer.delivery.failures import Verdict
from consumer.delivery.heartbeat import Heartbeat
from consumer.delivery.pisano import Accepted
from consumer.delivery.pisano_codes import code_label
from consumer.delivery.slots import Slot, SlotReserver
from consumer.delivery.token_refresh import TOKEN_REFRESH_WAIT_S, TokenRefresh
from consumer.errors import PisanoApiError, PisanoError, PisanoTransportError, SlotMissed, StateStoreError
from consumer.operations import tracing
from consumer.operations.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    budget_s: float
    backoff: Backoff


@dataclass
class Sent:
    """How one request (with its retries) ended."""

    accepted: Accepted | None = None
    error: PisanoError | None = None
    verdict: Verdict | None = None
    attempts: int = 0
    abandoned: bool = False  # stopping: it never reached a final answer
    claim_lost: bool = False  # the ids' claims could not be renewed: not sent again
    request_id: str | None = None  # this consumer's id of the last attempt (module docstring)
    held_by_window: bool = False  # its send window closed before this attempt: not sent, wait for the opening
    emptied: bool = False  # every event grew too old before this attempt (`screen`): ended there, not sent

    @property
    def refused_for_a_recipient(self) -> bool:
        return self.verdict is not None and self.verdict.action == "dead_letter" and self.verdict.scope == "recipient"


class Attempts:
    def __init__(self, destination: Destination, slots: SlotReserver, retry: RetryPolicy, metrics: Metrics,
                 stop: threading.Event, sending_allowed: Callable[[str], bool] | None = None) -> None:
        self.destination = destination
        self.sending_allowed = sending_allowed  # the campaign's send window (None: no quiet hours)
        self.slots = slots
        self.retry = retry
        self.metrics = metrics
        self.dm = metrics.destination(destination.name)
        self.stop = stop
        # Pisano's host, for the request's span (a test's fake client has none).
        base_url = getattr(getattr(destination.client, "http", None), "base_url", None)
        self.server = str(getattr(base_url, "host", "") or "")
        self.tokens: TokenSource | None = getattr(destination.client, "tokens", None)  # None: a fake
        # Shared by the sender's threads: one refresh under way at a time (consumer/delivery/token_refresh.py).
        self._refresh = TokenRefresh(self.tokens, destination.name) if self.tokens is not None else None

    def send(self, campaign: str, body: bytes, *, slot: Slot | None, renew: Callable[[], bool],
             sending: Callable[[], None], fresh: float | None = None, events: Sequence[Any] = (),
             heartbeat: Heartbeat | None = None, screen: Callable[[float], bytes | None] | None = None,
             unsent: Callable[[], None] | None = None, disarm: Callable[[], bool] | None = None) -> Sent:
        """POST at `slot` (None: reserve a slot first), retrying in slots of their own.
        `fresh`: when (monotonic) the claims were taken, if for this slot. `events`: the request's
        pending events, whose trace contexts its span links to when tracing is on. `heartbeat`:
        the waits of the batch whose claims the request holds (None: only `stop` is watched).
        `screen`: the events weighed for their age before each POST (`SlotReserver.ready`),
        given the longest the POST may take to leave: the body of the events left (the same
        object when none was refused), None when none is left. `unsent`: undoes `sending` when the
        first attempt was found late at the wire (nothing left; None: an earlier request carried
        the events, as a bisection's groups were). `disarm`: makes the events' claims pending
        (consumer/state/arming.py) when the request waits for a new slot and no attempt of it may
        have reached Pisano (each failed certainly: an ambiguous one is never retried); the
        renewal before the next POST arms them again. False: its reply never came back, so it
        may still land after that renewal, under the POST: the request ends unsent
        (`claim_lost`), never sent again under those claims (`Claim.disarm`)."""
        beats = heartbeat if heartbeat is not None else Heartbeat(self.stop)
        sent = Sent()
        started = time.monotonic()

        def screened(within_s: float) -> bool:
            nonlocal body
            assert screen is not None
            left = screen(within_s)
            if left is None:
                return False
            body = left
            return True

        def disarmed() -> bool:
            """False: the request must not be sent again (`disarm`)."""
            nonlocal fresh
            if disarm is None:
                return True
            fresh = None  # pending now: the next POST must renew (arm) them first
            if disarm():
                return True
            sent.claim_lost = True
            return False

        while True:
            ready = self.slots.ready(slot, renew, fresh=None if sent.attempts else fresh, heartbeat=beats,
                                     screen=screened if screen is not None else None,
                                     on_pause=disarmed if disarm is not None else None)
            if ready.state == "stopped":
                sent.abandoned = True
                return sent
            if ready.state == "emptied":
                self.dm.throttle_wasted.inc()
                sent.emptied = True
                return sent
            if ready.state == "refused":
                sent.claim_lost = True
                return sent
            if self.sending_allowed is not None and not self.sending_allowed(campaign):
                self.dm.throttle_wasted.inc()
                sent.held_by_window = True
                return sent
            before = sent.request_id, sent.error, sent.verdict  # kept should this attempt not leave
            sent.attempts += 1
            sent.request_id = uuid.uuid4().hex
            # The request ends with its last attempt's answer: an earlier attempt's error is no
            # longer its error (the answer's log line read `HTTP 200` with the last 503's status).
            sent.error = sent.verdict = None
            sending()
            self.dm.in_flight_requests.inc()
            carried = self.tokens.current() if self.tokens is not None else None
            span = tracing.start_request(self.destination.name, self.server, campaign, events, sent.attempts,
                                         sent.request_id)
            failure: PisanoError | None = None
            try:
                sent.accepted = self.destination.client.send(campaign, body, ready.leave_by)
            except SlotMissed as missed:  # late at the wire: nothing left, the slot is lost
                failure = missed
            except PisanoError as error:
                refused_at = time.monotonic()  # the answer came back: only a token read begun later answers it
                failure = error
                sent.error, sent.verdict = error, self.destination.classify(error)
                self._count(error)
            finally:
                self.dm.in_flight_requests.dec()
                if span is not None:
                    _end_span(span, sent.accepted, failure)
            if isinstance(failure, SlotMissed):  # no attempt: the same request in a new slot
                self.slots.missed(failure)
                sent.attempts -= 1
                sent.request_id, sent.error, sent.verdict = before
                if not sent.attempts and unsent is not None:  # no request carried them yet
                    unsent()
                if not disarmed():
                    return sent
                slot = None
                continue
            self.slots.left()
            self._log(campaign, sent)
            if sent.accepted is not None:
                self.dm.requests("200", "").inc()
                self.metrics.request_duration.observe(sent.accepted.elapsed_s)
                return sent
            assert sent.error is not None and sent.verdict is not None
            rotated = self._refused_a_rotated_token(carried, refused_at, sent, beats)
            if rotated:
                if not disarmed():
                    return sent
                slot = None  # Pisano acted on nothing: the same request again, new token, new slot
                continue
            if rotated is None:
                # Stopping, or a claim found lost, while the source was read again: no verdict on the
                # token, and Pisano acted on nothing. Dead-lettered with the refusal (and the fleet's
                # circuit opened) the events would end for a rotation this replica never saw through.
                if beats.lost:
                    sent.claim_lost = True
                else:
                    sent.abandoned = True
                return sent
            retry_after = sent.error.retry_after_s if isinstance(sent.error, PisanoApiError) else None
            delay = self.retry.backoff.delay(sent.attempts, retry_after)
            # What the retry really waits: its backoff, and after a 429 the fleet's pause too (its
            # next slot lies after the pause), which may be the floor, far beyond the backoff.
            wait = delay
            if isinstance(sent.error, PisanoApiError) and sent.error.http_status == 429:
                # Whether or not this request is retried: one dead-lettered at once (a Retry-After
                # past PISANO_RETRY_BUDGET_MS, its last attempt) paused nothing, and the fleet went
                # on sending into Pisano's throttle, each request refused, its events dead-lettered.
                # The floor whatever the Retry-After: `Retry-After: 0` sent the fleet straight back.
                wait = max(delay, self._pause_fleet(max(delay, self._pause_floor_s())))
            if sent.verdict.action == "retry" and sent.attempts < self.retry.max_attempts \
                    and time.monotonic() - started + wait < self.retry.budget_s:
                # the backoff and the next slot may be long: a replica killed there sent nothing
                if not disarmed():
                    return sent
                if self._back_off(delay, beats):
                    slot = None  # every attempt counts against Pisano's throttle: a new slot
                    continue
                if beats.lost:  # found lost during the backoff: not sent again, decided from Redis's state
                    sent.claim_lost = True
                else:
                    sent.abandoned = True
            return sent

    def _refused_a_rotated_token(self, carried: str | None, refused_at: float, sent: Sent,
                                  beats: Heartbeat) -> bool | None:
        """Pisano refused the token the request carried, and the source holds a newer one (read
        again now, not at the next poll): the old token was revoked a moment before this replica
        saw the new one. Retry with it instead of opening the circuit. The source is waited for
        with the heartbeat and for a bounded time (`token_refresh`): a source that hangs counts
        as unchanged. Only a read begun after the refusal came back (`refused_at`, monotonic)
        answers: one begun earlier, even while the POST was in flight, may have read the source
        before the new token reached it. None: the wait was cut short
        (stopping, a claim lost) before the source answered."""
        assert sent.verdict is not None
        if carried is None or self.tokens is None or sent.verdict.scope != "account" \
                or sent.attempts >= self.retry.max_attempts:
            return False
        if self._refresh is None or self._refresh.tokens is not self.tokens:  # a source set after start (tests)
            self._refresh = TokenRefresh(self.tokens, self.destination.name)
        answered = self._refresh(beats.wait, TOKEN_REFRESH_WAIT_S, refused_at=refused_at)
        if answered is None:
            return None
        if not answered or self.tokens.current() == carried:
            return False
        log.warning("destination %s: Pisano refused the token the request carried (%s), and the token has "
                    "changed since: sending again with the new one", self.destination.name,
                    type(sent.error).__name__ if not isinstance(sent.error, PisanoApiError)
                    else f"HTTP {sent.error.http_status} code {sent.error.code}")
        return True

    def _log(self, campaign: str, sent: Sent) -> None:
        """One line per request (a few per second at most: each takes a throttle slot)."""
        answer = f"HTTP {sent.accepted.http_status}" if sent.accepted is not None \
            else f"{type(sent.error).__name__} ({sent.verdict.reason if sent.verdict else ''})"
        # The id in `extra` only: the message is redacted, and 7 digits in a row of hex would be masked.
        log.info("request answered: %s", answer,
                 extra={"campaign": campaign, "request_id": sent.request_id, "attempt": sent.attempts,
                        "pisano_request_id": sent.accepted.request_id if sent.accepted is not None else None,
                        "status": sent.error.http_status if isinstance(sent.error, PisanoApiError) else None,
                        "destination": self.destination.name})

    def _pause_fleet(self, seconds: float) -> float:
        """Pisano answered 429: no slot for the whole fleet for `seconds` (its Retry-After or the
        backoff, at least the floor: `_pause_floor_s`), in the token's shared limiter; at most the
        longest window's period, of the configured windows or Pisano's cloud's (a Pisano stricter
        than PISANO_RATE_LIMITS says still gets its wait). No window needs longer to give its
        budget back, and a Retry-After is the word of whatever answered (a gateway's day, a misread
        date): the fleet is not held past what a throttle can mean. Should Pisano still refuse
        then, its next 429 pauses the fleet again. Returns how long the fleet stays paused (this
        pause, or a longer one another replica set; the one asked for when Redis did not answer):
        the retry's next slot lies after it (0 without a throttle)."""
        self.dm.throttle_pauses.inc()
        longest_ms = max((w.period_ms for w in self.destination.limiter.windows), default=0)
        pause = min(seconds, max(longest_ms, CLOUD_LONGEST_MS) / 1000)
        try:
            return self.destination.limiter.pause(pause)
        except StateStoreError as exc:
            self.metrics.redis_errors.labels("throttle").inc()
            log.error("could not pause the fleet's throttle: %s", exc)
        return pause if self.destination.limiter.windows else 0.0

    def _pause_floor_s(self) -> float:
        """The shortest pause for a 429, whatever its Retry-After: the shortest window's period
        plus the margin, of the configured windows (none: no throttle, nothing to pause). Pisano counts in
        sliding windows, and a 429 says one of them is full at its count. The backoff alone
        (jittered, from `PISANO_RETRY_BASE_MS`: often a few milliseconds) sent the fleet straight
        back into the full window, each request heard 429 and paused the fleet for a moment again.
        The shortest window is the soonest any window can have given a slot back: the one a burst
        fills, and after its period, with nothing sent meanwhile, Pisano counts none of ours in it.
        A longer window still binding answers 429 again then, and pauses the fleet again. Not the
        limiter's own view of the windows: it granted the slot that heard 429, so Pisano counts
        differently (another client on the token, a state Redis lost); the cap (`_pause_fleet`)
        still applies, and is never shorter, the longest window being at least as long. A
        Retry-After below it (`0` from a gateway, a proxy) gets it too: whatever the 429 says, a
        window is full, and the fleet sent straight back heard 429 again."""
        windows = self.destination.limiter.windows
        if not windows:
            return 0.0
        return (min(w.period_ms for w in windows) + self.destination.limiter.margin_ms) / 1000

    def _back_off(self, delay: float, beats: Heartbeat) -> bool:
        """Wait before retrying (after a 429 the whole fleet waits too: `_pause_fleet`); False when
        stopping or a claim was lost meanwhile (`beats.lost`)."""
        return not beats.wait(delay)

    def _count(self, error: PisanoError) -> None:
        if isinstance(error, PisanoApiError):
            self.dm.requests(str(error.http_status), code_label(error.code)).inc()
        else:
            kind = "ambiguous" if getattr(error, "ambiguous", False) else "transport"
            self.dm.requests(kind, "").inc()


def _end_span(span: Any, accepted: Accepted | None, failure: PisanoError | None) -> None:
    """The attempt's answer on its span (an exception other than a PisanoError: `internal`)."""
    if accepted is not None:
        tracing.end_request(span, accepted.http_status, None, None, accepted.request_id)
    elif isinstance(failure, PisanoApiError):
        tracing.end_request(span, failure.http_status, failure.code, str(failure.http_status))
    elif isinstance(failure, SlotMissed):  # not sent: late at the wire, no error of Pisano's transport
        tracing.end_request(span, None, None, "slot_missed")
    elif isinstance(failure, PisanoTransportError):
        tracing.end_request(span, None, None, "ambiguous" if failure.ambiguous else "transport")
    else:
        tracing.end_request(span, None, None, "internal")
