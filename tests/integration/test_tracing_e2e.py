"""Tracing end to end (README, "Tracing"): events produced with W3C `traceparent` headers, one
replica configured by the standard OTEL_* environment, and a small OTLP/HTTP receiver: each
request's span links the contexts of the events it carried, and nothing else gets out."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.fakes import CAMPAIGN
from tests.support.runs import Run
from tests.unit.operations.test_tracing_otlp import Receiver, receiver, values  # noqa: F401 (fixture)

GROUPS = 5
PER_GROUP = 40


def traceparent(group: int) -> bytes:
    return f"00-{group + 1:032x}-{group + 101:016x}-01".encode()


@pytest.fixture
def no_inherited_otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_request_spans_link_the_events_trace_contexts(run: Run, new_topic: Callable[..., str],
                                                      receiver: Receiver,  # noqa: F811
                                                      no_inherited_otel: None) -> None:
    run.start([], new_topics=new_topic, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
              OTEL_SPAN_LINK_COUNT_LIMIT=1000, OTEL_BSP_SCHEDULE_DELAY=200, BATCH_MAX_WAIT_MS=500)
    from tests.support.kafka import produce

    for group in range(GROUPS):
        produce(run.stack.bootstrap, run.topic, run.events(PER_GROUP, CAMPAIGN),
                headers=[("traceparent", traceparent(group))])
    produce(run.stack.bootstrap, run.topic, run.events(PER_GROUP, CAMPAIGN),
            headers=[("traceparent", b"00-not-a-valid-context")])
    run.finish(dead_letters=0)  # SIGTERM: the replica flushes its spans before exiting
    assert sum(run.delivered().values()) == (GROUPS + 1) * PER_GROUP

    spans = [s for export in receiver.exports for rs in export.resource_spans for scope in rs.scope_spans
             for s in scope.spans]
    assert spans, "no span exported"
    assert {s.name for s in spans} == {f"process {run.topic}"}
    linked = {(link.trace_id.hex(), link.span_id.hex()) for s in spans for link in s.links}
    assert linked == {(f"{g + 1:032x}", f"{g + 101:016x}") for g in range(GROUPS)}
    carried = sum(values(list(s.attributes))["messaging.batch.message_count"] for s in spans)  # type: ignore[misc]
    assert carried == (GROUPS + 1) * PER_GROUP  # no retries here: one span per request
    for span in spans:
        attributes = values(list(span.attributes))
        assert attributes["messaging.consumer.group.name"] == run.group
        assert attributes["http.response.status_code"] == 200 and attributes["server.address"] == "127.0.0.1"
    exported = b"".join(export.SerializeToString() for export in receiver.exports)
    assert b"+905" not in exported and run.token.encode() not in exported
