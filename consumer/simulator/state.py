"""The simulator's mutable state: configuration, throttle, fault dice, logs and counters.

One instance per app. It is touched only from the event loop that serves the app, and every
request is decided without an `await` in between (see sharing.py), so no lock is needed.
Runtime changes from the admin endpoints go through `set_config` / `set_faults`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

from starlette.applications import Starlette

from consumer.config.windows import format_rate_limits
from consumer.simulator.clock import Clock
from consumer.simulator.config import FaultSettings, SimulatorConfig
from consumer.simulator.deliveries import DeliveryLog, RequestLog
from consumer.simulator.stats import Stats
from consumer.simulator.throttle import SlidingWindowThrottle

logger = logging.getLogger(__name__)


class SimulatorState:
    def __init__(self, config: SimulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.throttle = SlidingWindowThrottle(config.rate_limits)
        self.rng = random.Random(config.seed)
        self.deliveries = DeliveryLog(config.delivery_log_path, config.memory_log_recipients)
        self.requests = RequestLog()
        self.stats = Stats()

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
