"""How fast the Pisano simulator takes full-size requests, so it never limits a benchmark.

Starts the simulator in a child process (`serve`, as `pisano-sms simulate` does, read from the
URL line it prints), then fires --requests requests of --recipients recipients each from
--threads threads with httpx, and prints requests/s and recipients/s. Bodies are encoded before
the clock starts, so the figure is the simulator's, not the client's JSON encoder's. The
throttle is off: this measures the server, not Pisano's limits.

    python benchmarks/simulator_bench.py                          # 400 x 5000, 4 threads
    python benchmarks/simulator_bench.py --delivery-log /tmp/d.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout, installed or not

TOKEN = "bench-token"
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--delivery-log", help="JSONL delivery log path for the simulator")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.delivery_log)
        return
    bodies = [_body(i, args.recipients) for i in range(args.threads)]
    with _simulator(args.delivery_log) as simulator:
        cpu_before = simulator.cpu_s()
        _run(simulator.url, bodies, args.requests, args.recipients)
        cpu_per_request = (simulator.cpu_s() - cpu_before) / args.requests
    # The client shares the machine; the server's own CPU per request bounds what it can take.
    print(
        f"server CPU:   {cpu_per_request * 1000:.1f} ms per request, "
        f"so up to {1 / cpu_per_request:.0f} requests/s on one core"
    )


def _serve(delivery_log: str | None) -> None:
    from consumer.simulator import SimulatorConfig, serve

    config = SimulatorConfig.from_options(
        tokens=[TOKEN],
        campaigns=[CAMPAIGN],
        rate_limits="off",
        delivery_log=delivery_log,
        memory_log_recipients=100_000,
    )
    serve(config, "127.0.0.1", 0)


class _simulator:
    """The simulator in a child process."""

    def __init__(self, delivery_log: str | None) -> None:
        command = [sys.executable, __file__, "--serve"]
        if delivery_log:
            command += ["--delivery-log", delivery_log]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def __enter__(self) -> _simulator:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if "listening on " not in line:
            self._process.kill()
            raise SystemExit(f"the simulator did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()
        return self

    def cpu_s(self) -> float:
        """User + system CPU seconds of the child so far (Linux /proc)."""
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc_info: object) -> None:
        self._process.terminate()
        self._process.wait(10)
        if self._process.stdout is not None:
            self._process.stdout.close()


def _body(variant: int, recipients: int) -> bytes:
    phones = [f"+90{variant:02d}{i:09d}" for i in range(recipients)]
    return json.dumps(
        {
            "phone_numbers": phones,
            "custom_attributes": {
                p: {"name": f"Customer {i}", "external_id": f"ext-{i:08d}", "email": f"c{i}@x.io"}
                for i, p in enumerate(phones)
            },
            "built_in_responses": {
                p: {"customerDetailedInformation1": f"branch-{i % 100}"}
                for i, p in enumerate(phones)
            },
        }
    ).encode()


def _run(url: str, bodies: list[bytes], total: int, recipients: int) -> None:
    endpoint = f"{url}/v1/sms_campaigns/{CAMPAIGN}/sms_sharings"
    headers = {"Authorization": f"Token token={TOKEN}", "Content-Type": "application/json"}
    lock = threading.Lock()
    remaining = [total]
    statuses: Counter[int] = Counter()
    latencies: list[float] = []

    def fire(body: bytes) -> None:
        with httpx.Client(timeout=30) as client:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                started = time.perf_counter()
                status = client.post(endpoint, content=body, headers=headers).status_code
                with lock:
                    statuses[status] += 1
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=fire, args=(body,)) for body in bodies]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ok = statuses[200]
    latencies.sort()
    print(
        f"{total} requests x {recipients} recipients ({len(bodies[0]) / 1e6:.2f} MB each), "
        f"{len(bodies)} threads, {elapsed:.2f} s; statuses {dict(statuses)}"
    )
    print(f"requests/s:   {total / elapsed:.1f}")
    print(f"recipients/s: {ok * recipients / elapsed:,.0f}")
    print(
        f"latency ms:   p50 {statistics.median(latencies) * 1000:.1f}  "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f}"
    )


if __name__ == "__main__":
    main()
