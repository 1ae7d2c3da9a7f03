#!/usr/bin/env python3
"""Latency under Pisano's real throttle, and saturation by a backlog (issue 14), before and after pacing.

    make bench-latency                      # the stack must be able to start
    python scripts/localstack.py run -- python benchmarks/latency.py --mode all

One consumer replica (`pisano-sms run` in its own process) against the Pisano simulator, in this
process, which enforces the windows exactly (`consumer/simulator/throttle.py`): an independent
fake, it answers 429 to any request over a window. Each scenario runs once with
PISANO_PACE_SHARE=0 (before: every due batch takes the earliest slot) and once with the default
share (after), on a fresh topic, consumer group, Redis key prefix and simulator.

- latency: a steady stream of 1 and of 10 events/s for `--minutes` against the cloud windows
  20/5s,40/25s,80/125s,160/625s. Time is compressed `--compress` fold (default 10): the windows,
  the margin, BATCH_MAX_WAIT_MS and the horizon are divided by it, the event rate multiplied, and
  every figure is converted back. Latency runs from the moment an event is produced (its
  `occurred_at`) to the simulator's acceptance of the request that carried it. After the stream
  stops, the run waits until every event is delivered.
- spike: 20,000 events at once after a quiet period, real time (the consumer's own speed is not
  compressible): latency, requests, and when the first request and the last acceptance came.
- mixed: the same spike on top of a steady 1 event/s after `--mixed-minutes` (time compressed):
  whether the burst budget is still there when the spike comes. Converted back, its figures
  include the consumer's own time to read 20,000 events, tenfold.
- saturation: a backlog of `--backlog` events (more than one longest window carries), real time
  by default (`--saturation-compress`): requests accepted within the first longest window from
  the first request, as a share of that window's 160 (the run ends when they are spent), and
  mean recipients per request. Redis round trips per request: script calls (claim, settle, slot),
  without the limiter's once-a-second heartbeat.

Tables print at the end and one JSON line per run is appended to benchmarks/results/latency.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.config.windows import PISANO_CLOUD_LIMITS, RateWindow, parse_rate_limits  # noqa: E402
from consumer.ingest.samples import encode, phone_for, transaction  # noqa: E402
from consumer.simulator import SimulatorConfig, SimulatorServer  # noqa: E402

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
TOKEN = "latency-bench-token"
PACE_SHARE = "0.8"  # the default of PISANO_PACE_SHARE
MARGIN_MS, MAX_WAIT_MS, HORIZON_MS = 500, 1000, 30_000  # the consumer's defaults, before compression
GRACE_MS = 2000  # the throttle state is new in every run: the fleet holds this long at first use


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compressed(windows: tuple[RateWindow, ...], fold: float) -> str:
    return ",".join(f"{w.limit}/{max(1, round(w.period_ms / fold))}ms" for w in windows)


def violations(times_ns: list[int], window: RateWindow) -> int:
    period = window.period_ms * 1_000_000
    return sum(1 for j in range(window.limit, len(times_ns)) if times_ns[j] - times_ns[j - window.limit] < period)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))] if ordered else float("nan")


class Run:
    """One scenario's stack: a topic, a simulator enforcing `windows`, a consumer process."""

    def __init__(self, bootstrap: str, redis_url: str, windows: str, *, fold: float, pace_share: str,
                 workdir: Path, topic: str | None = None) -> None:
        self.bootstrap, self.redis_url, self.fold = bootstrap, redis_url, fold
        self.windows = parse_rate_limits(windows)
        self.topic = topic or f"lat-{uuid.uuid4().hex[:8]}"
        self.group = f"lat-{uuid.uuid4().hex[:8]}"
        self.log = workdir / f"{self.group}.jsonl"
        self.pace_share = pace_share
        if topic is None:
            create_topic(bootstrap, self.topic, 1)
        create_topic(bootstrap, f"{self.group}.dlq", 1)
        self.simulator = SimulatorServer(SimulatorConfig(tokens=frozenset({TOKEN}), campaigns=frozenset({CAMPAIGN}),
                                                         rate_limits=self.windows, delivery_log_path=self.log,
                                                         memory_log_recipients=0))
        self.process: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    def start(self) -> None:
        self.simulator.__enter__()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PISANO_", "BATCH_", "THROTTLE_"))}
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "KAFKA_TOPICS": self.topic, "KAFKA_GROUP_ID": self.group,
            "DLQ_TOPIC": f"{self.group}.dlq", "REDIS_URL": self.redis_url, "REDIS_KEY_PREFIX": self.group,
            "PISANO_URL": self.simulator.url, "PISANO_API_TOKEN": TOKEN, "PISANO_ALLOW_INSECURE": "true",
            "PISANO_RATE_LIMITS": ",".join(f"{w.limit}/{w.period_ms}ms" for w in self.windows),
            "PISANO_RATE_MARGIN_MS": str(round(MARGIN_MS / self.fold)),
            "BATCH_MAX_WAIT_MS": str(round(MAX_WAIT_MS / self.fold)),
            "THROTTLE_HORIZON_MS": str(round(HORIZON_MS / self.fold)), "THROTTLE_GRACE_MS": str(GRACE_MS),
            "PISANO_PACE_SHARE": self.pace_share, "HTTP_PORT": str(self.port), "LOG_LEVEL": "WARNING",
        })
        self.process = subprocess.Popen([sys.executable, "-m", "consumer", "run"], env=env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise SystemExit("the consumer exited")
            time.sleep(0.1)
        time.sleep(GRACE_MS / 1000 + 2)  # the first heartbeat's grace (a new state) is over: a quiet fleet

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self.simulator.__exit__(None, None, None)

    def delivered(self) -> dict[str, int]:
        """Phone -> acceptance time (epoch ms) of every delivered recipient."""
        found: dict[str, int] = {}
        if self.log.exists():
            for line in self.log.read_text().split("\n")[:-1]:
                record = json.loads(line)
                found[record["phone"]] = record["time_ms"]
        return found

    def wait_delivered(self, count: int, timeout_s: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.delivered()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def requests(self) -> dict[str, Any]:
        records = self.simulator.state.requests.records()
        accepted = [r for r in records if r["http_status"] == 200]
        times = sorted(r["clock_ns"] for r in accepted)
        return {"accepted": accepted, "throttled": sum(1 for r in records if r["http_status"] == 429),
                "window_violations": sum(violations(times, w) for w in self.windows)}


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "enable.idempotence": True})


