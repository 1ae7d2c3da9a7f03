#!/usr/bin/env python3
"""Per-record CPU of Avro decoding, default schema: fastavro (the prepared record reader the
consumer used before issue 14) against the reader compiled for the schema (avro_compiled.py),
whole and with only the fields the default mapping reads (as the consumer decodes), each through
the decoder's `_read` (end-of-record check included).

    python benchmarks/decode.py [--events 20000] [--rounds 5]

Prints the best round's microseconds per record of each and their ratio (best of N: the machine
is shared).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.config.resources import default_mapping_file  # noqa: E402
from consumer.ingest import avro  # noqa: E402
from consumer.ingest.avro_compiled import compile_reader  # noqa: E402
from consumer.ingest.mapping import DeclarativeMapper  # noqa: E402
from consumer.ingest.samples import default_schema, transactions  # noqa: E402


def best(read: Any, values: list[bytes], rounds: int) -> float:
    decode = avro._read
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for value in values:
            decode(value, 0, read)
        times.append(time.perf_counter() - started)
    return min(times) / len(values) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    schema = default_schema()
    values = [value for _, value in transactions(args.events, ["ae51458c-9e82-417f-8f1d-e074891ea5c1", "c2"])]
    direct = avro._direct(schema, None)
    assert direct is not None, "this fastavro has no prepared record reader"
    fastavro_read, compiled = avro._from_buffer(direct), compile_reader(schema)
    assert all(avro._read(v, 0, fastavro_read) == avro._read(v, 0, compiled) for v in values[:1000])
    projected = compile_reader(schema, DeclarativeMapper.from_file(default_mapping_file()).fields_read())
    slow, fast = best(fastavro_read, values, args.rounds), best(compiled, values, args.rounds)
    fewer = best(projected, values, args.rounds)
    print(f"decode, {args.events} default-schema records, best of {args.rounds}: fastavro {slow:.2f} us/record, "
          f"compiled {fast:.2f} us/record, ratio {fast / slow:.2f}; the mapping's fields only {fewer:.2f} us/record, "
          f"ratio {fewer / slow:.2f}")


if __name__ == "__main__":
    main()
