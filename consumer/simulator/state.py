"""The simulator's mutable state: configuration, throttle, fault dice, logs and counters.

One instance per app. Everything that reads or changes it runs on the state's one worker thread
(`serial`), in the order it was submitted, so no lock is needed: requests are decided one at a
time in the order they arrived, and the admin endpoints see and change the state between two
decisions. The event loop only reads bodies and stamps arrivals, so a request's arrival time is
not pushed back by the work of deciding the ones before it (Pisano counts a request against its
throttle when it arrives, whatever its servers are busy with).
Runtime changes from the admin endpoints go through `set_config` / `set_faults`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.applications import Starlette

from consumer.config.windows import format_rate_limits
from consumer.simulator.clock import Clock
from consumer.simulator.config import FaultSettings, SimulatorConfig
from consumer.simulator.deliveries import DeliveryLog, RequestLog
from consumer.simulator.stats import Stats
from consumer.simulator.throttle import SlidingWindowThrottle

logger = logging.getLogger(__name__)
T = TypeVar("T")


class SimulatorState:
    def __init__(self, config: SimulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.throttle = SlidingWindowThrottle(config.rate_limits)
        self.rng = random.Random(config.seed)
        self.deliveries = DeliveryLog(config.delivery_log_path, config.memory_log_recipients)
        self.requests = RequestLog()
        self.stats = Stats()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pisano-sim-state")

    async def serial(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the state's worker thread, after everything submitted before it."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def close(self) -> None:
        """Stop the worker thread after what was submitted (a later `serial` starts a new one)."""
        self._worker.shutdown(wait=True)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pisano-sim-state")

    def set_config(self, config: SimulatorConfig) -> None:
        """Apply new settings; new throttle windows start from an empty log."""
        if config.rate_limits != self.config.rate_limits:
            self.throttle = SlidingWindowThrottle(config.rate_limits)
            logger.info("throttle windows now %s", format_rate_limits(config.rate_limits))
        self.config = config

    def set_faults(self, faults: FaultSettings) -> None:
        old = self.config.faults
        changed = [
            f.name
            for f in dataclasses.fields(faults)
            if getattr(faults, f.name) != getattr(old, f.name)
        ]
        self.config = dataclasses.replace(self.config, faults=faults)
        # Names only: the values may hold tokens and phone numbers.
        logger.info("fault settings changed: %s", ", ".join(changed) or "none")

    def reset(self) -> None:
        """Forget every request: logs, counters and throttle history; fault dice re-seeded."""
        self.throttle.reset()
        self.rng.seed(self.config.seed)
        self.deliveries.clear()
        self.requests.clear()
        self.stats.clear()

    def stats_dict(self) -> dict[str, Any]:
        return {
            **self.stats.as_dict(),
            "recipients_delivered": self.deliveries.recipients,
            "deliveries_dropped_from_memory": self.deliveries.dropped_from_memory,
            "config": self.config.public_dict(),
        }


def simulator_state(app: Starlette) -> SimulatorState:
    """The state of an app made by `create_app`."""
    state: SimulatorState = app.state.simulator
    return state