def events(prefix: str, start: int, count: int) -> Iterator[tuple[str, bytes]]:
    for n in range(start, start + count):
        yield phone_for(n), encode(transaction(f"{prefix}-{n}", phone_for(n), CAMPAIGN, n=n))


def latency_figures(produced: dict[str, int], delivered: dict[str, int], requests: dict[str, Any],
                    fold: float) -> dict[str, Any]:
    waits = [(delivered[p] - t) * fold / 1000 for p, t in produced.items() if p in delivered]
    accepted = requests["accepted"]
    recipients = sum(r["recipients"] or 0 for r in accepted)
    return {"events": len(produced), "delivered": len(waits), "requests": len(accepted),
            "recipients_per_request": round(recipients / max(1, len(accepted)), 1),
            "p50_s": round(percentile(waits, 0.5), 1), "p90_s": round(percentile(waits, 0.9), 1),
            "p99_s": round(percentile(waits, 0.99), 1), "max_s": round(max(waits, default=float("nan")), 1),
            "throttled_429": requests["throttled"], "window_violations": requests["window_violations"]}


def steady(bootstrap: str, redis_url: str, workdir: Path, *, rate: float, minutes: float, fold: float,
           pace_share: str) -> dict[str, Any]:
    run = Run(bootstrap, redis_url, compressed(parse_rate_limits(PISANO_CLOUD_LIMITS), fold), fold=fold,
              pace_share=pace_share, workdir=workdir)
    run.start()
    try:
        wall_rate, wall_s = rate * fold, minutes * 60 / fold
        say(f"  steady {rate:g} events/s, share {pace_share}: {wall_s:.0f}s at {wall_rate:g} events/s (x{fold:g})")
        out, prefix, produced = producer(bootstrap), uuid.uuid4().hex[:6], {}
        started = time.monotonic()
        for n, (phone, value) in enumerate(events(prefix, 0, int(wall_rate * wall_s))):
            delay = started + n / wall_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            produced[phone] = int(time.time() * 1000)
            out.produce(run.topic, key=phone.encode(), value=value)
            out.poll(0)
        out.flush(30)
        # A backlog left by the windows drains within one longest window.
        delivered = run.wait_delivered(len(produced), 625 / fold + 60)
    finally:
        run.stop()
    return latency_figures(produced, delivered, run.requests(), fold)


