"""A request is counted against the throttle when it arrives, not when the simulator gets to it.

Pisano's servers take requests in parallel; a simulator that decided one request at a time on its
event loop stamped a burst's last request after the work of deciding the ones before it (tens of
milliseconds each for 5,000 recipients on a busy machine), which made a fleet that kept its
throttle margin look as if it broke a window.
"""

from __future__ import annotations

import threading

import httpx

from consumer.config.windows import parse_rate_limits
from consumer.simulator.clock import ManualClock
from consumer.simulator.config import SimulatorConfig
from consumer.simulator.server import SimulatorServer

MS = 1_000_000
TOKEN = "arrival-token"


class StampedClock(ManualClock):
    """A ManualClock that says when it has been read: the simulator reads it once per request,
    to stamp the request's arrival."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = threading.Semaphore(0)

    def monotonic_ns(self) -> int:
        self.reads.release()
        return super().monotonic_ns()


def test_a_request_is_stamped_on_arrival_while_an_earlier_one_is_still_being_decided() -> None:
    clock = StampedClock()
    config = SimulatorConfig(tokens=frozenset({TOKEN}), any_campaign=True, rate_limits=parse_rate_limits("1/1s"))
    release, deciding = threading.Event(), threading.Event()
    with SimulatorServer(config, clock=clock) as simulator:
        append = simulator.state.deliveries.append

        def slow_append(request):  # type: ignore[no-untyped-def]
            deciding.set()
            release.wait(30)  # the first request's decision takes as long as the test says
            append(request)

        simulator.state.deliveries.append = slow_append  # type: ignore[method-assign]
        post = lambda phone: httpx.post(  # noqa: E731
            f"{simulator.url}/v1/sms_campaigns/c/sms_sharings", json={"phone_numbers": [phone]},
            headers={"Authorization": f"Token token={TOKEN}"}, timeout=20).status_code
        answers: list[int] = []
        first = threading.Thread(target=lambda: answers.append(post("+905321000001")))
        second = threading.Thread(target=lambda: answers.append(post("+905321000002")))
        first.start()
        try:
            assert deciding.wait(10) and clock.reads.acquire(timeout=10)  # stamped, being decided
            clock.advance(ms=1001)  # the second request arrives a window after the first
            second.start()
            # Stamped while the first is still being decided (its decision waits for `release`).
            assert clock.reads.acquire(timeout=5), "the second request was not stamped on arrival"
            clock.advance(ms=5000)  # the first decision takes long: it ends well after the second arrived
        finally:
            release.set()
            first.join(10)
            if second.ident is not None:  # started
                second.join(10)
        records = simulator.state.requests.records()

    assert sorted(answers) == [200, 200]
    assert [r["clock_ns"] for r in records] == [0, 1001 * MS]
