#!/usr/bin/env python3
"""What tracing costs per Pisano request and per event, off and on (README, "Tracing").

    python benchmarks/tracing.py

Off (the default: OTEL_* not configured, or the otel extra not installed), a request pays one
call that reads a global (`tracing.start_request` returning None) and no event is looked at. On,
a request pays a span and each event the parsing of its `traceparent` header and a link; spans
go to a no-op exporter here, so the figure is the consumer's own work, not the export.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.operations import tracing  # noqa: E402
from tests.unit.operations.test_tracing import other_parent, traced_event  # noqa: E402

ROUNDS = 200_000
BATCH = 5000


def per_call_ns(call, rounds: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter_ns()
    for _ in range(rounds):
        call()
    return (time.perf_counter_ns() - started) / rounds


def traced_request(events: list) -> None:  # type: ignore[type-arg]
    span = tracing.start_request("default", "api.pisano.co", "ae51458c-9e82-417f-8f1d-e074891ea5c1", events, 1)
    if span is not None:
        tracing.end_request(span, 200, None, None)


def main() -> None:
    events = [traced_event(i, other_parent(i)) for i in range(BATCH)]
    tracing.install(None)
    baseline = per_call_ns(lambda: None, ROUNDS)
    off = per_call_ns(lambda: traced_request(events), ROUNDS) - baseline
    print(f"tracing off: {off:.0f} ns per request of {BATCH} events ({off / BATCH:.3f} ns per event); "
          "no event is read")

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from consumer.operations.otel import RequestSpans

    class Discard(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Discard()))
    spans = RequestSpans(provider.get_tracer("bench"))
    tracing.install(spans)
    rounds = 50
    on = per_call_ns(lambda: traced_request(events), rounds)
    print(f"tracing on:  {on / 1e6:.2f} ms per request of {BATCH} events ({on / BATCH / 1000:.2f} us per event, "
          f"{BATCH} distinct traceparents, link limit {spans.max_links}: OTEL_SPAN_LINK_COUNT_LIMIT)")
    tracing.install(None)
    provider.shutdown()


if __name__ == "__main__":
    main()