def spike(bootstrap: str, redis_url: str, workdir: Path, *, count: int, pace_share: str) -> dict[str, Any]:
    run = Run(bootstrap, redis_url, PISANO_CLOUD_LIMITS, fold=1, pace_share=pace_share, workdir=workdir)
    run.start()
    try:
        say(f"  spike of {count:,} after a quiet period, share {pace_share}, real time")
        out, prefix, produced = producer(bootstrap), uuid.uuid4().hex[:6], {}
        spike_events = list(events(prefix, 0, count))  # encoded beforehand: the spike arrives at once
        first = time.time()
        for phone, value in spike_events:
            produced[phone] = int(time.time() * 1000)
            out.produce(run.topic, key=phone.encode(), value=value)
            out.poll(0)
        out.flush(30)
        delivered = run.wait_delivered(count, 700)
    finally:
        run.stop()
    figures = latency_figures(produced, delivered, run.requests(), 1)
    accepted = sorted(r["time_ms"] for r in run.requests()["accepted"])
    figures["first_request_s"] = round((accepted[0] - first * 1000) / 1000, 2) if accepted else None
    figures["all_delivered_s"] = round((max(delivered.values()) - first * 1000) / 1000, 2) if delivered else None
    return figures


def spike_in_stream(bootstrap: str, redis_url: str, workdir: Path, *, count: int, rate: float, minutes: float,
                    fold: float, pace_share: str) -> dict[str, Any]:
    """A steady stream for `minutes`, then a spike of `count` events on top of it (time compressed)."""
    run = Run(bootstrap, redis_url, compressed(parse_rate_limits(PISANO_CLOUD_LIMITS), fold), fold=fold,
              pace_share=pace_share, workdir=workdir)
    run.start()
    try:
        wall_rate, wall_s = rate * fold, minutes * 60 / fold
        say(f"  spike of {count:,} after {minutes:g} min of {rate:g} event/s, share {pace_share} (x{fold:g})")
        out, prefix, stream = producer(bootstrap), uuid.uuid4().hex[:6], {}
        started = time.monotonic()
        for n, (phone, value) in enumerate(events(prefix, 0, int(wall_rate * wall_s))):
            time.sleep(max(0.0, started + n / wall_rate - time.monotonic()))
            stream[phone] = int(time.time() * 1000)
            out.produce(run.topic, key=phone.encode(), value=value)
            out.poll(0)
        spike_events = list(events(prefix, 10_000_000 - count, count))
        spiked, first = {}, time.time()
        for phone, value in spike_events:
            spiked[phone] = int(time.time() * 1000)
            out.produce(run.topic, key=phone.encode(), value=value)
            out.poll(0)
        out.flush(30)
        delivered = run.wait_delivered(len(stream) + count, 625 / fold + 60)
    finally:
        run.stop()
    figures = latency_figures(spiked, delivered, run.requests(), fold)
    after = sorted(r["time_ms"] for r in run.requests()["accepted"] if r["time_ms"] >= first * 1000)
    figures["first_request_s"] = round((after[0] - first * 1000) * fold / 1000, 1) if after else None
    figures["all_delivered_s"] = round((max(delivered[p] for p in spiked if p in delivered) - first * 1000)
                                       * fold / 1000, 1)
    figures["requests"] = len(after)
    del figures["recipients_per_request"]
    return figures


