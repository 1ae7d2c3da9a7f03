"""One throttle for the whole fleet: an exact multi-window limiter shared in Redis.

Every replica reserves each request's slot from the same Lua script (`lua/acquire.lua`), which
reads the time from Redis, so the replicas' clocks never matter. A reservation is one round
trip; the caller then waits for its slot on its own (the wait comes back with the grant), so no
one polls Redis. A slot further away than the horizon is refused with its wait, so a replica
pauses instead of holding a far slot.

A 429 pauses the token's limiter for everyone (`lua/pause.lua`). If Redis loses the state
(restart without persistence), each replica puts back the slots it reserved itself within the
longest window (`lua/seed.lua`) before reserving again.

`Limiter` is the contract: `RedisLimiter` (the fleet's), `NoLimiter` for PISANO_RATE_LIMITS=off,
and `consumer.state.memory.MemoryLimiter` for unit tests; the Redis and memory ones pass
tests/contract/test_limiter_contract.py.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from consumer.config.windows import RateWindow
from consumer.errors import StateStoreError
from consumer.state.redis import Keys, load_script, translated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grant:
    """A reserved slot (`granted`), or a refusal because the next slot is beyond the horizon."""

    granted: bool
    wait_s: float
    slot_ms: int


class Limiter(Protocol):
    """A throttle: reserve a slot per request, pause everyone after a 429."""

    windows: tuple[RateWindow, ...]

    def acquire(self) -> Grant:
        """Reserve the earliest allowed slot, or refuse with its wait when beyond the horizon."""

    def pause(self, seconds: float) -> None:
        """No slot for anyone before `seconds` from now (Pisano answered 429)."""

    def utilisation(self) -> dict[RateWindow, float]:
        """Share of each window's limit reserved in the window ending now."""


class NoLimiter:
    """PISANO_RATE_LIMITS=off: every request may leave at once (an on-premises Pisano)."""

    windows: tuple[RateWindow, ...] = ()

    def acquire(self) -> Grant:
        return Grant(granted=True, wait_s=0.0, slot_ms=0)

    def pause(self, seconds: float) -> None:
        pass

    def utilisation(self) -> dict[RateWindow, float]:
        return {}


class RedisLimiter:
    def __init__(
        self,
        client: Any,
        keys: Keys,
        token: str,
        windows: tuple[RateWindow, ...],
        *,
        margin_ms: int,
        horizon_ms: int,
    ) -> None:
        if not windows:
            raise ValueError("a RedisLimiter needs at least one window; use NoLimiter for 'off'")
        self.client = client
        self.windows = windows
        self.margin_ms = margin_ms
        self.horizon_ms = horizon_ms
        self._keys = list(keys.limiter(token))
        self._window_args = [v for w in windows for v in (w.limit, w.period_ms)]
        self._keep = max(w.limit for w in windows)
        self._longest_ms = max(w.period_ms for w in windows)
        self._ttl_ms = self._longest_ms + margin_ms + horizon_ms + 60_000
        self._acquire = load_script(client, "acquire")
        self._seed = load_script(client, "seed")
        self._pause = load_script(client, "pause")
        self._lock = threading.Lock()
        self._generation = ""
        self._seq = 0  # the highest reservation number Redis gave us: a state behind it rolled back
        self._mine: deque[int] = deque()  # slots this replica reserved, for seeding after a reset

    def acquire(self) -> Grant:
        """Reserve the earliest allowed slot: one round trip (two more only after a reset)."""
        for _ in range(3):
            with self._lock:
                seq_seen = self._seq
            status, wait_ms, raw_generation, slot_ms, seq = self._call(
                self._acquire, [self._generation, self.margin_ms, self.horizon_ms, seq_seen, *self._window_args]
            )
            generation = raw_generation.decode() if isinstance(raw_generation, bytes) else str(raw_generation)
            if status == -1:
                self._reseed(generation)
                continue
            with self._lock:
                self._generation = generation
                if status == 1:
                    self._remember(slot_ms)
                    self._seq = max(self._seq, seq)
            return Grant(granted=status == 1, wait_s=max(0, wait_ms) / 1000, slot_ms=slot_ms)
        raise StateStoreError("the limiter state kept changing while reserving a slot; retrying later")

    def pause(self, seconds: float) -> None:
        """Stop the whole fleet's slots for `seconds` (a 429 from Pisano)."""
        self._call(self._pause, [max(1, round(seconds * 1000)), self._ttl_ms])
        log.warning("Pisano throttled us: fleet paused for %.1fs", seconds, extra={"wait_ms": round(seconds * 1000)})

    def utilisation(self) -> dict[RateWindow, float]:
        """Share of each window's limit reserved in the window ending now (for metrics)."""
        with translated("reading the limiter"):
            pipe = self.client.pipeline(transaction=False)
            pipe.time()
            pipe.lrange(self._keys[0], 0, -1)
            (seconds, micros), entries = pipe.execute()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        slots = [int(e) for e in entries]
        return {
            w: sum(1 for s in slots if now_ms - w.period_ms < s <= now_ms) / w.limit for w in self.windows
        }

    def _remember(self, slot_ms: int) -> None:
        self._mine.append(slot_ms)
        horizon = slot_ms - self._longest_ms - self.margin_ms
        while self._mine and self._mine[0] < horizon:
            self._mine.popleft()

    def _reseed(self, generation: str) -> None:
        with self._lock:
            mine, seq = list(self._mine), self._seq
        if mine:
            log.warning("limiter state was lost (Redis restarted?); restoring this replica's %d recent slots",
                        len(mine), extra={"count": len(mine)})
        result = self._call(self._seed, [generation, self._keep, self._ttl_ms, seq, *mine])
        if result != -1:
            with self._lock:
                self._generation = generation

    def _call(self, script: Any, args: list[Any]) -> Any:
        with translated("the throttle"):
            return script(keys=self._keys, args=args)
