"""A stand-in for Pisano's SMS sharing API, for tests, the demo, benchmarks and staging.

It answers `POST /v1/sms_campaigns/{campaign_id}/sms_sharings` as the reference describes it
(token check, known campaigns, exact throttle windows per token, the reference's error codes),
injects faults on demand, and records every recipient it accepted so tests can check what was
delivered, when, and in which batches.

| module        | holds |
|---------------|-------|
| config.py     | SimulatorConfig and FaultSettings, parsed from CLI strings or admin JSON |
| sharing.py    | the order of checks for one request and where each fault strikes |
| throttle.py   | the exact sliding-window throttle |
| validation.py | the body checks and their codes |
| answers.py    | the success body and the one error body shape |
| deliveries.py | the delivery log (memory and JSONL file) and the request log |
| stats.py      | the counters of `/_sim/stats` |
| state.py      | the mutable state one app holds |
| app.py        | the ASGI app and the HTTP side of a sharing request |
| admin.py      | the `/_sim/` endpoints |
| server.py     | `serve` (foreground) and `SimulatorServer` (background thread) |
| clock.py      | the injectable clocks |
| redact.py     | token fingerprints and masked phone numbers |
"""

from consumer.simulator.app import create_app
from consumer.simulator.clock import Clock, ManualClock, SystemClock
from consumer.simulator.config import FaultSettings, SimulatorConfig
from consumer.simulator.server import SimulatorServer, Tls, serve

__all__ = [
    "Clock",
    "FaultSettings",
    "ManualClock",
    "SimulatorConfig",
    "SimulatorServer",
    "SystemClock",
    "Tls",
    "create_app",
    "serve",
]
