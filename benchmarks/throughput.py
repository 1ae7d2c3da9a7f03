#!/usr/bin/env python3
"""Throughput of one consumer replica, end to end, against the raw ceiling of the same events.

    make bench                                   # the stack must be able to start
    python scripts/localstack.py run -- python benchmarks/throughput.py --events 200000

N events (unique ids and phones, several campaigns) go into a fresh 6-partition topic on the
local Kafka. The Pisano simulator runs in its own process, answers at once, throttle off. Then:

- raw ceiling: a bare confluent-kafka consumer reads the same events and decodes the Avro, nothing
  else: the most any Python consumer of this topic could do on this machine; with the consumer's
  own reader (generated for the schema) and, as the issue's plain consumer does, with
  `fastavro.schemaless_reader`, each with its ratio;
- end to end: `pisano-sms run` in its own process, from its first poll until the group's
  committed offsets reach the end of every partition (so every event delivered or dead-lettered);
  with `--stand-in`, the same run with each record decoded and mapped before it and looked up
  (benchmarks/stand_in_run.py): the most a native decoder and mapper could give;
  with `--refused`, the same run with Pisano knowing none of the campaigns: every event ends as a
  dead-letter (the flood after a campaign is deleted or a token loses its rights), counted on the
  dead-letter topic; the stage costs and the memory are then left out; with `--with receipts`,
  `--with contact-policy` (or both, comma-separated), the end-to-end runs with receipts written
  and the contact policy on (a 30-day cooldown and the opt-out list it needs);
- the issue's hand-written consumer (benchmarks/plain_consumer.py: confluent-kafka, fastavro,
  batches per campaign, httpx, a commit after each round of POSTs; no dedup, no validation, no
  dead letters) on the same events and simulator, alternated with ours: its events/s and CPU per
  event, and ours over its (without `--refused`: it stops at Pisano's first refusal);
- Redis round trips per Pisano request (the server's count of script calls, divided by requests);
- Redis server CPU per event (INFO cpu, used_cpu_user + used_cpu_sys, over the end-to-end run);
- the consumer's CPU per event, whole process (all threads), with and without its start-up;
- CPU microseconds per event by stage, each stage timed alone on 20,000 of the same events (the
  decode, batch and JSON stages best of three; mapping, dedup and POST once: a second pass would
  find the phones cached, the ids claimed); decode and map are one native stage when the native
  core takes the records (consumer/ingest/fused.py), the Python ones shown beside it; and the poll
  loop as a whole (benchmarks/poll_loop.py: the consumer's Pipeline on the same records in memory),
  which holds the decode, map and batch stages: the sum is consume, poll loop, JSON, dedup, POST;
  `NATIVE_INTAKE=off` in the environment runs all of it (consumer and stages) in Python;
- the consumer's peak RSS, and the memory added per 100,000 events held while the throttle
  keeps them waiting.

The ceilings and the end-to-end run are measured `--runs` times (3), alternated, and each figure
is its best (the spread is printed too): on a shared VM one run's throughput moves by 15% from one
minute to the next, and noise only adds.

Results print as a table and are appended as one JSON line to benchmarks/results/throughput.jsonl.
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import httpx
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # poll_loop.py, a stage

from consumer.config.resources import default_mapping_file  # noqa: E402
from consumer.delivery.batching import Batcher, PendingEvent  # noqa: E402
from consumer.delivery.pisano import PisanoClient, build_body  # noqa: E402
from consumer.ingest.avro import SchemalessDecoder  # noqa: E402
from consumer.ingest.kafka import produce_waiting  # noqa: E402
from consumer.ingest.mapping import DeclarativeMapper  # noqa: E402
from consumer.ingest.samples import default_schema, transactions  # noqa: E402
from consumer.operations.logs import redact_text  # noqa: E402
from consumer.state.dedup import ClaimRequest, RedisDedup, Settlement  # noqa: E402
from consumer.state.redis import Keys, connect  # noqa: E402

CAMPAIGNS = ["ae51458c-9e82-417f-8f1d-e074891ea5c1", "9a1e0000-0000-4000-8000-000000000001",
             "3f0c0000-0000-4000-8000-000000000002", "3f0c0000-0000-4000-8000-000000000003"]
TOKEN = "bench-token"
UNKNOWN_CAMPAIGN = "00000000-0000-4000-8000-00000000dead"  # with --refused, the only campaign Pisano knows
STAGE_SAMPLE = 20_000
GAUGE_WAIT_S = 6  # the consumer's gauges refresh every 5 s


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def require_stack(bootstrap: str, redis_url: str) -> None:
    """Kafka and Redis answer, or a line that says what to do: against a stack that is down, the
    Kafka client only retries and logs connection failures, and the benchmark would wait."""
    missing = []
    try:
        # log_level 0: its own connection-refused lines would bury the one line below
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=10)
    except Exception:  # KafkaException: no broker answered within the timeout
        missing.append(f"Kafka at {bootstrap}")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=5).ping()
    except redis.RedisError:
        missing.append("Redis at REDIS_URL")
    if missing:
        say(f"error: {' and '.join(missing)} not reachable: start the local stack (`make up`, or run "
            "`make bench`, which starts it) or point KAFKA_BOOTSTRAP_SERVERS and REDIS_URL at yours")
        sys.exit(2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator(refused: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """The simulator, throttle off; knowing every campaign, or with `refused` none of ours."""
    port = free_port()
    campaigns = ["--campaign", UNKNOWN_CAMPAIGN] if refused else ["--any-campaign"]
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer", "simulate", "--port", str(port), *campaigns,
         "--rate-limits", "off", "--memory-log-recipients", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "LOG_LEVEL": "WARNING", "PISANO_API_TOKEN": TOKEN})  # the token not in argv
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_sim/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the simulator did not start")


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the future resolves
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def produce(bootstrap: str, topic: str, events: int, *, create: bool = True) -> None:
    if create:
        create_topic(bootstrap, topic, 6)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000,
                         "compression.type": "lz4", "enable.idempotence": True})
    started = time.monotonic()
    for n, (key, value) in enumerate(transactions(events, CAMPAIGNS, prefix=f"b{uuid.uuid4().hex[:6]}")):
        produce_waiting(producer, topic, key=key, value=value)
        if n % 50_000 == 0 and n:
            say(f"  produced {n:,}")
    producer.flush(120)
    say(f"produced {events:,} events in {time.monotonic() - started:.1f}s")


def raw_ceiling(bootstrap: str, topic: str, events: int, plain: bool = False) -> float:
    """Consume + decode only: what the topic gives a Python consumer on this machine, decoding
    with the consumer's own reader (generated for the schema), or with `plain` as a plain consumer
    would: `fastavro.schemaless_reader` per record (the issue's hand-written consumer)."""
    schema = default_schema()
    decode: Any = SchemalessDecoder(schema).decode
    if plain:
        def decode(value: bytes) -> Any:
            return fastavro.schemaless_reader(io.BytesIO(value), schema)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "queued.max.messages.kbytes": 65_536, "fetch.wait.max.ms": 100})
    consumer.subscribe([topic])
    seen = 0
    started = None
    while seen < events:
        messages = consumer.consume(1000, 1.0)
        if messages and started is None:
            started = time.monotonic()
        for message in messages:
            if message.error() is None:
                decode(message.value())
                seen += 1
    elapsed = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return events / elapsed


