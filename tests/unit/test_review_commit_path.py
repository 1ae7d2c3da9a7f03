"""Adversarial review of the poll loop's commit path, rebalances and backlog (h-offsets).

Each test failed on the code before its fix; the docstring says what it did."""

from __future__ import annotations

import time

from tests.support.fake_kafka import pipeline
from tests.unit.test_pipeline import MAPPER, FailingRegistry, good


def test_a_poll_loop_waiting_for_the_schema_registry_waits_in_its_poll_instead_of_spinning() -> None:
    """Records waiting for the registry's retry keep the backlog non-empty, and a non-empty backlog
    made every turn poll with a zero timeout: nothing to decode before the retry, nothing fetched
    (paused), so the loop spun. Measured: 126,721 turns and a whole core for one second, for as
    long as the registry is away (its backoff reaches 60 s), holding the GIL against the senders.
    While nothing can be decoded, a turn waits in its poll as an idle one does."""
    registry = FailingRegistry()
    loop, consumer, _ = pipeline(registry, MAPPER)
    consumer.queue = [good(n) for n in range(3)]
    timeouts: list[float] = []
    consume = consumer.consume

    def recording(num_messages: int, timeout: float) -> list:  # type: ignore[type-arg]
        timeouts.append(timeout)
        return consume(num_messages, timeout)

    consumer.consume = recording  # type: ignore[method-assign]
    loop._step()  # fetches the records; the registry refuses the first: all wait
    assert loop.backlog.waiting_for_registry and len(loop.backlog) == 3
    timeouts.clear()
    for _ in range(5):
        loop._step()
    assert min(timeouts) > 0, f"turns polled with {timeouts} while nothing could be decoded"
    # Once the retry is due, the turn decodes at once again (and the backlog is served first).
    registry.kind = None
    loop.backlog._retry_at = time.monotonic()
    timeouts.clear()
    loop._step()
    assert timeouts == [0.0] and len(loop.backlog) == 0 and loop.delivery.buffered == 3


def test_our_own_registry_request_bound_waits_in_the_poll_too() -> None:
    """`busy` (our bound on registry requests per second) asks again ~50 ms later: meanwhile the
    turns spun the same way."""
    registry = FailingRegistry()
    registry.kind = "busy"
    loop, consumer, _ = pipeline(registry, MAPPER)
    consumer.queue = [good(0)]
    loop._step()
    assert len(loop.backlog) == 1 and loop.backlog._retry_at > time.monotonic()
    timeouts: list[float] = []
    consume = consumer.consume

    def recording(num_messages: int, timeout: float) -> list:  # type: ignore[type-arg]
        timeouts.append(timeout)
        return consume(num_messages, timeout)

    consumer.consume = recording  # type: ignore[method-assign]
    loop._step()
    assert timeouts and timeouts[0] > 0
