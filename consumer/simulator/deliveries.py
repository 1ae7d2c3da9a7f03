"""What the simulator saw: the delivery log (one record per recipient) and the request log.

A delivery record says which recipient Pisano would have sent an SMS to:

    {"campaign_id", "request_id", "time" (ISO 8601 UTC), "time_ms" (epoch ms), "phone",
     "custom_attributes", "built_in_responses"}     # the phone's objects, null when not sent

In memory an accepted request is kept whole (its parsed lists and maps, no per-recipient work)
and expanded into records only when read; the oldest requests leave memory once more than
`memory_recipients` recipients are held, so long benchmarks stay bounded. When a path is set,
every accepted request is also appended to a JSONL file in one write before the answer goes out,
so another process can follow it; the file is never truncated, not even by a reset.

A request record exists for every request, rejected ones included, so tests can check batch
sizes, send times and window compliance: see `RequestRecord`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from consumer.simulator.validation import AttributeMap

MAX_REQUEST_RECORDS = 100_000  # the newest are kept; a benchmark's worth

# json.dumps sets up a fresh C encoder on every call; at two calls per recipient that setup
# costs more than the encoding (JSONL for 5000 recipients: 15 ms with json.dumps, 7 ms here),
# enough to drop the simulator well below 50 requests/s with the JSONL log on. So the C encoder
# behind json.dumps (CPython's accelerator; not in typeshed) is set up once and reused. Its
# output is json.dumps's, which test_simulator_deliveries checks.
_encode_parts = c_make_encoder(
    None,  # no circular check: the objects come from json.loads
    None,  # no default: json.loads makes only JSON types
    encode_basestring_ascii,
    None,  # no indent
    ": ",
    ", ",
    False,  # sort_keys
    False,  # skipkeys
    True,  # allow_nan, as json.dumps (json.loads accepts NaN)
)


def _encode(obj: object) -> str:
    return "".join(_encode_parts(obj, 0))


def iso_utc(wall_ns: int) -> str:
    moment = datetime.fromtimestamp(wall_ns / 1e9, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DeliveredRequest:
    """The recipients of one accepted request."""

    request_id: str
    campaign_id: str
    time: str
    time_ms: int
    phones: list[str]
    custom_attributes: AttributeMap
    built_in_responses: AttributeMap

    def records(self) -> Iterator[dict[str, Any]]:
        for phone in self.phones:
            yield {
                "campaign_id": self.campaign_id,
                "request_id": self.request_id,
                "time": self.time,
                "time_ms": self.time_ms,
                "phone": phone,
                "custom_attributes": self.custom_attributes.get(phone),
                "built_in_responses": self.built_in_responses.get(phone),
            }

    def jsonl(self) -> str:
        """The records as JSONL, each line as json.dumps would write it, in record order."""
        head = _encode(
            {
                "campaign_id": self.campaign_id,
                "request_id": self.request_id,
                "time": self.time,
                "time_ms": self.time_ms,
            }
        )[:-1]
        attributes = self.custom_attributes.get
        responses = self.built_in_responses.get
        # Validation let through only [+0-9 ] in a phone: it needs no JSON escaping.
        return "".join(
            [
                f'{head}, "phone": "{phone}", "custom_attributes": {_encode(attributes(phone))}, '
                f'"built_in_responses": {_encode(responses(phone))}}}\n'
                for phone in self.phones
            ]
        )


class DeliveryLog:
    def __init__(self, path: Path | None, memory_recipients: int) -> None:
        self.path = path
        self._memory_recipients = memory_recipients
        self._kept: deque[DeliveredRequest] = deque()
        self._kept_recipients = 0
        self.recipients = 0  # delivered since the last reset
        self.dropped_from_memory = 0

    def append(self, delivered: DeliveredRequest) -> None:
        count = len(delivered.phones)
        self.recipients += count
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as file:
                file.write(delivered.jsonl())
        self._kept.append(delivered)
        self._kept_recipients += count
        while self._kept_recipients > self._memory_recipients and self._kept:
            oldest = self._kept.popleft()
            self._kept_recipients -= len(oldest.phones)
            self.dropped_from_memory += len(oldest.phones)

    def records(self, campaign_id: str | None = None) -> list[dict[str, Any]]:
        return [record for delivered in self._held(campaign_id) for record in delivered.records()]

    def jsonl(self, campaign_id: str | None = None) -> str:
        return "".join(delivered.jsonl() for delivered in self._held(campaign_id))

    def _held(self, campaign_id: str | None) -> list[DeliveredRequest]:
        return [d for d in self._kept if campaign_id is None or d.campaign_id == campaign_id]

    def clear(self) -> None:
        self._kept.clear()
        self._kept_recipients = 0
        self.recipients = 0
        self.dropped_from_memory = 0


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator handled it."""

    request_id: str
    token: str | None  # fingerprint of the presented token (see redact), None without one
    campaign_id: str
    recipients: int | None  # phone_numbers in the body; None when not read or not a list
    time: str  # wall clock, ISO 8601 UTC
    time_ms: int  # wall clock, epoch ms
    clock_ns: int  # the simulator's monotonic clock, the one the throttle counts with
    http_status: int | None  # None: no answer was sent (hang faults)
    code: int | None  # Pisano code of the answer, None for 200 and code-less errors
    fault: str | None  # the injected fault that decided the answer, if any
    retry_after_s: int | None = None  # for 429

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    def __init__(self) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=MAX_REQUEST_RECORDS)

    def append(self, record: RequestRecord) -> None:
        self._records.append(record)

    def records(self, campaign_id: str | None = None) -> list[dict[str, Any]]:
        return [
            r.to_dict()
            for r in list(self._records)
            if campaign_id is None or r.campaign_id == campaign_id
        ]

    def clear(self) -> None:
        self._records.clear()
