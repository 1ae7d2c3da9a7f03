"""Redis must never evict: the delivered marks are what stop a second SMS.

Every dedup key has a TTL (DEDUP_HORIZON_S), so the `volatile-*` policies may evict them as
surely as the `allkeys-*` ones; only `noeviction` keeps them (a full Redis then refuses writes,
and the consumer fails closed). `pisano-sms check` and a replica's start read the policy here and
refuse any other one, unless REDIS_ALLOW_EVICTION says the operator accepts the risk. The health
probe reads the memory use here too, for `pisano_sms_redis_memory_used_ratio`.

One INFO section answers both questions (`maxmemory_policy`, `used_memory`, `maxmemory`); managed
Redis services that disable CONFIG usually allow INFO. CONFIG GET is the fallback for the policy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumer.errors import ConfigError
from consumer.state.redis import REDIS_ERRORS

log = logging.getLogger(__name__)

SAFE_POLICY = "noeviction"


class RedisInfoDenied(Exception):
    """The Redis user may run neither INFO nor CONFIG GET."""


@dataclass(frozen=True)
class RedisMemory:
    policy: str
    used_bytes: int
    max_bytes: int  # 0: no limit

    @property
    def used_ratio(self) -> float:
        """used_memory / maxmemory; 0 when Redis has no maxmemory (it never evicts for memory)."""
        return self.used_bytes / self.max_bytes if self.max_bytes else 0.0


def read_memory(client: Any) -> RedisMemory:
    """The eviction policy and memory use. For a cluster, the worst node: the highest ratio, and
    any node's policy other than noeviction. Raises RedisInfoDenied, or a Redis error."""
    try:
        info = client.info("memory")
    except REDIS_ERRORS as exc:
        if not is_denied(exc):
            raise
        return RedisMemory(_policy_from_config(client), 0, 0)
    nodes = [info] if "used_memory" in info else [v for v in info.values() if isinstance(v, Mapping)]
    if not nodes:
        raise RedisInfoDenied("INFO memory answered without used_memory")
    found = [RedisMemory(str(n.get("maxmemory_policy", "")), int(n.get("used_memory", 0)), int(n.get("maxmemory", 0)))
             for n in nodes]
    if any(not m.policy for m in found):
        return RedisMemory(_policy_from_config(client), found[0].used_bytes, found[0].max_bytes)
    unsafe = [m for m in found if m.policy != SAFE_POLICY]
    worst = max(found, key=lambda m: m.used_ratio)
    return RedisMemory(unsafe[0].policy if unsafe else SAFE_POLICY, worst.used_bytes, worst.max_bytes)


def _policy_from_config(client: Any) -> str:
    try:
        answer = client.config_get("maxmemory-policy")
    except REDIS_ERRORS as exc:
        if is_denied(exc):
            raise RedisInfoDenied(str(exc)) from exc
        raise
    if "maxmemory-policy" in answer:
        return str(answer["maxmemory-policy"])
    # A cluster client may answer per node: the first node that may evict, if any.
    policies = [str(v["maxmemory-policy"]) for v in answer.values()
                if isinstance(v, Mapping) and "maxmemory-policy" in v]
    if not policies:
        raise RedisInfoDenied("CONFIG GET maxmemory-policy returned nothing (the command may be renamed)")
    return next((p for p in policies if p != SAFE_POLICY), policies[0])


def is_denied(exc: Exception) -> bool:
    """A refusal (ACL NOPERM, a disabled or renamed command), not an outage."""
    text = str(exc).lower()
    return "noperm" in text or "no permissions" in text or "unknown command" in text


DENIED_HELP = ("the Redis user may run neither INFO nor CONFIG GET, so the eviction policy cannot be "
               "checked: allow it `+info` (Redis ACL), or check yourself that maxmemory-policy is "
               "noeviction and set REDIS_ALLOW_EVICTION=true")


def eviction_problem(memory: RedisMemory) -> str | None:
    """Why this Redis may lose delivered marks, or None."""
    if memory.policy == SAFE_POLICY:
        return None
    return (f"Redis maxmemory-policy is {memory.policy}: under memory pressure it may evict delivered marks "
            "(they have TTLs, so volatile-* policies evict them too) and customers would get a second SMS; "
            "set maxmemory-policy noeviction, or set REDIS_ALLOW_EVICTION=true to accept that risk")


def require_noeviction(client: Any, *, allow: bool) -> None:
    """At a replica's start: refuse a Redis that may evict, unless allowed (then say so loudly).
    Redis unreachable now is no reason to refuse: the replica fails closed until it answers."""
    try:
        problem = eviction_problem(read_memory(client))
    except RedisInfoDenied:
        problem = DENIED_HELP
    except REDIS_ERRORS as exc:
        log.warning("could not read Redis's eviction policy at start (%s); the health probe checks it "
                    "once Redis answers", type(exc).__name__)
        return
    if problem is None:
        return
    if not allow:
        raise ConfigError(problem)
    log.error("REDIS_ALLOW_EVICTION=true: starting anyway, although %s", problem,
              extra={"reason": "redis_eviction_allowed"})
