#!/usr/bin/env python3
"""Throttle slot reservations per second on one Redis, and Redis round trips per reservation.

    make bench-limiter
    python scripts/localstack.py run -- python benchmarks/limiter.py --processes 4 --threads 8

Every process runs threads that reserve slots back to back for `--seconds`, with windows so wide
that every reservation is granted at once (the script's cost, not the wait, is measured); each
thread first waits out the grace a new state starts with (consumer/state/lua/acquire.lua). Round
trips are counted on the client side: every command packet sent, less the handshake of a new
connection. Redis's own time per script call comes from INFO commandstats.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.config.windows import parse_rate_limits  # noqa: E402
from consumer.state.limiter import RedisLimiter  # noqa: E402
from consumer.state.redis import Keys, connect  # noqa: E402
from tests.support.redis_trips import count_round_trips  # noqa: E402

# Never binding in a run of seconds (at most MAX_LIMIT a window, consumer/config/windows.py): the
# reservation itself is measured, not the wait.
WINDOWS = "1000000/1s,1000000/25s,1000000/625s"


def worker(redis_url: str, threads: int, seconds: float, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = RedisLimiter(connect(redis_url), Keys("bench-limiter"), "bench-token", parse_rate_limits(WINDOWS),
                          margin_ms=0, horizon_ms=60_000)
    counts = [0] * threads
    warm = threading.Barrier(threads + 1)
    go = threading.Barrier(threads + 1)
    deadline = 0.0

    def loop(n: int) -> None:
        while not (grant := limiter.acquire()).granted:  # first use: the script, a connection, the grace
            time.sleep(grant.wait_s)
        warm.wait()
        go.wait()
        while time.monotonic() < deadline:
            if limiter.acquire().granted:
                counts[n] += 1

    pool = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    warm.wait()
    with count_round_trips() as trips:
        deadline = time.monotonic() + seconds
        go.wait()
        for thread in pool:
            thread.join()
    results.put((sum(counts), trips.operations))


def _script_time(redis_url: str) -> tuple[int, int]:
    """Script calls so far and the microseconds Redis spent in them."""
    stats = connect(redis_url).info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:16379/0")
    print(f"[bench] {args.processes} processes x {args.threads} threads reserving slots for {args.seconds:.0f}s "
          f"on {redis_url}", flush=True)
    redis_before = _script_time(redis_url)
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [multiprocessing.Process(target=worker, args=(redis_url, args.threads, args.seconds, results))
             for _ in range(args.processes)]
    for proc in procs:
        proc.start()
    totals = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    acquisitions = sum(a for a, _ in totals)
    trips = sum(t for _, t in totals)
    print(f"  reservations        {acquisitions / args.seconds:>10,.0f} per second ({acquisitions:,} in all)")
    print(f"  round trips         {trips / acquisitions:>10.3f} per reservation")
    calls, usec = (a - b for a, b in zip(_script_time(redis_url), redis_before, strict=True))
    if calls:  # Redis's own time: steady when the client machine is busy, unlike the rate above
        print(f"  Redis time          {usec / calls:>10.1f} µs per script call (INFO commandstats)")
    if trips != acquisitions:
        raise SystemExit("a reservation took more than one round trip")


if __name__ == "__main__":
    main()
