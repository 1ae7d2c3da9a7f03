"""The pipeline's boundary (issue 10, item 4): whatever the mapper returns, only a recipient that
Pisano and Redis can take goes on; anything else dead-letters that event alone."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.errors import DecodeError, InvalidEventError, OversizeError, RecordError, UnroutableError
from consumer.ingest.intake import check_recipient, decode_and_map
from consumer.ingest.mapping import Mapper, Recipient
from consumer.ingest.records import InboundRecord, read_headers
from consumer.outcomes.deadletter import error_text

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


def recipient(**overrides: Any) -> Recipient:
    fields: dict[str, Any] = {"event_id": "e1", "campaign_id": CAMPAIGN, "phone": "+905321234567",
                              "custom_attributes": {"name": "Ayşe", "n": 3, "x": 1.5, "ok": True, "none": None}}
    fields.update(overrides)
    return Recipient(**fields)


def test_a_good_recipient_passes() -> None:
    assert check_recipient(recipient()).event_id == "e1"
    assert check_recipient(recipient(phone="05321234567")).phone == "05321234567"  # phone_format: national


@pytest.mark.parametrize(("overrides", "error"), [
    ({"custom_attributes": {"when": datetime(2026, 1, 1, tzinfo=UTC)}}, InvalidEventError),
    ({"custom_attributes": {"nested": {"a": 1}}}, InvalidEventError),
    ({"custom_attributes": {"list": [1, 2]}}, InvalidEventError),
    ({"custom_attributes": {"nan": float("nan")}}, InvalidEventError),
    ({"custom_attributes": {"inf": float("inf")}}, InvalidEventError),
    ({"custom_attributes": {"big": 10**5000}}, InvalidEventError),
    ({"custom_attributes": {"long": "x" * 5000}}, InvalidEventError),
    ({"custom_attributes": {"surrogate": "\ud800"}}, InvalidEventError),
    ({"custom_attributes": {f"k{n}": "v" for n in range(10_000)}}, InvalidEventError),
    ({"custom_attributes": {7: "v"}}, InvalidEventError),
    ({"built_in_responses": {"b": b"bytes"}}, InvalidEventError),
    ({"custom_attributes": None}, InvalidEventError),
    ({"event_id": "x" * 10_000}, InvalidEventError),
    ({"event_id": ""}, InvalidEventError),
    ({"event_id": 42}, InvalidEventError),
    ({"phone": "+90 541 ABC 45 67"}, InvalidEventError),
    ({"phone": "+90 532 123 45 67"}, InvalidEventError),
    ({"phone": None}, InvalidEventError),
    ({"campaign_id": "../../admin"}, UnroutableError),
    ({"campaign_id": "{ae51458c-9e82-417f-8f1d-e074891ea5c1}"}, UnroutableError),
    ({"campaign_id": "urn:uuid:ae51458c-9e82-417f-8f1d-e074891ea5c1"}, UnroutableError),
    ({"campaign_id": "ae51458c9e82417f8f1de074891ea5c1"}, UnroutableError),
    ({"campaign_id": None}, UnroutableError),
    ({"event_time_ms": datetime(2026, 1, 1, tzinfo=UTC)}, InvalidEventError),  # an Avro timestamp passed on
    ({"event_time_ms": 1.7e12}, InvalidEventError),
    ({"event_time_ms": "2026-01-01T00:00:00Z"}, InvalidEventError),
    ({"event_time_ms": True}, InvalidEventError),
    ({"event_time_ms": 10**30}, InvalidEventError),
])
def test_violations_are_refused(overrides: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        check_recipient(recipient(**overrides))


def test_not_a_recipient_at_all() -> None:
    with pytest.raises(InvalidEventError, match="not a Recipient"):
        check_recipient({"event_id": "e1"})


class Identity:
    def decode(self, value: bytes) -> Mapping[str, Any]:
        return {"value": value}


class ReturnsDatetime(Mapper):
    """The item 4 trigger: a custom mapper returning a datetime attribute."""

    def map(self, record: Mapping[str, Any]) -> Recipient:
        return recipient(custom_attributes={"when": datetime.now(UTC)})


class Raises(Mapper):
    def map(self, record: Mapping[str, Any]) -> Recipient:
        raise RecursionError("maximum recursion depth exceeded")


def record(value: bytes | None, header_error: str | None = None) -> InboundRecord:
    return InboundRecord("t", 0, 1, None, value, [], (1, 0), header_error)


def test_the_guard_turns_every_failure_into_a_reason() -> None:
    with pytest.raises(InvalidEventError, match="JSON scalar"):
        decode_and_map(record(b"x"), Identity(), ReturnsDatetime(), 1024)
    with pytest.raises(RecordError, match="RecursionError"):
        decode_and_map(record(b"x"), Identity(), Raises(), 1024)
    with pytest.raises(OversizeError):
        decode_and_map(record(b"x" * 2000), Identity(), Raises(), 1024)
    with pytest.raises(DecodeError, match="tombstone"):
        decode_and_map(record(None), Identity(), Raises(), 1024)
    with pytest.raises(DecodeError, match="header"):
        decode_and_map(record(b"x", "a header could not be read"), Identity(), Raises(), 1024)


class HostileHeaders:
    """A message whose header names are not UTF-8: confluent_kafka raises SystemError, and a second
    call on the same message crashes the interpreter, which this fake turns into a test failure."""

    calls = 0

    def headers(self) -> Any:
        self.calls += 1
        if self.calls > 1:
            pytest.fail("Message.headers() called twice on a message whose headers raised")
        raise SystemError("<built-in method headers> returned a result with an exception set")

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 5

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


def test_headers_are_read_once_and_safely() -> None:
    message = HostileHeaders()
    snapshot = InboundRecord.of(message)
    assert snapshot.header_error is not None and list(snapshot.headers()) == []
    assert list(snapshot.headers()) == [] and InboundRecord.of(snapshot) is snapshot
    assert message.calls == 1
    assert read_headers(type("M", (), {"headers": lambda self: [(b"\xff", b"v")]})())[1] is not None


def test_reading_the_dead_letter_topic_survives_header_names_that_are_not_utf8() -> None:
    from consumer.outcomes.deadletter import DeadLetterQueue, Failure
    from consumer.sre.dlq_read import MalformedDeadLetter, parse_dead_letter

    message = HostileHeaders()
    with pytest.raises(MalformedDeadLetter):  # refused with a reason, not a crash
        parse_dead_letter(message)
    assert message.calls == 1

    class RefusingOnce:
        def __init__(self) -> None:
            self.calls = 0

        def produce(self, *args: Any, **kwargs: Any) -> None:
            self.calls += 1
            if self.calls == 1:
                raise BufferError  # produced again later: the headers must not be read again

        def poll(self, timeout: float = 0) -> int:
            return 0

    message = HostileHeaders()
    dlq = DeadLetterQueue(RefusingOnce(), "dlq")
    dlq.send(message, Failure("decode_error", "bad"), lambda: None)
    dlq._retry.all_due_now()
    dlq.poll()
    assert message.calls == 1


def test_a_record_older_than_the_horizon_minus_the_margin_is_stale_before_anything_else() -> None:
    from consumer.errors import StaleRecordError

    now = 10_000_000_000
    def record(timestamp: int) -> InboundRecord:
        return InboundRecord("t", 0, 1, b"k", b"not avro", [], (1, timestamp))

    class Untouched:
        def decode(self, value: bytes) -> Any:
            raise AssertionError("a stale record is never decoded")

    with pytest.raises(StaleRecordError) as caught:
        decode_and_map(record(now - 3_600_001), Untouched(), Mapper(), 1 << 20,  # type: ignore[arg-type]
                       stale_after_ms=3_600_000, now_ms=now)
    assert caught.value.reason == "stale" and "replay it only if" in str(caught.value)
    with pytest.raises(DecodeError):  # young enough: goes on to decoding
        decode_and_map(record(now - 3_600_000), _Failing(), Mapper(), 1 << 20,  # type: ignore[arg-type]
                       stale_after_ms=3_600_000, now_ms=now)
    with pytest.raises(DecodeError):  # no timestamp: no age to judge
        decode_and_map(record(-1), _Failing(), Mapper(), 1 << 20,  # type: ignore[arg-type]
                       stale_after_ms=3_600_000, now_ms=now)


class _Failing:
    def decode(self, value: bytes) -> Any:
        raise DecodeError("not avro")


class RaisesQuoting(Mapper):
    """A plug-in mapper whose error quotes what it failed on: its CRM's URL, a record's phone."""

    def __init__(self, text: str) -> None:
        self.text = text

    def map(self, record: Mapping[str, Any]) -> Recipient:
        raise ConnectionError(self.text)


# The mapper's error is cut to 400 characters before anything redacts it; "the mapper failed:
# ConnectionError: " comes before it in the message.
@pytest.mark.parametrize(("quoted", "kept_back"), [
    ("https://crm:CrmSecret-9f2a7c@crm.bank.internal/v1/customers", "CrmSec"),  # cut inside the password
    ("redis://default:RedisSecret-4e1d@crm-cache:6379/0", "RedisSec"),
    ("+90 532 123 45 67", "532"),  # cut after `+90 532`: five digits, too few to be read as a number
])
def test_a_mapper_error_cut_inside_a_url_or_a_number_shows_no_part_of_it(quoted: str, kept_back: str) -> None:
    """Found in review: the mapper's error was cut at 400 characters before the dead-letter
    header's redaction saw it, so a cut inside a URL's user info (no `@` left to say it is one) or a
    number (too few digits left to be one) put the password's or the number's first part in clear."""
    cut_at = quoted.index(kept_back) + len(kept_back)
    text = "lookup failed " + "x" * (400 - len("lookup failed ") - cut_at - 1) + " " + quoted
    assert len(text[:400]) == 400 and text[:400].endswith(quoted[:cut_at])
    with pytest.raises(RecordError) as failed:
        decode_and_map(record(b"x"), Identity(), RaisesQuoting(text), 1024)
    header = error_text(str(failed.value))
    assert kept_back not in header, header
    assert header.startswith("the mapper failed: ConnectionError: lookup failed xxx")


class _Quoting(Mapper):
    """A plug-in mapper whose recipient carries what a record gave it."""

    def __init__(self, recipient: Recipient) -> None:
        self.recipient = recipient

    def map(self, record: Mapping[str, Any]) -> Recipient:
        return self.recipient


# A record's value quoted at 64 characters before the redaction sees it: `+90 532` at the cut
# (five digits) is too few to be read as a number, and went out in clear (found by review).
_CUT_INSIDE_A_NUMBER = "x" * 56 + " +90 532 123 45 67"


def test_a_record_s_attribute_name_quoted_short_shows_no_part_of_a_number() -> None:
    recipient = Recipient("e-1", "ae51458c-9e82-417f-8f1d-e074891ea5c1", "+905321234567",
                          {_CUT_INSIDE_A_NUMBER: ["not", "a", "scalar"]})  # type: ignore[dict-item]
    with pytest.raises(InvalidEventError) as failed:
        decode_and_map(record(b"x"), Identity(), _Quoting(recipient), 1024)
    assert "532" not in error_text(str(failed.value)), str(failed.value)


@pytest.mark.parametrize("spec", [
    {"event_id": "id", "phone": "phone", "campaign_id": "campaign"},  # the campaign quoted
    {"event_id": "id", "phone": "phone",  # the route's key quoted
     "campaign_routes": {"field": "campaign", "routes": {"LOAN": "ae51458c-9e82-417f-8f1d-e074891ea5c1"}}},
])
def test_a_record_s_campaign_or_route_key_quoted_short_shows_no_part_of_a_number(spec: dict[str, Any]) -> None:
    from consumer.ingest.mapping import DeclarativeMapper

    mapper = DeclarativeMapper(spec)
    with pytest.raises(UnroutableError) as failed:
        mapper.map({"id": "e-1", "phone": "+905321234567", "campaign": _CUT_INSIDE_A_NUMBER})
    assert "532" not in error_text(str(failed.value)), str(failed.value)
