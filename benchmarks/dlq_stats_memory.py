#!/usr/bin/env python3
"""What `dlq stats` holds in memory to count unique origins: traced bytes per dead-letter.

    python benchmarks/dlq_stats_memory.py [--records 1000000]

Feeds `DlqStats` synthetic dead-letters (never kept: only what the stats keep is measured) in
three layouts of their origins (topic, partition, offset), each distinct:
- in order: 12 source partitions, consecutive offsets (a token outage dead-letters stretches);
- shuffled: the same origins in random order;
- sparse: every third offset, shuffled (no two origins adjacent: the worst case for intervals).
Prints tracemalloc's peak and the bytes kept after the read, per record, and the counts.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumer.sre.dlq_stats import DlqStats
from tests.support.dead_letters import StatsLetter as Letter

PARTITIONS = 12


def origins(layout: str, records: int) -> list[tuple[int, int]]:
    step = 3 if layout == "sparse" else 1
    out = [(n % PARTITIONS, 1_000_000 + step * (n // PARTITIONS)) for n in range(records)]
    if layout != "in order":
        random.Random(7).shuffle(out)
    return out


def measure(layout: str, records: int) -> None:
    plan = origins(layout, records)
    tracemalloc.start()
    started = time.perf_counter()
    stats = DlqStats("pisano-sms.dlq")
    for partition, offset in plan:
        stats.add(Letter(("transactions", partition, offset)))  # type: ignore[arg-type]
    unique = stats.as_json()["unique_origins"]
    elapsed = time.perf_counter() - started
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert unique == records, (unique, records)
    print(f"{layout:>9}: {records:,} records, {unique:,} unique; kept {kept / records:6.1f} B/record "
          f"({kept / 1e6:7.1f} MB), peak {peak / records:6.1f} B/record ({peak / 1e6:7.1f} MB), {elapsed:5.1f} s")
    del stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    for layout in ("in order", "shuffled", "sparse"):
        measure(layout, args.records)


if __name__ == "__main__":
    main()
