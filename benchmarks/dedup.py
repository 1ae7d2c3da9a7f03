#!/usr/bin/env python3
"""What the dedup state costs Redis: bytes per remembered event and server CPU per event.

    python scripts/localstack.py run -- python benchmarks/dedup.py              # the stack's Redis
    REDIS_URL=redis://127.0.0.1:26500 REDIS_CLUSTER=true python benchmarks/dedup.py --marks 100000

It drives `consumer.state.dedup.RedisDedup` as a sender does (claim a batch, settle it delivered),
from one process, so it measures any version of the layout:

- memory: `--marks` events (unique ids shaped like the sample producer's) claimed and delivered with
  a one-hour horizon; `used_memory` (INFO memory, summed over the masters of a cluster) after
  minus before, per event; and `MEMORY USAGE` of the keys holding them, per event;
- the spread: how many of those keys and marks each master holds (a cluster only);
- server CPU: `used_cpu_user + used_cpu_sys` (INFO cpu, summed over the masters) per event, in a
  steady state: a short horizon (`--steady-horizon-s`), first filled at `--steady-rate` events/s
  for longer than a horizon so that old marks expire while new ones arrive, as in production
  (every version then holds the same number of live marks), then measured over `--marks` more
  events at full speed. The server's expiry work is counted, since production pays it too;
- round trips per batch, counted from the client side.

The Redis must be one the benchmark may fill: it uses a fresh key prefix and deletes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.state.dedup import ClaimRequest, RedisDedup, Settlement  # noqa: E402
from consumer.state.redis import Keys, connect  # noqa: E402
from tests.support.redis_trips import count_round_trips  # noqa: E402


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def masters(client: Any) -> list[Any]:
    """A plain client per master (one for a single Redis)."""
    if hasattr(client, "get_primaries"):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def used_memory(clients: list[Any]) -> int:
    return sum(int(c.info("memory")["used_memory"]) for c in clients)


def cpu_s(clients: list[Any]) -> float:
    return sum(float(c.info("cpu")["used_cpu_user"]) + float(c.info("cpu")["used_cpu_sys"]) for c in clients)


def keys_of(client: Any, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=f"*{prefix}*", count=10_000))


def drive(dedup: RedisDedup, run: str, start: int, count: int, batch: int) -> None:
    for first in range(start, start + count, batch):
        ids = [f"{run}-{n:08d}-{uuid.uuid4().hex[:12]}" for n in range(first, min(first + batch, start + count))]
        tag = dedup.new_tag()
        dedup.claim(tag, [ClaimRequest(i) for i in ids])
        dedup.settle(Settlement.DELIVERED, tag, ids)


def memory_figures(url: str, cluster: bool, marks: int, batch: int) -> dict[str, Any]:
    client = connect(url, cluster=cluster, timeout_s=30)
    nodes = masters(client)
    prefix = f"bm{uuid.uuid4().hex[:6]}"
    dedup = RedisDedup(client, Keys(prefix), lease_ms=60_000, horizon_s=3600)
    drive(dedup, "warm", 0, batch, batch)  # the layout's first keys and scripts exist
    before = used_memory(nodes)
    drive(dedup, "m", 0, marks, batch)
    after = used_memory(nodes)
    per_node = []
    usage = 0
    for node in nodes:
        keys = keys_of(node, prefix)
        node_bytes = sum(int(node.memory_usage(k, samples=0) or 0) for k in keys)
        usage += node_bytes
        per_node.append({"node": node.get_connection_kwargs().get("port"), "keys": len(keys), "bytes": node_bytes})
    return {"marks": marks, "used_memory_bytes_per_mark": (after - before) / marks,
            "memory_usage_bytes_per_mark": usage / (marks + batch), "per_node": per_node}


def cpu_figures(url: str, cluster: bool, marks: int, batch: int, horizon_s: int, rate: int) -> dict[str, Any]:
    client = connect(url, cluster=cluster, timeout_s=30)
    nodes = masters(client)
    dedup = RedisDedup(client, Keys(f"bc{uuid.uuid4().hex[:6]}"), lease_ms=60_000, horizon_s=horizon_s)
    # Filled at a fixed rate, so that every version holds the same number of live marks.
    started = time.monotonic()
    fill_until = started + horizon_s * 1.3
    filled = 0
    while time.monotonic() < fill_until:
        drive(dedup, "f", filled, batch, batch)
        filled += batch
        time.sleep(max(0.0, started + filled / rate - time.monotonic()))
    say(f"  filled {filled:,} events over {horizon_s * 1.3:.0f}s (horizon {horizon_s}s)")
    before = cpu_s(nodes)
    started = time.monotonic()
    with count_round_trips() as trips:
        drive(dedup, "c", 0, marks, batch)
    elapsed = time.monotonic() - started
    used = cpu_s(nodes) - before
    return {"server_cpu_us_per_event": used * 1e6 / marks, "events_per_s": marks / elapsed,
            "round_trips_per_batch": trips.operations / -(-marks // batch)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--marks", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--steady-horizon-s", type=int, default=32)
    parser.add_argument("--steady-rate", type=int, default=20_000, help="events/s while filling")
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:16379/0")
    cluster = os.environ.get("REDIS_CLUSTER", "").lower() in ("1", "true", "yes")
    say(f"Redis {url}{' (cluster)' if cluster else ''}, {args.marks:,} events in batches of {args.batch}")
    memory = memory_figures(url, cluster, args.marks, args.batch)
    say("steady state: old marks expire while new ones arrive")
    cpu = cpu_figures(url, cluster, args.marks, args.batch, args.steady_horizon_s, args.steady_rate)
    print()
    print(f"  memory per event    {memory['used_memory_bytes_per_mark']:>8.1f} B (INFO used_memory delta), "
          f"{memory['memory_usage_bytes_per_mark']:.1f} B (MEMORY USAGE of the keys)")
    for node in memory["per_node"]:
        share = node["bytes"] / max(1, sum(n["bytes"] for n in memory["per_node"]))
        print(f"    node {node['node']}: {node['keys']:,} keys, {share:.0%} of the bytes")
    print(f"  Redis server CPU    {cpu['server_cpu_us_per_event']:>8.2f} us/event (claim + settle, steady state)")
    print(f"  round trips         {cpu['round_trips_per_batch']:>8.2f} per batch (claim + settle)")
    print(f"  one client          {cpu['events_per_s']:>8,.0f} events/s")


if __name__ == "__main__":
    main()