def saturation(bootstrap: str, redis_url: str, workdir: Path, topic: str, *, backlog: int, fold: float,
               pace_share: str) -> dict[str, Any]:
    windows = parse_rate_limits(compressed(parse_rate_limits(PISANO_CLOUD_LIMITS), fold))
    longest = max(windows, key=lambda w: w.period_ms)
    run = Run(bootstrap, redis_url, compressed(parse_rate_limits(PISANO_CLOUD_LIMITS), fold), fold=fold,
              pace_share=pace_share, workdir=workdir, topic=topic)
    client = redis.Redis.from_url(redis_url)
    run.start()
    client.config_resetstat()
    started = time.monotonic()
    period_ns = longest.period_ms * 1_000_000
    try:
        say(f"  saturation: backlog {backlog:,}, share {pace_share}, windows x{fold:g}: the first "
            f"{longest.period_ms / 1000:.0f}s from the first request, or until its {longest.limit} requests are spent")
        first_ns = None
        # The shorter windows never hold the fleet back longer than the 80/125s one's gap (95 s
        # real): a longer silence means the longest window's slots are all spent (or wasted).
        silence_ns = (max(w.period_ms for w in windows if w is not longest) * 1_000_000) * 0.9
        while True:
            time.sleep(1)
            accepted = [r["clock_ns"] for r in run.simulator.state.requests.records() if r["http_status"] == 200]
            if accepted and first_ns is None:
                first_ns = min(accepted)
            if first_ns is not None and (len(accepted) >= longest.limit
                                         or time.monotonic_ns() > first_ns + period_ns + 2e9
                                         or time.monotonic_ns() - max(accepted) > silence_ns):
                break  # no more can be accepted in the window: its budget is spent, or it is over
            if time.monotonic() - started > longest.period_ms / 1000 + 120:
                break
        elapsed = time.monotonic() - started
        stats = client.info("commandstats")
    finally:
        run.stop()
    requests = run.requests()
    assert first_ns is not None, "no request was accepted"
    inside = [r for r in requests["accepted"] if r["clock_ns"] < first_ns + period_ns]
    last_s = (max(r["clock_ns"] for r in inside) - first_ns) / 1e9
    # Round trips: script calls, as benchmarks/throughput.py counts them (claim, settle, the slot),
    # without the limiter's heartbeat, one script call a second whether or not anything is sent.
    scripts = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    sent = max(1, len(requests["accepted"]))
    return {"window": str(parse_rate_limits(PISANO_CLOUD_LIMITS)[-1]), "requests_in_window": len(inside),
            "budget_used": round(len(inside) / longest.limit, 4),
            "spent_after_s": round(last_s * fold, 1),
            "recipients_per_request": round(sum(r["recipients"] or 0 for r in inside) / max(1, len(inside)), 1),
            "redis_round_trips_per_request": round((scripts - elapsed) / sent, 2),
            "throttled_429": requests["throttled"], "window_violations": requests["window_violations"]}


def produce_backlog(bootstrap: str, count: int) -> str:
    topic = f"sat-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 6)
    out = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000,
                    "compression.type": "lz4", "enable.idempotence": True})
    prefix = uuid.uuid4().hex[:6]
    for n, (phone, value) in enumerate(events(prefix, 0, count)):
        while True:
            try:
                out.produce(topic, key=phone.encode(), value=value)
                break
            except BufferError:
                out.poll(0.05)
        if n % 100_000 == 0:
            out.poll(0)
    out.flush(300)
    return topic