def plain_end_to_end(bootstrap: str, topic: str, simulator_url: str, events: int) -> dict[str, float]:
    """The issue's hand-written consumer (benchmarks/plain_consumer.py: no dedup, no validation, no
    dead letters) on the same events, against the same simulator: its events/s from its first poll
    to its last commit, and its process CPU per event."""
    process = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "plain_consumer.py"), "--topic", topic,
         "--group", f"plain-{uuid.uuid4().hex[:6]}", "--pisano-url", simulator_url, "--events", str(events)],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PISANO_API_TOKEN": TOKEN},
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    if process.returncode != 0:
        raise SystemExit(f"the plain consumer failed: {process.stderr.strip()[-2000:]}")
    return dict(json.loads(process.stdout.strip().splitlines()[-1]))


def committed_all(admin_consumer: Consumer, topic: str, ends: dict[int, int]) -> bool:
    result = admin_consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
    return all(tp.offset == ends[tp.partition] for tp in result)


def end_to_end(bootstrap: str, redis_url: str, topic: str, simulator_url: str, events: int,
               stand_in: bool = False, features: tuple[str, ...] = ()) -> dict[str, Any]:
    group = f"bench-{uuid.uuid4().hex[:6]}"
    dlq = f"{topic}.{group}.dlq"  # each run its own
    create_topic(bootstrap, dlq, 1)
    extra = feature_settings(bootstrap, f"{topic}.{group}", features)
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPICS": topic, "KAFKA_GROUP_ID": group,
           "DLQ_TOPIC": dlq, "REDIS_URL": redis_url, "PISANO_URL": simulator_url, "PISANO_API_TOKEN": TOKEN,
           "PISANO_ALLOW_INSECURE": "true",
           "PISANO_RATE_LIMITS": "off", "HTTP_PORT": str(port), "LOG_LEVEL": "WARNING",
           "REDIS_KEY_PREFIX": group,
           # The run's end is seen in the committed offsets: committing every 100 ms instead of
           # every second keeps a run of a few seconds from being measured in steps of a sixth.
           "COMMIT_INTERVAL_MS": os.environ.get("COMMIT_INTERVAL_MS", "100"), **extra}
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(6)}
    redis_client = redis.Redis.from_url(redis_url)
    redis_client.config_resetstat()
    before = httpx.get(f"{simulator_url}/_sim/stats").json()  # the simulator counts across runs
    redis_cpu_before = redis_cpu_s(redis_client)
    command = [str(ROOT / "benchmarks" / "stand_in_run.py")] if stand_in else ["-m", "consumer", "run"]
    process = subprocess.Popen([sys.executable, *command], env=env, cwd=ROOT)
    first_poll = None
    cpu_at_first_poll = 0.0
    try:
        while first_poll is None:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
                consumed = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                               if line.startswith("pisano_sms_events_consumed_total"))
                if consumed > 0:
                    first_poll = time.monotonic()
                    cpu_at_first_poll = _cpu_s(process.pid)
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise SystemExit("the consumer exited")
            time.sleep(0.01)
        last_report = first_poll
        while not committed_all(probe, topic, ends):
            time.sleep(0.05)
            if time.monotonic() - last_report > 2:
                last_report = time.monotonic()
                say(f"  {time.monotonic() - first_poll:.0f}s ...")
        last_commit = time.monotonic()
        redis_cpu = redis_cpu_s(redis_client) - redis_cpu_before
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        diagnostics = {name: sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                 if line.startswith(f"pisano_sms_{name}"))
                       for name in ("events_held_total", "duplicates_skipped_total", "throttle_slots_wasted_total",
                                    "batch_size_count", "redis_errors_total")}
        say(f"  {diagnostics}")
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak_rss_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
        cpu_s = _cpu_s(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        probe.close()
    commands = redis_client.info("commandstats")
    script_calls = sum(v["calls"] for k, v in commands.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    stats = httpx.get(f"{simulator_url}/_sim/stats").json()
    requests = stats["requests"]["by_status"].get("200", 0) - before["requests"]["by_status"].get("200", 0)
    return {
        "dlq_topic": dlq,
        "events_per_s": events / (last_commit - first_poll),
        "seconds": last_commit - first_poll,
        "requests": requests,
        "recipients_delivered": stats["recipients_delivered"] - before["recipients_delivered"],
        "redis_round_trips_per_request": script_calls / max(1, requests),
        "redis_cpu_us_per_event": redis_cpu * 1e6 / events,
        "peak_rss_mb": peak_rss_mb,
        "consumer_cpu_us_per_event": cpu_s * 1e6 / events,
        # Without the start-up (imports, settings, connections: about half a second, a fixed cost
        # that a run of 200,000 events spreads at 2 to 3 us each): the cost of the work per event.
        "consumer_cpu_after_start_us_per_event": (cpu_s - cpu_at_first_poll) * 1e6 / events,
    }


FEATURES = ("receipts", "contact-policy")


def feature_settings(bootstrap: str, name: str, features: tuple[str, ...]) -> dict[str, str]:
    """The settings that turn the features on (`--with`): receipts to a topic of the run's own,
    the contact policy (a 30-day cooldown, with the opt-out list it needs) on every phone."""
    settings: dict[str, str] = {}
    if "receipts" in features:
        create_topic(bootstrap, f"{name}.receipts", 6)
        settings |= {"OUTCOME_TOPIC": f"{name}.receipts", "OUTCOME_PHONE_SALT": uuid.uuid4().hex * 2}
    if "contact-policy" in features:
        settings |= {"CONTACT_COOLDOWN": "30d", "SUPPRESSION_KEY": uuid.uuid4().hex * 2}
    return settings


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's best over the runs (most events/s, least CPU and memory), and the spread of
    throughput and CPU: on a shared machine noise only adds, so the best is the closest to the
    cost of the work itself (as `timeit` reports)."""
    best = dict(min(runs, key=lambda run: run["consumer_cpu_after_start_us_per_event"]))
    for key in best:
        if key in ("events_per_s",):
            best[key] = max(run[key] for run in runs)
        elif key.endswith(("us_per_event", "_mb", "seconds", "per_request")):
            best[key] = min(run[key] for run in runs)
    best["recipients_delivered"] = min(run["recipients_delivered"] for run in runs)
    best["spread"] = {key: [round(run[key], 2) for run in runs]
                      for key in ("events_per_s", "consumer_cpu_after_start_us_per_event")}
    return best


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"pisano_sms_{name}"))


def _rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def buffered_memory(bootstrap: str, redis_url: str, simulator_url: str, events: int = 100_000) -> float:
    """RSS added per 100,000 events held in memory: the consumer starts on an empty topic (its
    baseline), then `events` arrive while the throttle lets one request an hour leave, so they
    stay buffered up to MAX_BUFFERED_EVENTS."""
    topic = f"mem-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 6)
    group = f"mem-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, f"{topic}.dlq", 1)
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPICS": topic, "KAFKA_GROUP_ID": group,
           "DLQ_TOPIC": f"{topic}.dlq", "REDIS_URL": redis_url, "PISANO_URL": simulator_url,
           "PISANO_API_TOKEN": TOKEN, "PISANO_ALLOW_INSECURE": "true", "PISANO_RATE_LIMITS": "1/3600s",
           "MAX_BUFFERED_EVENTS": str(events), "MAX_BUFFERED_BYTES": str(2**31), "HTTP_PORT": str(port),
           "LOG_LEVEL": "WARNING", "REDIS_KEY_PREFIX": group}
    process = subprocess.Popen([sys.executable, "-m", "consumer", "run"], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(3)  # assigned, polling an empty topic: the baseline
        baseline = _rss_mb(process.pid)
        produce(bootstrap, topic, events + events // 10, create=False)
        held = 0.0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and held < events * 0.9:
            time.sleep(1)
            held = _metric(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, "unfinished_records")
        time.sleep(GAUGE_WAIT_S)  # the gauge and the memory settle
        held = _metric(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, "unfinished_records")
        grown = _rss_mb(process.pid) - baseline
        say(f"  {held:,.0f} events held, RSS {baseline:.0f} MB -> {baseline + grown:.0f} MB")
        return grown * 100_000 / max(1.0, held)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def redis_cpu_s(client: Any) -> float:
    """The Redis server's CPU time so far (all its threads, user and system)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _best(work: Any, count: int, runs: int = 3) -> tuple[Any, float]:
    """`work()`'s result and its best CPU µs per event over `runs`: one cold pass in a process
    whose heap the earlier stages filled measured whatever collection or allocator work landed in
    it (the batch stage read 1.6 to 6.4 µs/event for the same code)."""
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.process_time()
        result = work()
        best = min(best, (time.process_time() - started) * 1e6 / count)
    return result, best


# Stages timed alone that the poll-loop stage holds: shown, not added to the sum again.
INSIDE_POLL_LOOP = ("decode", "map", "native_decode_map", "batch")


def stage_costs(bootstrap: str, topic: str, redis_url: str, simulator_url: str) -> dict[str, float]:
    """CPU microseconds per event of each stage, timed alone on the same events."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"stages-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list[Any] = []
    started = time.process_time()
    while len(messages) < STAGE_SAMPLE:
        messages.extend(m for m in consumer.consume(1000, 1.0) if m.error() is None)
    poll_cpu = time.process_time() - started
    consumer.close()
    messages = messages[:STAGE_SAMPLE]
    values = [m.value() for m in messages]
    count = len(values)
    costs: dict[str, float] = {"poll": poll_cpu * 1e6 / count}
    python: dict[str, float] = {}

    mapper = DeclarativeMapper.from_file(default_mapping_file())
    # As the consumer decodes and maps: in one native pass where the native core takes the records
    # (consumer/ingest/fused.py), else decoded, then mapped, in Python. The Python stages are timed
    # either way, but count in the stage sum only when they are the consumer's path.
    python_only = os.environ.get("NATIVE_INTAKE", "auto").lower() == "off"  # as the consumer reads it
    decoder = SchemalessDecoder(default_schema(), mapper.fields_read(), None if python_only else mapper)
    records, python["decode"] = _best(lambda: [decoder.decode(v) for v in values], count)
    started = time.process_time()
    recipients = [mapper.map(r) for r in records]
    python["map"] = (time.process_time() - started) * 1e6 / count
    if not python_only and all(decoder.recipient(v) is not None for v in values):
        natively, costs["native_decode_map"] = _best(lambda: [decoder.recipient(v) for v in values], count)
        assert natively == recipients, "the native core and the Python path disagree"
    else:
        costs |= python

    def batched() -> list[Any]:
        batcher = Batcher(5000, 0.0)
        batcher.add(PendingEvent(m, (m.topic(), m.partition()), m.offset(), 1, r, 0.0)
                    for m, r in zip(messages, recipients, strict=True))
        taken = []
        while (batch := batcher.take()) is not None:
            taken.append(batch)
        return taken

    batches, costs["batch"] = _best(batched, count)
    bodies, costs["json_body"] = _best(
        lambda: [(b.campaign_id, build_body([e.recipient for e in b.events])) for b in batches], count)

    dedup = RedisDedup(connect(redis_url), Keys(f"stages-{uuid.uuid4().hex[:6]}"), lease_ms=60_000,
                         horizon_s=3600)
    started = time.process_time()
    for batch in batches:
        tag = dedup.new_tag()
        dedup.claim(tag, [ClaimRequest(e.recipient.event_id) for e in batch.events])
        dedup.settle(Settlement.DELIVERED, tag, [e.recipient.event_id for e in batch.events])
    costs["dedup_claim_settle"] = (time.process_time() - started) * 1e6 / count

    client = PisanoClient(simulator_url, TOKEN, timeout_s=30, connect_timeout_s=5, max_connections=1)
    started = time.process_time()
    for campaign, body in bodies:
        client.send(campaign, body)
    costs["http_post"] = (time.process_time() - started) * 1e6 / count
    client.close()
    # The poll loop as a whole, timed alone: the consumer's Pipeline taking the same records from
    # memory to their outcomes (benchmarks/poll_loop.py): the snapshot, decode and map, the
    # recipient check, batching and the offset bookkeeping. It holds the decode, map and batch
    # stages above, which are shown inside it, not added to it again.
    from poll_loop import loop_cpu

    costs["poll_loop"], _ = loop_cpu(messages, topic, python=python_only)
    costs["total"] = sum(cost for name, cost in costs.items() if name not in INSIDE_POLL_LOOP)
    if "native_decode_map" in costs:  # shown beside it, in no sum
        costs |= {f"python_{name}": cost for name, cost in python.items()}
    return costs


def append_result(result: dict[str, Any]) -> None:
    """One JSON line in benchmarks/results/throughput.jsonl."""
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    with open(out / "throughput.jsonl", "a", encoding="utf-8") as results:
        results.write(json.dumps(result) + "\n")


def refused_report(bootstrap: str, events: int, runs: list[dict[str, Any]], e2e: dict[str, Any],
                   ceiling: float, plain_ceiling: float, features: tuple[str, ...]) -> None:
    """`--refused`: every event must be on its run's dead-letter topic; the figures printed and
    appended to the results file."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:6]}"})
    try:
        counts = [probe.get_watermark_offsets(TopicPartition(run["dlq_topic"], 0), timeout=10)[1] for run in runs]
    finally:
        probe.close()
    result = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "events": events, "runs": len(runs),
              "refused": "every campaign unknown", **({"with": list(features)} if features else {}),
              "raw_ceiling_events_per_s": round(ceiling),
              **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in e2e.items() if k != "dlq_topic"},
              "ratio": round(e2e["events_per_s"] / ceiling, 3),
              "plain_raw_ceiling_events_per_s": round(plain_ceiling),
              "ratio_to_plain": round(e2e["events_per_s"] / plain_ceiling, 3), "dead_letters": counts}
    print()
    rates = ", ".join(f"{v:,.0f}" for v in e2e["spread"]["events_per_s"])
    print(f"  best of {len(runs)} runs each (every run: {rates} events/s)")
    print(f"  dead-lettered       {e2e['events_per_s']:>10,.0f} events/s  ({e2e['seconds']:.1f}s, "
          f"{e2e['requests']} requests accepted)")
    print(f"  raw ceiling         {ceiling:>10,.0f} events/s  ratio {result['ratio']:.2f}")
    print(f"  plain raw ceiling   {plain_ceiling:>10,.0f} events/s  ratio {result['ratio_to_plain']:.2f}")
    print(f"  consumer CPU        {e2e['consumer_cpu_us_per_event']:>10.1f} us/event (whole process), "
          f"{e2e['consumer_cpu_after_start_us_per_event']:.1f} after start-up")
    print(f"  Redis server CPU    {e2e['redis_cpu_us_per_event']:>10.2f} us/event")
    print(f"  dead-letters        {', '.join(f'{c:,}' for c in counts)} (one run each)")
    append_result(result)
    short = [count for count in counts if count != events]
    if short:
        raise SystemExit(f"a run's dead-letter topic holds {short[0]:,} of {events:,} events")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3,
                        help="ceilings and end-to-end runs, best of these (a shared VM's noise only adds)")
    parser.add_argument("--stand-in", action="store_true",
                        help="end to end with every record decoded and mapped before the run and looked up "
                             "(benchmarks/stand_in_run.py): the bound of a native decoder and mapper")
    parser.add_argument("--with", dest="features", default="",
                        help=f"features on in the end-to-end runs, comma-separated: {', '.join(FEATURES)}")
    parser.add_argument("--refused", action="store_true",
                        help="Pisano knows none of the campaigns: every event is dead-lettered (a flood of "
                             "dead-letters); stage costs and memory left out")
    args = parser.parse_args()
    features = tuple(f for f in args.features.split(",") if f)
    if set(features) - set(FEATURES):
        parser.error(f"--with: one of {', '.join(FEATURES)}")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:16379/0")
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    if args.stand_in:
        say("--stand-in: decode and map looked up in the end-to-end runs (the bound of a native per-record path)")
    say(f"{args.events:,} events, Kafka {bootstrap}, Redis {redact_text(redis_url)}, {os.cpu_count()} CPUs"
        + (f", with {', '.join(features)}" if features else ""))
    require_stack(bootstrap, redis_url)
    # A SIGTERM (a timeout, an impatient kill) ends the run through its `finally` clauses, so the
    # simulator and consumer processes it started stop with it instead of staying behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # The image runs from bytecode pip compiled at install; an editable checkout with
    # PYTHONDONTWRITEBYTECODE (as the image sets) compiles every module again at each start, about
    # 0.1 s of CPU a run that the start-up figures would otherwise count.
    compileall.compile_dir(ROOT / "consumer", quiet=1)
    if args.refused:
        say("--refused: Pisano knows none of the campaigns, every event ends on the dead-letter topic")
    simulator, simulator_url = start_simulator(args.refused)
    try:
        produce(bootstrap, topic, args.events)
        ceilings: list[float] = []
        plain_ceilings: list[float] = []
        runs: list[dict[str, Any]] = []
        plains: list[dict[str, float]] = []
        # Alternated, so that a slow minute of the machine falls on every kind of run alike.
        for run in range(1, args.runs + 1):
            say(f"run {run} of {args.runs}: raw ceiling: consume + Avro decode only")
            ceilings.append(raw_ceiling(bootstrap, topic, args.events))
            say(f"  {ceilings[-1]:,.0f} events/s")
            say(f"run {run} of {args.runs}: raw ceiling of a plain consumer: consume + fastavro.schemaless_reader")
            plain_ceilings.append(raw_ceiling(bootstrap, topic, args.events, plain=True))
            say(f"  {plain_ceilings[-1]:,.0f} events/s")
            say(f"run {run} of {args.runs}: end to end: pisano-sms run, first poll to last commit")
            runs.append(end_to_end(bootstrap, redis_url, topic, simulator_url, args.events, args.stand_in, features))
            say(f"  {runs[-1]['events_per_s']:,.0f} events/s, "
                f"{runs[-1]['consumer_cpu_after_start_us_per_event']:.1f} us/event after start-up")
            if not args.refused:  # (it would stop at Pisano's first refusal: it has no dead letters)
                say(f"run {run} of {args.runs}: the hand-written consumer (benchmarks/plain_consumer.py), "
                    "first poll to last commit")
                plains.append(plain_end_to_end(bootstrap, topic, simulator_url, args.events))
                say(f"  {plains[-1]['events_per_s']:,.0f} events/s, "
                    f"{plains[-1]['cpu_after_start_us_per_event']:.1f} us/event after start-up")
        ceiling, plain_ceiling = max(ceilings), max(plain_ceilings)
        e2e = best_of(runs)
        if args.refused:
            refused_report(bootstrap, args.events, runs, e2e, ceiling, plain_ceiling, features)
            return
        say("CPU per event by stage")
        stages = stage_costs(bootstrap, topic, redis_url, simulator_url)
        say("memory: RSS per 100,000 buffered events")
        rss_per_100k = buffered_memory(bootstrap, redis_url, simulator_url)
    finally:
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(30)
    result = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "events": args.events, "runs": args.runs,
              **({"stand_in": "decode-and-map"} if args.stand_in else {}),
              **({"with": list(features)} if features else {}),
              "raw_ceiling_events_per_s": round(ceiling),
              **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in e2e.items()},
              "ratio": round(e2e["events_per_s"] / ceiling, 3),
              "plain_raw_ceiling_events_per_s": round(plain_ceiling),
              "ratio_to_plain": round(e2e["events_per_s"] / plain_ceiling, 3),
              "cpu_after_start_over_stage_sum": round(
                  e2e["consumer_cpu_after_start_us_per_event"] / stages["total"], 2),
              "cpu_us_per_event": {k: round(v, 2) for k, v in stages.items()},
              "cpu_over_stage_sum": round(e2e["consumer_cpu_us_per_event"] / stages["total"], 2),
              "rss_mb_per_100k_buffered": round(rss_per_100k, 1)}
    plain = {key: (max if key == "events_per_s" else min)(run[key] for run in plains)
             for key in ("events_per_s", "cpu_us_per_event", "cpu_after_start_us_per_event")}
    result |= {"plain_consumer": {k: round(v, 2) for k, v in plain.items()},
               "over_plain_consumer": {
                   "events_per_s": round(e2e["events_per_s"] / plain["events_per_s"], 2),
                   "cpu_us_per_event": round(e2e["consumer_cpu_us_per_event"] / plain["cpu_us_per_event"], 2),
                   "cpu_after_start_us_per_event": round(
                       e2e["consumer_cpu_after_start_us_per_event"] / plain["cpu_after_start_us_per_event"], 2)}}
    print()
    rates = ", ".join(f"{v:,.0f}" for v in e2e["spread"]["events_per_s"])
    cpus = ", ".join(f"{v:.1f}" for v in e2e["spread"]["consumer_cpu_after_start_us_per_event"])
    print(f"  best of {args.runs} runs each (every run: {rates} events/s; {cpus} us/event after start-up)")
    print(f"  end to end          {e2e['events_per_s']:>10,.0f} events/s  ({e2e['seconds']:.1f}s, "
          f"{e2e['requests']} requests, {e2e['recipients_delivered']:,} recipients delivered)")
    print(f"  raw ceiling         {ceiling:>10,.0f} events/s  (consume + decode, same events)")
    print(f"  ratio               {result['ratio']:>10.2f}")
    print(f"  plain raw ceiling   {plain_ceiling:>10,.0f} events/s  (consume + fastavro.schemaless_reader)")
    print(f"  ratio to plain      {result['ratio_to_plain']:>10.2f}")
    print(f"  Redis round trips   {e2e['redis_round_trips_per_request']:>10.2f} per request (throttle off)")
    print(f"  Redis server CPU    {e2e['redis_cpu_us_per_event']:>10.2f} us/event (INFO cpu, whole run)")
    print(f"  consumer CPU        {e2e['consumer_cpu_us_per_event']:>10.1f} us/event (whole process)")
    print(f"  after start-up      {e2e['consumer_cpu_after_start_us_per_event']:>10.1f} us/event "
          "(from the first poll to the last commit)")
    print(f"  CPU / stage sum     {result['cpu_over_stage_sum']:>10.2f}  (whole process over the stages timed alone)")
    print(f"    after start-up    {result['cpu_after_start_over_stage_sum']:>10.2f}")
    print(f"  hand-written        {plain['events_per_s']:>10,.0f} events/s, {plain['cpu_us_per_event']:.1f} us/event "
          f"({plain['cpu_after_start_us_per_event']:.1f} after start-up): benchmarks/plain_consumer.py, "
          "no dedup, validation or dead letters")
    over = result["over_plain_consumer"]
    print(f"  over hand-written   {over['events_per_s']:>10.2f} x its events/s, {over['cpu_us_per_event']:.2f} x its "
          f"CPU per event ({over['cpu_after_start_us_per_event']:.2f} after start-up)")
    print(f"  peak RSS            {e2e['peak_rss_mb']:>10.0f} MB")
    print(f"  RSS per 100k held   {rss_per_100k:>10.0f} MB  (events buffered while the throttle holds them)")
    print("  CPU us/event by stage (each alone): " + ", ".join(
        f"{k} {v:.1f}" for k, v in stages.items() if k not in INSIDE_POLL_LOOP and not k.startswith("python_")))
    print("    inside the poll loop  " + ", ".join(f"{k} {stages[k]:.1f}" for k in INSIDE_POLL_LOOP if k in stages))
    if "native_decode_map" in stages:
        print(f"    in Python instead     decode {stages['python_decode']:.1f}, map {stages['python_map']:.1f} "
              "(NATIVE_INTAKE=off)")
    append_result(result)
    short = [run["recipients_delivered"] for run in runs if run["recipients_delivered"] != args.events]
    if short:
        raise SystemExit(f"a run delivered {short[0]:,} of {args.events:,} recipients")


if __name__ == "__main__":
    main()
