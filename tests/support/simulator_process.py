"""The Pisano simulator in a process of its own, for a run whose harness is busy (tests/chaos).

In the harness's process, the simulator's event loop shares the interpreter with the harness's
producer and fault threads: a request's arrival stamp could be taken tens of milliseconds after
the request arrived, so two requests a window apart could look closer than they were (a window
violation no replica caused), or a real one could hide. In a process of its own it stamps each
request as Pisano would, when it arrives. Its request log comes over its admin endpoint; its
stamps are the machine's monotonic clock (time.monotonic_ns), the harness's too.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import httpx

from consumer.simulator import SimulatorConfig, SimulatorServer

START_TIMEOUT_S = 60.0  # a spawned interpreter imports the simulator on a loaded machine
STOP_TIMEOUT_S = 20.0  # the server's graceful shutdown (5 s) and the delivery log's close


def _serve(config: SimulatorConfig, parent: Connection) -> None:
    """The child: serve until SIGTERM, then stop gracefully (requests in flight answered, the
    delivery log closed whole)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SimulatorServer(config) as simulator:
        parent.send(simulator.url)
        stop.wait()


class SimulatorProcess:
    """`with SimulatorProcess(config) as simulator:` `simulator.url`, `simulator.requests()`."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.url = ""
        # Spawned, not forked: the harness has Kafka clients' threads a fork would copy mid-lock.
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(config, child), name="pisano-simulator", daemon=True)

    def requests(self) -> list[dict[str, Any]]:
        """Every request the simulator decided, as `SimulatorState.requests.records()` gives them."""
        answer = httpx.get(f"{self.url}/_sim/requests", timeout=60)
        answer.raise_for_status()
        records: list[dict[str, Any]] = answer.json()
        return records

    def __enter__(self) -> SimulatorProcess:
        self._process.start()
        if not self._parent.poll(START_TIMEOUT_S):
            self._process.kill()
            raise RuntimeError(f"the simulator's process did not start within {START_TIMEOUT_S:.0f} s")
        self.url = self._parent.recv()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._process.terminate()
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
            raise RuntimeError("the simulator's process did not stop gracefully: its delivery log may be cut short")
