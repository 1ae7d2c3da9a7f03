"""Fixtures of the end-to-end tests that run one replica against the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import Stack
from tests.support.runs import RUN_TOKEN, Run


@pytest.fixture
def run(stack: Stack, tmp_path: Path, redis_client, processes) -> Iterator[Run]:  # type: ignore[no-untyped-def]
    """A simulator accepting RUN_TOKEN and any campaign, no throttle, deliveries logged to a file."""
    config = SimulatorConfig(tokens=frozenset({RUN_TOKEN}), any_campaign=True, rate_limits=(),
                             delivery_log_path=tmp_path / "deliveries.jsonl")
    with SimulatorServer(config) as simulator:
        yield Run(stack, simulator, tmp_path, processes, RUN_TOKEN)
