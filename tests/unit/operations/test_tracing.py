"""Tracing (README, "Tracing"): the rule that turns it on, the traceparent parser, and the spans of
Pisano requests, exported by the SDK's in-memory exporter."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from consumer.delivery.batching import PendingEvent
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, PisanoTransportError
from consumer.ingest.mapping import Recipient
from consumer.ingest.records import InboundRecord
from consumer.operations import tracing
from consumer.operations.otel import RequestSpans
from tests.support.fakes import CAMPAIGN, FakePisano, rig

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01".encode()


def traced_event(i: int, traceparent: bytes | None, topic: str = "transactions") -> PendingEvent:
    headers = [("traceparent", traceparent)] if traceparent is not None else []
    message = InboundRecord(topic, 0, i, f"e{i}".encode(), b"value", headers, (1, 0))
    recipient = Recipient(event_id=f"e{i}", campaign_id=CAMPAIGN, phone=f"+9053212{i:05d}")
    return PendingEvent(message=message, tp=(topic, 0), offset=i, epoch=0, recipient=recipient, enqueued_at=0.0)


def other_parent(i: int) -> bytes:
    return f"00-{i + 1:032x}-{i + 1:016x}-01".encode()


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(RequestSpans(provider.get_tracer("test"), "group-1"))
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
])
def test_tracing_is_on_only_when_the_environment_configures_an_exporter(environ: dict[str, str], on: bool) -> None:
    assert tracing.enabled_by(environ) is on


def test_unconfigured_tracing_stays_off_and_requests_get_no_span() -> None:
    setup = tracing.configure(environ={})
    assert not setup.on
    assert tracing.start_request("default", "pisano.test", CAMPAIGN, [traced_event(1, VALID)], 1) is None


def test_configured_but_not_installed_warns_and_stays_off(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "consumer.operations.otel", None)  # as if opentelemetry were missing
    setup = tracing.configure(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not setup.on
    assert "pip install 'pisano-sms-consumer[otel]'" in caplog.text


def test_an_unknown_exporter_or_grpc_warns_and_stays_off(caplog: pytest.LogCaptureFixture) -> None:
    assert not tracing.configure(environ={"OTEL_TRACES_EXPORTER": "zipkin"}).on
    assert not tracing.configure(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                                          "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}).on
    assert "zipkin" in caplog.text and "http/protobuf" in caplog.text


@pytest.mark.parametrize(("value", "parsed"), [
    (VALID, (int(TRACE, 16), int(PARENT, 16), 1)),
    (f"00-{TRACE}-{PARENT}-00".encode(), (int(TRACE, 16), int(PARENT, 16), 0)),
    (f"01-{TRACE}-{PARENT}-01-future".encode(), (int(TRACE, 16), int(PARENT, 16), 1)),  # a later version
    (f"00-{TRACE}-{PARENT}-01-extra".encode(), None),  # version 00 is exactly 55 characters
    (f"ff-{TRACE}-{PARENT}-01".encode(), None),  # version ff is invalid
    (f"00-{'0' * 32}-{PARENT}-01".encode(), None),
    (f"00-{TRACE}-{'0' * 16}-01".encode(), None),
    (f"00-{TRACE.upper()}-{PARENT}-01".encode(), None),
    (f"00-{TRACE}-{PARENT}".encode(), None),
    (b"\xff\xfe garbage", None),
    (b"", None),
    (None, None),
    (f"01-{TRACE}-{PARENT}-01-".encode() + b"x" * 300, None),  # bounded
])
def test_traceparent_values_are_validated(value: bytes | None, parsed: tuple[int, int, int] | None) -> None:
    assert tracing.parse_traceparent(value) == parsed


def test_a_request_span_links_each_events_trace_and_follows_messaging_conventions(
        exported: InMemorySpanExporter) -> None:
    events = [traced_event(0, VALID), traced_event(1, VALID), traced_event(2, other_parent(2)),
              traced_event(3, b"not-a-traceparent"), traced_event(4, None)]
    r = rig(FakePisano([Accepted(200, "pisano-req-1", 0.01)]))
    r.process(events)
    assert r.kinds() == {f"e{i}": {"delivered"} for i in range(5)}
    (span,) = exported.get_finished_spans()
    (delivered,) = [o for o in r.outcomes if o.kind == "delivered"]
    assert span.name == "process transactions" and span.kind is SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "transactions",
        "messaging.consumer.group.name": "group-1",
        "messaging.batch.message_count": 5,
        "pisano.destination": "default",
        "pisano.campaign.id": CAMPAIGN,
        "pisano.attempt": 1,
        "pisano.request_id": delivered.request_id,  # as in the request's log line and receipt
        "pisano.response.request_id": "pisano-req-1",
        "http.request.method": "POST",
        "http.response.status_code": 200,
    }
    # Links, not a parent: one per distinct producer context; malformed or missing ones are skipped.
    assert span.parent is None
    linked = [(link.context.trace_id, link.context.span_id, link.context.trace_flags.sampled) for link in span.links]
    assert linked == [(int(TRACE, 16), int(PARENT, 16), True), (3, 3, True)]
    assert all(link.context.is_remote for link in span.links)
    text = repr(span.to_json())
    assert "+905321" not in text and "value" not in text  # no phone, no payload


def test_each_attempt_is_a_span_with_its_answer(exported: InMemorySpanExporter) -> None:
    answers = [PisanoApiError(503, None, "Service Unavailable"), PisanoTransportError("refused", ambiguous=False),
               Accepted(200, "req", 0.01)]
    r = rig(FakePisano(list(answers)))
    r.process([traced_event(7, VALID)])
    spans = exported.get_finished_spans()
    assert [s.attributes["pisano.attempt"] for s in spans] == [1, 2, 3]  # type: ignore[index]
    first, second, third = spans
    assert first.attributes["http.response.status_code"] == 503  # type: ignore[index]
    assert first.attributes["error.type"] == "503"  # type: ignore[index]
    assert first.status.status_code is StatusCode.ERROR and first.status.description == "HTTP 503"
    assert "http.response.status_code" not in (second.attributes or {})
    assert second.attributes["error.type"] == "transport"  # type: ignore[index]
    assert third.status.status_code is StatusCode.UNSET and "error.type" not in (third.attributes or {})


def test_a_refusal_carries_pisanos_code_but_not_its_message(exported: InMemorySpanExporter) -> None:
    refusal = PisanoApiError(400, 13028, "Invalid parameters: +905321200001")
    r = rig(FakePisano(default=refusal), max_attempts=1)
    r.process([traced_event(1, VALID)])
    span = exported.get_finished_spans()[0]
    assert span.attributes["pisano.error.code"] == 13028  # type: ignore[index]
    assert span.status.description == "HTTP 400 code 13028"
    assert "+905321" not in repr(span.to_json())


def test_events_without_a_snapshot_are_not_read(exported: InMemorySpanExporter) -> None:
    from tests.support.fakes import event

    rig().process([event(1), event(2)])  # raw messages (here None): headers never read a second time
    (span,) = exported.get_finished_spans()
    assert span.links == () or list(span.links) == []
    assert span.name == "process" and span.attributes["messaging.batch.message_count"] == 2  # type: ignore[index]


def test_links_stop_at_the_sdks_limit() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(RequestSpans(provider.get_tracer("test"), max_links=2))
    try:
        rig().process([traced_event(i, other_parent(i)) for i in range(5)])
    finally:
        tracing.install(None)
    (span,) = exporter.get_finished_spans()
    assert [link.context.trace_id for link in span.links] == [1, 2]
    assert span.attributes["messaging.batch.message_count"] == 5  # type: ignore[index]


class BrokenSpans:
    def start(self, *args: object) -> object:
        raise RuntimeError("exporter bug")

    def end(self, *args: object) -> None:
        raise RuntimeError("exporter bug")


def test_a_tracing_failure_never_touches_the_request(caplog: pytest.LogCaptureFixture) -> None:
    tracing._reported.clear()
    tracing.install(BrokenSpans())  # type: ignore[arg-type]
    try:
        r = rig()
        r.process([traced_event(1, VALID), traced_event(2, VALID)])
        r.process([traced_event(3, VALID)])
    finally:
        tracing.install(None)
    assert r.kinds() == {"e1": {"delivered"}, "e2": {"delivered"}, "e3": {"delivered"}}
    assert caplog.text.count("tracing failed to start a span") == 1
    tracing.end_request(BrokenSpans(), 200, None, None)  # a span that cannot end: logged, not raised
    assert "tracing failed to end a span" in caplog.text


def test_a_request_not_sent_for_its_slot_is_no_transport_error_on_its_span(exported: InMemorySpanExporter) -> None:
    """A POST found late at the wire (SlotMissed) sent nothing, yet its span said `transport`, as a
    connection Pisano broke: a dashboard of Pisano's transport errors counted the replica's CPU."""
    import time

    from tests.support.fakes import windows_limiter

    stalls = [0.4]  # past the lateness allowed (250 ms)
    r = rig(FakePisano(on_wire=lambda: time.sleep(stalls.pop()) if stalls else None),
            limiter=windows_limiter("20/1s"))
    r.process([traced_event(7, VALID)])
    missed, sent = exported.get_finished_spans()
    assert missed.attributes["error.type"] == "slot_missed"  # type: ignore[index]
    assert sent.status.status_code is StatusCode.UNSET and "error.type" not in (sent.attributes or {})
    assert [s.attributes["pisano.attempt"] for s in (missed, sent)] == [1, 1]  # type: ignore[index]
