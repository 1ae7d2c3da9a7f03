#!/usr/bin/env python3
"""Sizing of the dedup state: keys and bytes per node for 1,000,000 remembered events, on the
three-master Redis Cluster and on the single Redis, in one run (README, "Redis Cluster").

    make bench-sizing
    python scripts/localstack.py up --redis-cluster
    python scripts/localstack.py run -- python benchmarks/sizing.py --events 1000000

Each event is remembered as the sender does it: its batch's ids claimed in one call, then settled
as delivered in another (RedisDedup, the public contract, whatever its key layout), by
`--threads` sender threads in batches of `--batch` ids (random UUIDs, as producers assign them),
with the default 7-day horizon. Per node: the keys under the run's REDIS_KEY_PREFIX (SCAN) and
the growth of `used_memory` (INFO memory), which counts what the keys really cost (dictionary
entries, expiry times, allocator rounding). Bytes per remembered event = growth of every master /
events. Replicas hold the same again. Then the cost of DEDUP_WAIT_REPLICAS=1 on the cluster: the
same work for `--wait-events` events with a WAIT for one replica of every master after each claim
and each settlement.

The run's keys are deleted at the end (`--keep` keeps them). The Redis servers are the local
stack's: REDIS_URL and PISANO_STACK_REDIS_CLUSTER_URL.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.state.dedup import ClaimRequest, ClaimStatus, DedupStore, RedisDedup, Settlement  # noqa: E402
from consumer.state.dedup_layout import SLICES  # noqa: E402
from consumer.state.redis import Keys, connect  # noqa: E402
from consumer.state.replication import ReplicatedDedup, ReplicationWait  # noqa: E402

HORIZON_S = 7 * 86_400  # DEDUP_HORIZON_S's default
PEAK_DAYS = HORIZON_S / 86_400 * (1 + 1 / SLICES)
LEASE_MS = 240_000


def event_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def masters(client: Any) -> list[tuple[str, Any]]:
    """(name, client of that server alone) for every master; the single Redis is its own."""
    if hasattr(client, "get_primaries"):
        return [(node.name, client.get_redis_connection(node)) for node in client.get_primaries()]
    return [("single", client)]


def used_memory(client: Any) -> dict[str, int]:
    return {name: int(node.info("memory")["used_memory"]) for name, node in masters(client)}


def keys_under(client: Any, prefix: str) -> dict[str, int]:
    return {name: sum(1 for _ in node.scan_iter(match=f"*{prefix}*", count=5000)) for name, node in masters(client)}


def delete_under(client: Any, prefix: str) -> None:
    for _, node in masters(client):
        pipe = node.pipeline(transaction=False)  # one key per UNLINK: keys of one call share a slot
        for n, key in enumerate(node.scan_iter(match=f"*{prefix}*", count=5000), 1):
            pipe.unlink(key)
            if n % 5000 == 0:
                pipe.execute()
        pipe.execute()


def remember(dedup: DedupStore, ids: list[str], batch: int, threads: int) -> float:
    """Claim and settle every id as delivered, `batch` ids per request; the seconds it took."""
    batches = [ids[i:i + batch] for i in range(0, len(ids), batch)]

    def one(chunk: list[str]) -> None:
        tag = dedup.new_tag()
        statuses = dedup.claim(tag, [ClaimRequest(e) for e in chunk])
        if any(s is not ClaimStatus.CLAIMED for s in statuses):
            raise SystemExit("an id was not claimable: the run's prefix is not fresh")
        dedup.settle(Settlement.DELIVERED, tag, chunk)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, batches))
    return time.perf_counter() - started


def measure(name: str, client: Any, make: Callable[[str], DedupStore], ids: list[str], args: argparse.Namespace,
            ) -> dict[str, Any]:
    prefix = f"bench-sizing-{uuid.uuid4().hex[:8]}"
    before = used_memory(client)
    seconds = remember(make(prefix), ids, args.batch, args.threads)
    after = used_memory(client)
    keys = keys_under(client, prefix)
    growth = {node: after[node] - before[node] for node in after}
    total_keys, total_bytes = sum(keys.values()), sum(growth.values())
    result = {
        "target": name, "events": len(ids), "seconds": round(seconds, 2),
        "events_per_s": round(len(ids) / seconds), "batches": math.ceil(len(ids) / args.batch),
        "keys_per_node": keys, "bytes_per_node": growth,
        "largest_node_share_of_keys": round(max(keys.values()) / total_keys, 3) if total_keys else None,
        # A layout of a few large keys is judged by its bytes: the memory each master carries.
        "largest_node_share_of_bytes": round(max(growth.values()) / total_bytes, 3) if total_bytes > 0 else None,
        "keys_per_event": float(f"{total_keys / len(ids):.4g}"),
        "bytes_per_event": round(total_bytes / len(ids), 1),
    }
    if not args.keep:
        delete_under(client, prefix)
    return result


def sizing(bytes_per_event: float, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Memory at the 7-day horizon and masters needed, for 1, 10 and 100 million events a day."""
    budget = args.shard_gib * 2**30 * args.fill
    rows = []
    for per_day in (1e6, 10e6, 100e6):
        # A mark lives up to one time slice past the horizon (consumer/state/dedup_layout.py):
        # the peak holds horizon + one slice of events. On the masters; each replica as much again.
        held = per_day * PEAK_DAYS * bytes_per_event
        rows.append({"events_per_day": int(per_day), "gib_on_masters": round(held / 2**30, 2),
                     "gib_with_one_replica_each": round(2 * held / 2**30, 2),
                     "masters": max(3, math.ceil(held / budget))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--wait-events", type=int, default=200_000, help="events for the DEDUP_WAIT_REPLICAS=1 run")
    parser.add_argument("--batch", type=int, default=5000, help="ids per request (BATCH_MAX_RECIPIENTS)")
    parser.add_argument("--threads", type=int, default=4, help="sender threads (MAX_IN_FLIGHT_REQUESTS)")
    parser.add_argument("--shard-gib", type=float, default=8.0, help="maxmemory of one master, for the table")
    parser.add_argument("--fill", type=float, default=0.5,
                        help="share of it the dedup state may fill (headroom: growth, AOF rewrite, the 0.8 alert)")
    parser.add_argument("--keep", action="store_true", help="keep the run's keys")
    args = parser.parse_args()
    single_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:16379/0")
    cluster_url = os.environ.get("PISANO_STACK_REDIS_CLUSTER_URL")
    if not cluster_url:
        raise SystemExit("PISANO_STACK_REDIS_CLUSTER_URL is not set: run `python scripts/localstack.py up "
                         "--redis-cluster`, then this under `localstack.py run --`")
    ids = event_ids(args.events, seed=12)
    print(f"[bench] remembering {args.events:,} events (batches of {args.batch}, {args.threads} threads, "
          f"{HORIZON_S // 86_400}-day horizon) on the Redis Cluster {cluster_url} and the single Redis {single_url}",
          flush=True)
    single, cluster = connect(single_url, timeout_s=30), connect(cluster_url, cluster=True, timeout_s=30)

    def plain(client: Any) -> Callable[[str], DedupStore]:
        return lambda prefix: RedisDedup(client, Keys(prefix), lease_ms=LEASE_MS, horizon_s=HORIZON_S)

    def waiting(prefix: str) -> DedupStore:
        return ReplicatedDedup(plain(cluster)(prefix), ReplicationWait(cluster, prefix, replicas=1, timeout_ms=5000))

    results = [measure("cluster", cluster, plain(cluster), ids, args),
               measure("single", single, plain(single), ids, args)]
    results.append(measure("cluster, no wait", cluster, plain(cluster), event_ids(args.wait_events, seed=13), args))
    results.append(measure("cluster, DEDUP_WAIT_REPLICAS=1", cluster, waiting, event_ids(args.wait_events, seed=14),
                           args))
    for result in results:
        print(json.dumps(result), flush=True)

    on_cluster = results[0]
    print()
    print(f"{'target':34} {'events/s':>9} {'keys/event':>10} {'bytes/event':>11}  keys per node; largest share of "
          "the keys, of the bytes")
    for r in results:
        print(f"{r['target']:34} {r['events_per_s']:>9,} {r['keys_per_event']:>10} {r['bytes_per_event']:>11}  "
              f"{r['keys_per_node']}; {r['largest_node_share_of_keys']}, {r['largest_node_share_of_bytes']}")
    nowait, wait = results[2], results[3]
    per_batch_ms = (wait["seconds"] - nowait["seconds"]) / wait["batches"] * args.threads * 1000
    print(f"\nDEDUP_WAIT_REPLICAS=1 costs {per_batch_ms:.1f} ms per batch of {args.batch} (claim + settle, "
          f"{args.threads} threads): {wait['events_per_s']:,} against {nowait['events_per_s']:,} events/s")
    print(f"\nsizing from {on_cluster['bytes_per_event']} bytes per remembered event (cluster masters), "
          f"a {HORIZON_S // 86_400}-day horizon, masters of {args.shard_gib:g} GiB filled to {args.fill:.0%}:")
    print(f"  memory = events a day x {PEAK_DAYS:g} days (the horizon and one slice) x bytes per event"
          " (on the masters; twice that with one replica each)")
    print("  masters = max(3, ceil(memory / (maxmemory x fill))), with the keys spread evenly over the masters")
    for row in sizing(on_cluster["bytes_per_event"], args):
        print(f"  {row['events_per_day']:>11,} events/day: {row['gib_on_masters']:>8} GiB on the masters, "
              f"{row['gib_with_one_replica_each']:>8} GiB with replicas, {row['masters']} masters")
    share = on_cluster["largest_node_share_of_bytes"]
    if share is not None and share > 0.4:
        print(f"\nWARNING: one master holds {share:.0%} of the bytes: more masters do not help this key layout.")


if __name__ == "__main__":
    main()
