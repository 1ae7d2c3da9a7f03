"""The dead-letter topic: failed records, untouched, with headers saying why (README, "Dead-letter records").

The producer is idempotent with `acks=all`, and a record's offset is only committed once its
dead-letter is acknowledged: the caller's `on_done` runs from the delivery report. A failed
delivery is produced again after a backoff, for ever: the dead-letter topic being down stops
commits (the consumer pauses on its full buffers), it never loses a record.

Reasons (`dlq.reason`):
    pisano_error       Pisano refused the request (pisano.error.code / pisano.http.status say how)
    throttled          still throttled (429) when the attempts or the retry budget ran out
    retries_exhausted  retriable answers (500, 503, 408, a 502 from Pisano itself) until the
                       attempts or the budget ran out
    transport_error    no answer until the attempts or the budget ran out: the request could not be
                       sent (connection refused, connect timeout, TLS handshake failed)
    ambiguous          the request may have reached Pisano (read timeout, 504, a gateway's 502,
                       crash before the outcome was recorded): not resent automatically; replay once checked
    decode_error       the value is not Avro for the schema (or unknown schema id, truncated)
    oversize           the value is larger than MAX_MESSAGE_BYTES
    invalid_event      no event id, no phone, or a phone that is not a valid number
    unroutable         no campaign for the event (no campaign id, no route, not a campaign id)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

REASONS = ("pisano_error", "throttled", "retries_exhausted", "transport_error", "ambiguous",
           "decode_error", "oversize", "invalid_event", "unroutable", "internal_error")
# Headers this consumer writes; a replayed record that fails again gets fresh ones.
OWN_HEADER_PREFIXES = ("pisano.", "dlq.")
REPLAYS_HEADER = "dlq.replays"
MAX_MESSAGE_CHARS = 1000
RETRY_BACKOFF_S = (0.5, 1, 2, 5, 10, 30)
SMALL_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    code: int | None = None
    http_status: int | None = None
    campaign_id: str | None = None
    attempts: int = 0


def header_value(headers: list[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


def replay_count(message: Any) -> int:
    """The record's dlq.replays header; anything but a plain number counts as 0 (it is input)."""
    value = header_value(message.headers(), REPLAYS_HEADER)
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 10 else 0


def dead_letter_headers(message: Any, failure: Failure, failed_at: datetime | None = None) -> list[tuple[str, bytes]]:
    original = [(k, v if v is not None else b"") for k, v in (message.headers() or [])
                if not k.startswith(OWN_HEADER_PREFIXES)]
    _, timestamp = message.timestamp()
    added: dict[str, str | int | None] = {
        "pisano.error.code": failure.code,
        "pisano.http.status": failure.http_status,
        "pisano.error.message": failure.message[:MAX_MESSAGE_CHARS],
        "dlq.reason": failure.reason,
        "dlq.original.topic": message.topic(),
        "dlq.original.partition": message.partition(),
        "dlq.original.offset": message.offset(),
        "dlq.original.timestamp": timestamp if timestamp and timestamp > 0 else None,
        "dlq.campaign.id": failure.campaign_id,
        "dlq.attempts": failure.attempts,
        "dlq.failed.at": (failed_at or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        REPLAYS_HEADER: replay_count(message),
    }
    return original + [(k, str(v).encode()) for k, v in added.items() if v is not None]


@dataclass
class _Pending:
    message: Any
    failure: Failure
    on_done: Callable[[], None]
    attempts: int = 0
    omit_value: bool = False
    sent_alone: bool = False  # retried once with its value after a batch it was in was too large
    not_before: float = 0.0


class DeadLetterQueue:
    """Produces dead-letters; `poll()` must be called from the poll loop (delivery reports)."""

    def __init__(self, producer: Any, topic: str, on_failure: Callable[[], None] | None = None) -> None:
        self.producer = producer
        self.topic = topic
        self.in_flight = 0
        self._retry: list[_Pending] = []
        self._on_failure = on_failure

    def send(self, message: Any, failure: Failure, on_done: Callable[[], None]) -> None:
        self.in_flight += 1
        self._produce(_Pending(message, failure, on_done))

    def poll(self, timeout: float = 0.0) -> None:
        self.producer.poll(timeout)
        if self._retry:
            now = time.monotonic()
            due = [p for p in self._retry if p.not_before <= now]
            self._retry = [p for p in self._retry if p.not_before > now]
            for pending in due:
                self._produce(pending)

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` for every dead-letter to be acknowledged."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            self.poll(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.in_flight == 0

    def _produce(self, pending: _Pending) -> None:
        message = pending.message
        headers = dead_letter_headers(message, pending.failure)
        value = message.value()
        if pending.omit_value:
            headers.append(("dlq.value.omitted", str(len(value or b"")).encode()))
            value = b""
        try:
            self.producer.produce(
                self.topic, key=message.key(), value=value, headers=headers,
                on_delivery=lambda err, _msg: self._delivered(pending, err),
            )
        except BufferError:
            self._later(pending, "the producer queue is full")
        except Exception as exc:  # KafkaException for a record the client refuses outright
            if "MSG_SIZE_TOO_LARGE" in str(exc) and not pending.omit_value:
                pending.omit_value = True
                self._produce(pending)
            else:
                pending.omit_value = False
                self._later(pending, str(exc))

    def _delivered(self, pending: _Pending, err: KafkaError | None) -> None:
        if err is None:
            self.in_flight -= 1
            pending.on_done()
            return
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and not pending.omit_value and not pending.sent_alone \
                and len(pending.message.value() or b"") < SMALL_RECORD_BYTES:
            # The broker refuses a whole producer batch when it is too large: a small record
            # may just have shared one with a large record. Once more, with its value.
            # (The large neighbour goes again without its value, so they cannot fail together twice.)
            pending.sent_alone = True
            self._produce(pending)
            return
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and not pending.omit_value:
            # The dead-letter topic takes smaller records than the source; keep the headers (and
            # the source offset) rather than nothing. The value is still in the source topic.
            log.warning("dead-letter too large for %s; sending it without its value", self.topic,
                        extra=_context(pending.message))
            pending.omit_value = True
            self._produce(pending)
            return
        # Refused even without its value: the topic is misconfigured, not our record too large.
        # Keep the value for the next attempt, once someone fixed the topic.
        pending.omit_value = False
        self._later(pending, err.str())

    def _later(self, pending: _Pending, why: str) -> None:
        backoff = RETRY_BACKOFF_S[min(pending.attempts, len(RETRY_BACKOFF_S) - 1)]
        pending.attempts += 1
        pending.not_before = time.monotonic() + backoff
        self._retry.append(pending)
        if self._on_failure:
            self._on_failure()
        log.error("dead-letter to %s failed (%s); producing it again in %.1fs, offsets wait", self.topic, why,
                  backoff, extra=_context(pending.message))


def _context(message: Any) -> dict[str, Any]:
    return {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}
