"""The one backoff policy: exponential from a base, capped, with optional full jitter.

Used for Pisano retries (jittered, so replicas that failed together do not retry together) and
for waiting out a Redis outage (not jittered: every sender thread just waits its turn).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_s: float
    max_s: float
    jitter: bool = True

    def delay(self, attempt: int, at_least_s: float | None = None) -> float:
        """The wait before try `attempt + 1` (attempt counts from 1); never under `at_least_s`
        (a server's Retry-After)."""
        ceiling = min(self.max_s, self.base_s * 2 ** max(0, attempt - 1))
        delay = random.uniform(0, ceiling) if self.jitter else ceiling
        return max(delay, at_least_s or 0.0)


# Redis away: 0.2 s, 0.4 s, ... up to 5 s between tries.
REDIS_BACKOFF = Backoff(base_s=0.2, max_s=5.0, jitter=False)