def table(title: str, rows: list[tuple[str, dict[str, Any]]], columns: list[str]) -> None:
    print(f"\n{title}")
    print("| run | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, figures in rows:
        print(f"| {name} | " + " | ".join(str(figures.get(c)) for c in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["latency", "saturation", "mixed", "all"], default="all")
    parser.add_argument("--minutes", type=float, default=25.0, help="each steady load, in real-time minutes")
    parser.add_argument("--compress", type=float, default=10.0, help="time compression of the steady loads")
    parser.add_argument("--rates", default="1,10", help="steady loads, events/s")
    parser.add_argument("--spike", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=850_000)
    parser.add_argument("--saturation-compress", type=float, default=1.0,
                        help="the consumer must read the window's 800,000 recipients within it: on a busy 2-core "
                             "machine only real time is safe")
    parser.add_argument("--mixed-minutes", type=float, default=10.0,
                        help="the steady stream before the spike in mixed mode, real-time minutes")
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:16379/0")
    workdir = ROOT / "benchmarks" / "results" / "latency-logs"
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    shares = [("before (PISANO_PACE_SHARE=0)", "0"), (f"after (PISANO_PACE_SHARE={PACE_SHARE})", PACE_SHARE)]
    latency_rows: list[tuple[str, dict[str, Any]]] = []
    spike_rows: list[tuple[str, dict[str, Any]]] = []
    saturation_rows: list[tuple[str, dict[str, Any]]] = []
    if args.mode in ("latency", "all"):
        for rate in (float(r) for r in args.rates.split(",")):
            for name, share in shares:
                figures = steady(bootstrap, redis_url, workdir, rate=rate, minutes=args.minutes, fold=args.compress,
                                 pace_share=share)
                say(f"    {figures}")
                latency_rows.append((f"{rate:g} event/s, {name}", figures))
                results.append({"scenario": "steady", "rate": rate, "minutes": args.minutes,
                                "compress": args.compress, "pace_share": share, **figures})
        for name, share in shares:
            figures = spike(bootstrap, redis_url, workdir, count=args.spike, pace_share=share)
            say(f"    {figures}")
            spike_rows.append((f"spike {args.spike:,}, {name}", figures))
            results.append({"scenario": "spike", "events": args.spike, "pace_share": share, **figures})
    if args.mode in ("mixed", "all"):
        for name, share in shares:
            figures = spike_in_stream(bootstrap, redis_url, workdir, count=args.spike, rate=1.0,
                                      minutes=args.mixed_minutes, fold=args.compress, pace_share=share)
            say(f"    {figures}")
            spike_rows.append((f"spike {args.spike:,} after {args.mixed_minutes:g} min of 1 event/s "
                               f"(x{args.compress:g}), {name}", figures))
            results.append({"scenario": "spike_in_stream", "events": args.spike, "minutes": args.mixed_minutes,
                            "compress": args.compress, "pace_share": share, **figures})
    if args.mode in ("saturation", "all"):
        say(f"producing a backlog of {args.backlog:,} events")
        topic = produce_backlog(bootstrap, args.backlog)
        for name, share in shares:
            figures = saturation(bootstrap, redis_url, workdir, topic, backlog=args.backlog,
                                 fold=args.saturation_compress, pace_share=share)
            say(f"    {figures}")
            saturation_rows.append((name, figures))
            results.append({"scenario": "saturation", "backlog": args.backlog, "compress": args.saturation_compress,
                            "pace_share": share, **figures})
    latency_columns = ["requests", "recipients_per_request", "p50_s", "p90_s", "p99_s", "max_s", "delivered",
                       "throttled_429", "window_violations"]
    if latency_rows:
        table(f"Latency, steady load, {args.minutes:g} min, time compressed x{args.compress:g} (figures converted "
              "back to real time), event produced -> accepted by the simulator", latency_rows, latency_columns)
    if spike_rows:
        table("Spike (after a quiet period: real time; in a stream: compressed, converted back, the consumer's "
              "own reading time included tenfold)", spike_rows,
              ["first_request_s", "all_delivered_s", *latency_columns])
    if saturation_rows:
        table(f"Saturation, backlog {args.backlog:,}, windows compressed x{args.saturation_compress:g}",
              saturation_rows, ["window", "requests_in_window", "budget_used", "spent_after_s",
                                "recipients_per_request", "redis_round_trips_per_request", "throttled_429",
                                "window_violations"])
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with open(ROOT / "benchmarks" / "results" / "latency.jsonl", "a", encoding="utf-8") as out:
        for result in results:
            out.write(json.dumps({"at": stamp, **result}) + "\n")


if __name__ == "__main__":
    main()
