"""Tracing exported over OTLP/HTTP, as configured by the standard environment, to a small
receiver in the test that decodes what a collector would get."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from consumer.delivery.pisano import Accepted
from consumer.operations import tracing
from tests.support.fakes import CAMPAIGN, FakePisano, rig
from tests.unit.operations.test_tracing import PARENT, TRACE, VALID, traced_event


class Receiver(ThreadingHTTPServer):
    """Accepts POST /v1/traces (protobuf) as a collector does, and keeps the decoded requests."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.exports: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.content_types: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.paths.append(self.path)
        self.server.content_types.append(self.headers.get("Content-Type", ""))
        self.server.exports.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def values(attributes: list[KeyValue]) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in attributes:
        field = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, field) if field else None
    return out


def test_request_spans_reach_an_otlp_http_receiver(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    setup = tracing.configure("group-otlp")
    try:
        assert setup.on
        r = rig(FakePisano([Accepted(200, "req", 0.01)]))
        r.process([traced_event(1, VALID), traced_event(2, None)])
    finally:
        setup.shutdown()  # flushes the batch processor
    assert tracing.start_request("default", "", CAMPAIGN, [], 1) is None  # off again after shutdown
    assert receiver.paths == ["/v1/traces"] and receiver.content_types == ["application/x-protobuf"]
    (export,) = receiver.exports
    (resource_spans,) = export.resource_spans
    resource = values(list(resource_spans.resource.attributes))
    assert resource["service.name"] == "pisano-sms-consumer"
    (span,) = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span.name == "process transactions"
    attributes = values(list(span.attributes))
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.name"] == "transactions"
    assert attributes["messaging.batch.message_count"] == 2
    assert attributes["messaging.consumer.group.name"] == "group-otlp"
    assert attributes["pisano.campaign.id"] == CAMPAIGN
    assert attributes["http.response.status_code"] == 200
    (link,) = span.links
    assert link.trace_id.hex() == TRACE and link.span_id.hex() == PARENT
    assert span.parent_span_id == b""
