"""The OpenTelemetry side of `consumer/operations/tracing.py`; imported only when tracing is on.

One span per Pisano request (each attempt of a batch), after OpenTelemetry's messaging
conventions for a batch processed at once: kind CONSUMER, named `process <topic>`, with a link
(not a parent: a batch has many) to the trace context each event's producer put in its W3C
`traceparent` header. Attributes:

| attribute | value |
|---|---|
| messaging.system | kafka |
| messaging.operation.type, messaging.operation.name | process |
| messaging.destination.name | the topic, when all events of the request come from one |
| messaging.consumer.group.name | KAFKA_GROUP_ID |
| messaging.batch.message_count | events in the request |
| pisano.destination, pisano.campaign.id, pisano.attempt | the account's name, the campaign, 1.. |
| http.request.method, server.address | POST, Pisano's host |
| http.response.status_code, pisano.error.code | the answer, when one came |
| error.type | the HTTP status of a refusal, `transport` or `ambiguous` when no answer came |

Never a phone number, an event's payload, a token or Pisano's message text (which may quote the
request). The exporter, sampler, limits and resource come from the standard OTEL_* environment,
read by the SDK; only `service.name` has a default of ours (pisano-sms-consumer).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer

from consumer import __version__
from consumer.ingest.records import InboundRecord
from consumer.operations.tracing import traceparent_of

log = logging.getLogger(__name__)

SERVICE_NAME = "pisano-sms-consumer"


def build_provider(environ: Mapping[str, str]) -> TracerProvider | None:
    """A tracer provider exporting as OTEL_TRACES_EXPORTER says (default otlp), or None with a
    warning when it names an exporter this installation lacks."""
    exporters: list[SpanExporter] = []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    for name in filter(None, names):
        if name == "none":
            continue
        exporter = _exporter(name, environ)
        if exporter is None:
            return None
        exporters.append(exporter)
    if not exporters:
        return None
    attributes: dict[str, str] = {"service.version": __version__}
    if not environ.get("OTEL_SERVICE_NAME") and "service.name=" not in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.name"] = SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s: not an exporter of this installation (otlp, console); no traces",
                    name)
        return None
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: the otel extra exports OTLP over http/protobuf only; set "
                    "it to http/protobuf (the collector's port 4318); no traces", protocol)
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, TLS, compression: OTEL_EXPORTER_OTLP_*


class RequestSpans:
    """Starts and ends the span of each Pisano request (see the module docstring)."""

    def __init__(self, tracer: Tracer, consumer_group: str | None = None, max_links: int | None = None) -> None:
        self.tracer = tracer
        self.consumer_group = consumer_group
        # The SDK keeps at most OTEL_SPAN_LINK_COUNT_LIMIT links (128 by default) and drops the
        # rest: past it, no more traceparents are parsed.
        self.max_links = SpanLimits().max_links if max_links is None else max_links

    def start(self, destination: str, server: str, campaign: str, events: Sequence[Any], attempt: int,
              request_id: str | None = None) -> Span:
        links: list[Link] = []
        seen: set[tuple[int, int]] = set()
        topics: set[str] = set()
        room = self.max_links if self.max_links is not None else len(events)
        for event in events:
            message = event.message
            if not isinstance(message, InboundRecord):  # a raw message's headers may be read once only
                continue
            topics.add(message.topic())
            if len(links) >= room:
                continue
            context = traceparent_of(message.headers())
            if context is None or context[:2] in seen:
                continue
            seen.add(context[:2])
            trace_id, span_id, flags = context
            links.append(Link(SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0x01))))
        topic = next(iter(topics)) if len(topics) == 1 else None
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.batch.message_count": len(events),
            "pisano.destination": destination,
            "pisano.campaign.id": campaign,
            "pisano.attempt": attempt,
            "http.request.method": "POST",
        }
        if request_id:
            attributes["pisano.request_id"] = request_id
        if server:
            attributes["server.address"] = server
        if topic is not None:
            attributes["messaging.destination.name"] = topic
        if self.consumer_group:
            attributes["messaging.consumer.group.name"] = self.consumer_group
        return self.tracer.start_span(f"process {topic}" if topic else "process", kind=SpanKind.CONSUMER,
                                      links=links, attributes=attributes)

    def end(self, span: Span, http_status: int | None, code: int | None, error_type: str | None,
            pisano_request_id: str | None = None) -> None:
        if pisano_request_id:
            span.set_attribute("pisano.response.request_id", pisano_request_id)
        if http_status is not None:
            span.set_attribute("http.response.status_code", http_status)
        if code is not None:
            span.set_attribute("pisano.error.code", code)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            description = f"HTTP {http_status}" + (f" code {code}" if code is not None else "") \
                if http_status is not None else error_type
            span.set_status(Status(StatusCode.ERROR, description))
        span.end()
