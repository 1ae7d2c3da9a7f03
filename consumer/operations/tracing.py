"""Tracing of the Pisano requests, off unless OpenTelemetry is installed and configured.

With the `otel` extra installed (`pip install 'pisano-sms-consumer[otel]'`) and the standard
OpenTelemetry environment configured, every Pisano request (each attempt) is a span linked to the
W3C `traceparent` of each event it carries (`consumer/operations/otel.py` builds them).

The rule (README, "Tracing"): tracing is on when OTEL_TRACES_EXPORTER names an exporter, or, with
OTEL_TRACES_EXPORTER unset, when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
is set; it is off when OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none. The SDK's own default
exporter (OTLP to localhost) is not enough: a process nobody configured does not export anywhere.

Off, nothing of OpenTelemetry is imported and a request costs one global read
(`start_request` returns None); no event is looked at. This module never imports opentelemetry.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumer.operations.otel import RequestSpans

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
# version-traceid-parentid-flags, lowercase hex (W3C Trace Context, level 1). A later version may
# append fields after a dash; only the first 55 characters are read, and at most MAX bytes looked at.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
MAX_TRACEPARENT_BYTES = 256
_ZERO_TRACE, _ZERO_SPAN = b"0" * 32, b"0" * 16

_spans: RequestSpans | None = None


def enabled_by(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (the rule in the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER")
    if exporters is not None and exporters.strip():
        return any(e.strip().lower() not in ("", "none") for e in exporters.split(","))
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())


class Tracing:
    """What `configure` set up; `shutdown` exports the spans still buffered."""

    def __init__(self, provider: Any = None) -> None:
        self.provider = provider

    @property
    def on(self) -> bool:
        return self.provider is not None

    def shutdown(self) -> None:
        global _spans
        _spans = None
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None


def configure(consumer_group: str | None = None, environ: Mapping[str, str] | None = None) -> Tracing:
    """Turn tracing on if the environment asks for it and OpenTelemetry is installed."""
    environ = os.environ if environ is None else environ
    if not enabled_by(environ):
        return Tracing()
    try:
        otel = importlib.import_module("consumer.operations.otel")  # imports opentelemetry
    except ImportError:
        log.warning("OpenTelemetry is configured (OTEL_* settings) but not installed: no traces; install "
                    "the extra: pip install 'pisano-sms-consumer[otel]'")
        return Tracing()
    provider = otel.build_provider(environ)
    if provider is None:
        return Tracing()
    install(otel.RequestSpans(provider.get_tracer("consumer.delivery"), consumer_group))
    log.info("tracing on: a span per Pisano request, exported as OTEL_* configures")
    return Tracing(provider)


def install(spans: RequestSpans | None) -> None:
    """Use these spans for every request from now on (None: off). Tests install an SDK's own."""
    global _spans
    _spans = spans


def start_request(destination: str, server: str, campaign: str, events: Sequence[Any], attempt: int,
                  request_id: str | None = None) -> Any:
    """The span of one attempt, started; None when tracing is off (the whole cost then)."""
    spans = _spans
    if spans is None:
        return None
    try:
        return spans.start(destination, server, campaign, events, attempt, request_id)
    except Exception as exc:  # tracing must never decide a request's fate
        _failed("start", exc)
        return None


def end_request(span: Any, http_status: int | None, code: int | None, error_type: str | None,
                pisano_request_id: str | None = None) -> None:
    spans = _spans
    try:
        if spans is not None:
            spans.end(span, http_status, code, error_type, pisano_request_id)
        else:
            span.end()  # turned off while it was in flight
    except Exception as exc:
        _failed("end", exc)


_reported: set[str] = set()


def _failed(what: str, exc: Exception) -> None:
    """Once per kind of failure: a tracing error is logged, never raised into a request."""
    kind = f"{what}:{type(exc).__name__}"
    if kind not in _reported:
        _reported.add(kind)
        log.error("tracing failed to %s a span (%s); the request goes on untraced", what, type(exc).__name__)


def parse_traceparent(value: bytes | None) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a valid W3C traceparent header value, or None."""
    if value is None or len(value) > MAX_TRACEPARENT_BYTES:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version == b"00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55:56] != b"-":
        return None
    return int(trace_id, 16), int(span_id, 16), int(flags, 16)


def traceparent_of(headers: Sequence[tuple[str, bytes | None]]) -> tuple[int, int, int] | None:
    """The event's trace context, from its first `traceparent` header (names compared ignoring case)."""
    for name, value in headers:
        if len(name) == len(TRACEPARENT) and name.lower() == TRACEPARENT:
            return parse_traceparent(value)
    return None
