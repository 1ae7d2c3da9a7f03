"""The chaos run (issue 11, acceptance): a fleet of real replicas under every fault at once.

    make chaos     # = python -m tests.chaos.chaos_run --events 100000 (starts the local stack if needed)

Events stream into a topic while three `python -m consumer run` replicas deliver them to the
Pisano simulator under a scaled copy of Pisano's throttle windows. Meanwhile, at random moments
(seeded): SIGKILLs of random replicas (each restarted at once), the limiter's Redis keys deleted
and later an older snapshot of them restored (DUMP/RESTORE), a Kafka broker restart, and from the
simulator 20% 5xx answers, a 429 storm and hanging requests (some delivered, some not).

Then it judges from the simulator's own logs (figures.py): no event lost, none delivered twice,
no throttle window exceeded, every `ambiguous` dead letter accounted for by the delivery log. The
SRE step follows: what the delivery log shows as not delivered is replayed (signed, as
`pisano-sms replay` does), and in the end every event must have been delivered exactly once.
`tests/integration/test_chaos.py` runs a scaled-down plan in the default suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Producer

from consumer.config.windows import parse_rate_limits
from consumer.ingest.kafka import produce_waiting
from consumer.ingest.samples import encode, phone_for, transaction
from consumer.simulator import SimulatorConfig, SimulatorServer
from consumer.simulator.config import FaultSettings
from consumer.sre.replay import replay_headers
from tests.chaos.figures import (
    Outcomes,
    account,
    delivered_phones,
    describe_violations,
    table,
    throttle_refusals,
    window_violations,
)
from tests.conftest import localstack, unique
from tests.support.consumers import REPLAY_KEY, ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, create_topic, end_offsets, read_all
from tests.support.scenario import CAMPAIGNS

TOKEN = "chaos-token-7d2e41"
_QUIET = logging.getLogger("chaos.kafka")
_QUIET.setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class ChaosPlan:
    events: int = 100_000
    produce_s: float = 150.0  # events stream in over this long; every fault happens within it
    replicas: int = 3
    kills: int = 10
    partitions: int = 6
    # Pisano's cloud windows (20/5s,40/25s,80/125s,160/625s) with time scaled by 1/5.
    windows: str = "20/1s,40/5s,80/25s,160/125s"
    margin_ms: int = 200
    batch: int = 1000
    error_rates: dict[int, float] = field(default_factory=lambda: {500: 0.08, 502: 0.04, 503: 0.04, 504: 0.04})
    hang_rate: float = 0.01  # no answer, not delivered
    hang_after_accept_rate: float = 0.01  # delivered, no answer
    storm_s: float = 5.0
    storm_rate: float = 0.8  # share of requests answered 429 during the storm
    duplicate_every: int = 50  # a second copy of an earlier event (must be skipped)
    lease_ms: int = 30_000  # longer than the retry budget, the horizon and the timeouts below
    seed: int = 11
    drain_timeout_s: float = 600.0


@dataclass
class Result:
    rows: list[tuple[str, str]]
    outcomes: Outcomes
    violations: dict[str, list[int]]  # window -> monotonic ns of the requests that exceeded it
    throttle_429: int
    final_missing: int
    final_twice: int
    kills: int
    unexpected_exits: list[str]
    exit_codes: list[int | None]

    @property
    def ok(self) -> bool:
        o = self.outcomes
        return (not o.lost and o.delivered_twice == 0 and not any(self.violations.values())
                and self.throttle_429 == 0 and self.final_missing == 0
                and self.final_twice == 0 and not self.unexpected_exits and all(c == 0 for c in self.exit_codes))


class Chaos:
    def __init__(self, plan: ChaosPlan, bootstrap: str, redis_url: str, workdir: Path,
                 say: Callable[[str], None] = print) -> None:
        self.plan, self.bootstrap, self.redis_url, self.workdir, self.say = plan, bootstrap, redis_url, workdir, say
        self.rng = random.Random(plan.seed)
        self.prefix = unique("chaos")  # a key prefix of its own: no other run's state is touched
        self.topic, self.dlq, self.group = unique("chaos-events"), unique("chaos-dlq"), unique("chaos-g")
        self.replicas: list[ConsumerProcess] = []
        self.started: list[ConsumerProcess] = []
        self.kills = 0
        self.unexpected_exits: list[str] = []
        self.produced = 0
        self.happened: list[tuple[int, str]] = []  # (monotonic ns, action): violations are told against it
        self.snapshot: dict[bytes, tuple[bytes, int]] = {}
        self.events: dict[str, str] = {}
        self.records: list[tuple[bytes, bytes]] = []
        self.log = workdir / "deliveries.jsonl"
        self.base_faults: dict[str, Any] = {"error_rates": {str(k): v for k, v in plan.error_rates.items()},
                                            "hang_rate": plan.hang_rate,
                                            "hang_after_accept_rate": plan.hang_after_accept_rate}

    # ------------------------------------------------------------------ the run

    def run(self) -> Result:
        plan = self.plan
        self.workdir.mkdir(parents=True, exist_ok=True)
        create_topic(self.bootstrap, self.topic, plan.partitions)
        create_topic(self.bootstrap, self.dlq, 1)
        self._make_events()
        windows = parse_rate_limits(plan.windows)
        config = SimulatorConfig(tokens=frozenset({TOKEN}), campaigns=frozenset(CAMPAIGNS), rate_limits=windows,
                                 delivery_log_path=self.log, memory_log_recipients=0, seed=plan.seed,
                                 faults=FaultSettings.from_json(self.base_faults))
        with SimulatorServer(config) as simulator:
            self.simulator = simulator
            env = consumer_env(
                bootstrap=self.bootstrap, redis_url=self.redis_url, topic=self.topic, dlq=self.dlq,
                group=self.group, pisano_url=simulator.url, token=TOKEN, REDIS_KEY_PREFIX=self.prefix,
                PISANO_RATE_LIMITS=plan.windows, PISANO_RATE_MARGIN_MS=plan.margin_ms,
                BATCH_MAX_RECIPIENTS=plan.batch, BATCH_MAX_WAIT_MS=500, THROTTLE_HORIZON_MS=3000,
                PISANO_TIMEOUT_MS=2000, PISANO_CONNECT_TIMEOUT_MS=1000, PISANO_MAX_ATTEMPTS=6,
                PISANO_RETRY_BUDGET_MS=20_000, PISANO_BACKOFF_BASE_MS=200, PISANO_BACKOFF_MAX_MS=2000,
                DEDUP_CLAIM_LEASE_MS=plan.lease_ms)
            self.env = env
            self.replicas = [self._start(i) for i in range(plan.replicas)]
            started = time.monotonic()
            self.started_ns = time.monotonic_ns()
            self._chaos(started)
            self.say("all events produced and every fault done; waiting for every record's outcome")
            self._wait_committed(plan.drain_timeout_s)
            duration = time.monotonic() - started
            outcomes = account(self.events, delivered_phones(self.log), read_all(self.bootstrap, self.dlq))
            replayed = self._sre_replay(outcomes)
            requests = simulator.state.requests.records()  # the replays' requests too
            self._keep(requests)
            exit_codes = [self._terminate(slot, r) for slot, r in enumerate(self.replicas)]
        final = delivered_phones(self.log)
        final_missing = sum(1 for phone in self.events.values() if final.get(phone, 0) == 0)
        final_twice = sum(1 for phone in self.events.values() if final.get(phone, 0) > 1)
        violations = window_violations(requests, windows)
        result = Result([], outcomes, violations, throttle_refusals(requests), final_missing, final_twice,
                        self.kills, self.unexpected_exits, exit_codes)
        result.rows = self._rows(result, requests, duration, replayed)
        return result

    def _keep(self, requests: list[dict[str, Any]]) -> None:
        """The simulator's request log and the faults' times, beside the replicas' logs, to read
        what happened around a violation (both in the monotonic ns of this process)."""
        with (self.workdir / "requests.jsonl").open("w") as out:
            out.writelines(json.dumps(r) + "\n" for r in requests)
        (self.workdir / "timeline.json").write_text(json.dumps({"started_ns": self.started_ns,
                                                                "faults": self.happened}))

    def _make_events(self) -> None:
        plan, run = self.plan, unique("c")
        for n in range(plan.events):
            event_id = f"{run}-{n}"
            self.events[event_id] = phone_for(n)
            self.records.append((event_id.encode(), encode(transaction(event_id, phone_for(n),
                                                                       CAMPAIGNS[n % len(CAMPAIGNS)], n=n))))
            if plan.duplicate_every and n % plan.duplicate_every == plan.duplicate_every - 1:
                self.records.append(self.records[-1 - plan.duplicate_every // 2])

    def _timeline(self) -> list[tuple[float, str]]:
        """(seconds from the start, action), drawn from the plan's seed."""
        d, rng = self.plan.produce_s, self.rng
        actions = [(rng.uniform(0.05 * d, 0.9 * d), "kill") for _ in range(self.plan.kills)]
        snapshot = rng.uniform(0.1 * d, 0.3 * d)
        delete = rng.uniform(0.35 * d, 0.5 * d)
        storm = rng.uniform(0.2 * d, 0.8 * d)
        actions += [(snapshot, "snapshot_limiter"), (delete, "delete_limiter"),
                    (delete + rng.uniform(2, 5), "restore_limiter"),
                    (rng.uniform(0.3 * d, 0.7 * d), "restart_kafka"),
                    (storm, "storm_on"), (storm + self.plan.storm_s, "storm_off")]
        return sorted(actions)

    def _chaos(self, started: float) -> None:
        producer = threading.Thread(target=self._produce, args=(started,), name="chaos-producer", daemon=True)
        producer.start()
        pending = self._timeline()
        helpers: list[threading.Thread] = []
        last_report = 0.0
        while pending or producer.is_alive():
            now = time.monotonic() - started
            while pending and pending[0][0] <= now:
                _, action = pending.pop(0)
                self.say(f"{now:6.1f}s  {action}")
                self.happened.append((time.monotonic_ns(), action))
                if action == "restart_kafka":  # slow: the other faults go on meanwhile
                    helpers.append(threading.Thread(target=self._restart_kafka, daemon=True))
                    helpers[-1].start()
                else:
                    getattr(self, f"_{action}")()
            self._restart_the_dead()
            if now - last_report >= 10:
                last_report = now
                self.say(f"{now:6.1f}s  produced {self.produced:,}, delivered {self._delivered():,}")
            time.sleep(0.2)
        for helper in helpers:
            helper.join()

    def _produce(self, started: float) -> None:
        # The broker's restart is planned: its connection errors are not news (the logger is quiet).
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 20, "enable.idempotence": True,
                             "message.timeout.ms": 900_000, "batch.num.messages": 10_000},
                            logger=_QUIET)
        total = len(self.records)
        while self.produced < total:
            share = min(1.0, (time.monotonic() - started) / self.plan.produce_s)
            for key, value in self.records[self.produced:int(total * share)]:
                produce_waiting(producer, self.topic, key=key, value=value)
                self.produced += 1
            producer.poll(0)
            time.sleep(0.1)
        if producer.flush(900) != 0:
            raise RuntimeError("the chaos producer's records were not acknowledged")

    # ------------------------------------------------------------------ faults

    def _start(self, slot: int) -> ConsumerProcess:
        replica = ConsumerProcess(self.env, self.workdir / f"replica-{slot}.log").start()
        self.started.append(replica)
        return replica

    def _kill(self) -> None:
        slot = self.rng.randrange(len(self.replicas))
        self.replicas[slot].kill()
        self.kills += 1
        self.replicas[slot] = self._start(slot)

    def _restart_the_dead(self) -> None:
        for slot, replica in enumerate(self.replicas):
            if not replica.alive():
                assert replica.process is not None
                self.unexpected_exits.append(f"replica-{slot} exited {replica.process.returncode}")
                self.say(f"replica-{slot} exited by itself ({replica.process.returncode}); see {replica.log_path}")
                self.replicas[slot] = self._start(slot)

    def _limiter_keys(self, client: Any) -> list[bytes]:
        """Every key of the limiter's hash tag but the circuit's (consumer/state/redis.py)."""
        return [k for k in client.scan_iter(match=f"{{{self.prefix}:rl:*", count=1000) if b":circuit" not in k]

    def _snapshot_limiter(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        self.snapshot = {k: (client.dump(k), max(0, client.pttl(k))) for k in self._limiter_keys(client)}
        self.say(f"         limiter snapshot: {len(self.snapshot)} keys")

    def _delete_limiter(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        keys = self._limiter_keys(client)
        if keys:
            client.delete(*keys)
        self.say(f"         limiter keys deleted: {len(keys)}")

    def _restore_limiter(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        for key, (dumped, ttl_ms) in self.snapshot.items():
            if dumped is not None:
                client.restore(key, ttl_ms, dumped, replace=True)
        self.say(f"         older limiter snapshot restored: {len(self.snapshot)} keys")

    def _restart_kafka(self) -> None:
        localstack.stop_kafka()
        localstack.start_kafka()
        self.say("         Kafka broker back")

    def _faults(self, **faults: Any) -> None:
        import httpx

        httpx.post(f"{self.simulator.url}/_sim/faults", json=faults, timeout=5).raise_for_status()

    def _storm_on(self) -> None:
        self._faults(error_rates={"429": self.plan.storm_rate})

    def _storm_off(self) -> None:
        self._faults(**self.base_faults)

    # ------------------------------------------------------------------ the end

    def _delivered(self) -> int:
        return sum(delivered_phones(self.log).values())

    def _wait_committed(self, timeout: float) -> None:
        ends = end_offsets(self.bootstrap, self.topic)

        def done() -> bool:
            self._restart_the_dead()
            return all_committed(self.bootstrap, self.group, self.topic, ends)

        wait_until(done, timeout, "every record has an outcome (offsets committed to the end)", interval=2)

    def _sre_replay(self, outcomes: Outcomes) -> int:
        """Replay, signed, every dead-lettered event the delivery log shows as not delivered."""
        if not outcomes.to_replay:
            return 0
        # An SRE replays once the incident is over: Pisano answers again, so a replay is not
        # itself lost to an injected fault.
        self._faults(error_rates={}, hang_rate=0, hang_after_accept_rate=0)
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        for letter in outcomes.to_replay.values():
            produce_waiting(producer, self.topic, key=letter.key, value=letter.value,
                            headers=replay_headers(letter, REPLAY_KEY.encode(), self.topic))
        if producer.flush(60) != 0:
            raise RuntimeError("replayed records not acknowledged")
        self.say(f"SRE step: replayed {len(outcomes.to_replay):,} events the delivery log does not show")
        self._wait_committed(self.plan.drain_timeout_s)
        return len(outcomes.to_replay)

    def _terminate(self, slot: int, replica: ConsumerProcess) -> int | None:
        """SIGTERM, one replica after the other as in a rolling stop; None if it did not exit."""
        try:
            return replica.terminate(timeout=90)
        except subprocess.TimeoutExpired:
            self.say(f"replica-{slot} did not exit within 90 s of SIGTERM; killed. Its log: {replica.log_path}")
            replica.kill()
            return None

    def _rows(self, result: Result, requests: list[dict[str, Any]], duration: float,
              replayed: int) -> list[tuple[str, str]]:
        o, faults = result.outcomes, [r["fault"] for r in requests]
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in o.dead_letters.most_common()) or "none"
        injected = sum(1 for f in faults if f == "error_rate")
        return [
            ("events (unique, valid)", f"{o.events:,} (+{len(self.records) - o.events:,} duplicate copies)"),
            ("replicas / SIGKILLs", f"{self.plan.replicas} / {result.kills} (each restarted at once)"),
            ("limiter keys deleted / older snapshot restored", "1 / 1"),
            ("Kafka broker restarts", "1"),
            ("requests sent", f"{len(requests):,}: injected errors {injected:,} (5xx and the 429 storm), "
                              f"hangs {faults.count('hang'):,}, delivered-then-hang "
                              f"{faults.count('hang_after_accept'):,}"),
            ("throttle windows (scaled)", f"{self.plan.windows}, margin {self.plan.margin_ms} ms"),
            ("window violations", describe_violations(result.violations, self.happened, self.started_ns)),
            ("throttle 429s from the simulator", str(result.throttle_429)),
            ("events lost", f"{len(o.lost)}"),
            ("events delivered twice", f"{o.delivered_twice}"),
            ("delivered before the SRE step", f"{o.delivered:,}"),
            ("dead-lettered (distinct events)", f"{reasons} ({o.dead_letter_records:,} DLQ records)"),
            ("ambiguous, accounted for", f"{o.dead_letters['ambiguous']:,}: {o.ambiguous_delivered:,} in the "
                                         f"delivery log, {o.ambiguous_not_delivered:,} not"),
            ("dead-lettered (not ambiguous), yet delivered", f"{len(o.dead_lettered_then_delivered):,} (its "
                                                              "offset uncommitted, the next owner delivered it)"),
            ("SRE step: replayed (not in the delivery log)", f"{replayed:,}"),
            ("after the SRE step", f"{o.events - result.final_missing:,} of {o.events:,} delivered, "
                                   f"{result.final_twice} twice"),
            ("replica exits", f"unexpected {len(result.unexpected_exits)}, SIGTERM exit codes {result.exit_codes}"),
            ("duration (first event to last commit)", f"{duration:.0f} s"),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    defaults = ChaosPlan()
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--produce-seconds", type=float, default=defaults.produce_s)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workdir", type=Path, default=None, help="logs of the replicas and the simulator")
    args = parser.parse_args(argv)
    plan = replace(defaults, events=args.events, produce_s=args.produce_seconds, kills=args.kills,
                   batch=args.batch, seed=args.seed)
    workdir = args.workdir or Path(f"/tmp/pisano-chaos-{int(time.time())}")
    was_running = all(localstack.running().values())
    values = localstack.up()  # the run restarts Kafka, so it needs the local stack it can own
    chaos = Chaos(plan, values["KAFKA_BOOTSTRAP_SERVERS"], values["REDIS_URL"], workdir)
    try:
        result = chaos.run()
    finally:
        for replica in chaos.started:
            if replica.alive():
                replica.kill()
        if not was_running:
            localstack.down()
    print(f"\nChaos run, seed {plan.seed} (logs in {workdir}):\n")
    print(table(result.rows))
    print("\n" + ("PASS: nothing lost, nothing sent twice, no window exceeded." if result.ok else "FAIL: see above."))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
