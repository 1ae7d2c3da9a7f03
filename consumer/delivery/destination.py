"""A destination: one Pisano account the fleet sends to.

Everything the sending side needs to talk to it travels together: the HTTP client (base URL,
token, TLS, timeouts), the fleet-wide throttle, the circuit breakers (the token's and one per
campaign), the error classification and the most recipients per request. The sender talks to a
destination, never to a client, limiter or circuit it found elsewhere. `consumer.app` builds one
per configured destination; the environment-only setup (`PISANO_URL`, `PISANO_API_TOKEN`, ...) is
the destination `default`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from consumer.delivery.failures import Verdict, classify
from consumer.delivery.pisano import Accepted
from consumer.errors import PisanoApiError, PisanoError
from consumer.state.campaigns import CampaignCircuits
from consumer.state.circuit import CircuitBreaker, Trip, token_probe
from consumer.state.limiter import Limiter

DEFAULT = "default"


class PisanoApi(Protocol):
    """The calls the sender makes: `consumer.delivery.pisano.PisanoClient` over HTTP, or a fake."""

    def send(self, campaign_id: str, body: bytes, leave_by: float | None = None) -> Accepted:
        """POST one sms_sharings request; PisanoError when it did not succeed, SlotMissed (not
        sent) when its first byte would leave after `leave_by` (monotonic; None: any time)."""

    def warm(self, within_s: float) -> None:
        """Set up a connection now, within about `within_s`, for the next request (best effort)."""

    def probe_token(self, campaign_id: str = ..., leave_by: float | None = None) -> PisanoApiError | None:
        """Ask whether the token is accepted, sending no SMS (None: accepted); SlotMissed (not
        sent) as `send`."""

    def close(self) -> None:
        """Release connections."""


def _in_memory_campaign_circuits() -> CampaignCircuits:
    # Imported here: `run` always gives the Redis ones, and need not load the memory twins.
    from consumer.state.memory import MemoryCircuitStores

    return CampaignCircuits(MemoryCircuitStores(), cooldown_ms=30_000, max_cooldown_ms=600_000,
                            probe_lease_ms=60_000)


@dataclass
class Destination:
    name: str
    client: PisanoApi
    limiter: Limiter
    circuit: CircuitBreaker
    max_recipients: int = 5000
    # How late after its slot a request may still leave: half the throttle margin, so two
    # requests each late by at most this stay inside their windows.
    max_lateness_s: float = 0.25
    classify: Callable[[PisanoError], Verdict] = field(default=classify)
    # A circuit per campaign (unknown campaign, no flow): `consumer.app` keeps them in Redis for
    # the fleet; in memory for unit tests and single-process tools.
    campaigns: CampaignCircuits = field(default_factory=_in_memory_campaign_circuits)

    def probe(self, wasted: Callable[[], object] | None = None) -> Callable[[], bool | Trip | None]:
        """The half-open circuit's question to Pisano, in a throttle slot of this destination;
        `wasted` counts each slot it gives up (throttle_slots_wasted_total)."""
        return token_probe(self.client, self.limiter, warm=self.client.warm, wasted=wasted)
