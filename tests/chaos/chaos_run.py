"""The chaos run (issue 11, acceptance): a fleet of real replicas under every fault at once.

    make chaos     # = python -m tests.chaos.chaos_run --events 100000 (starts the local stack if needed)

Events stream into a topic while three `python -m consumer run` replicas deliver them to the
Pisano simulator under a scaled copy of Pisano's throttle windows. Meanwhile, at random moments
(seeded): SIGKILLs of random replicas (each restarted at once), the limiter's Redis keys deleted
and later an older snapshot of them restored (DUMP/RESTORE), a Kafka broker restart, and from the
simulator 20% 5xx answers, a 429 storm and hanging requests (some delivered, some not).

The product's contact policy and receipts are on throughout: a share of the events reuse an
earlier event's phone under a cooldown longer than the run, a few phones are on the opt-out list
(imported before the replicas start, as `pisano-sms suppress import` does), and every record
gets a receipt in OUTCOME_TOPIC.

Then it judges from the simulator's own logs (figures.py, contacts.py): no event lost, none
delivered twice, no throttle window exceeded, every `ambiguous` dead letter accounted for by the
delivery log, no phone surveyed twice within the cooldown, no opted-out phone surveyed, every
record's first receipt there and agreeing with the logs, and second receipts only of the kinds the
README allows. The SRE step follows: what the delivery log shows as not delivered is replayed
(signed, as `pisano-sms replay` does), and in the end every event must have been delivered exactly
once, unless its contact-policy outcome says it must not be sent.
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner
from confluent_kafka import Producer

from consumer.cli import main as pisano_sms
from consumer.config.windows import parse_rate_limits
from consumer.ingest.kafka import produce_waiting
from consumer.ingest.samples import encode, phone_for, transaction
from consumer.outcomes.receipts import PhoneHasher, Receipt, ReceiptCodec
from consumer.simulator import SimulatorConfig
from consumer.simulator.config import FaultSettings
from consumer.sre.replay import replay_headers
from tests.chaos.contacts import (
    Delivery,
    Origin,
    Planned,
    Receipts,
    Truth,
    judge_receipts,
    per_customer,
    read_deliveries,
    surveyed_too_soon,
)
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
from tests.support.kafka import all_committed, create_topic, end_offsets, headers_of, read_all
from tests.support.scenario import CAMPAIGNS
from tests.support.simulator_process import SimulatorProcess

TOKEN = "chaos-token-7d2e41"
SUPPRESSION_KEY = "chaos-suppression-key-3b9f50e2"
RECEIPT_SALT = "chaos-receipt-salt-8c41d7a6"
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
    # The contact policy: this share of the events reuse an earlier event's phone (half of them
    # one of the last 50, so two attempts for one phone meet; half any earlier one), under a
    # cooldown longer than the run; `opted_out` phones of the events are on the opt-out list.
    reuse_share: float = 0.15
    cooldown_s: int = 86_400
    opted_out: int = 20


@dataclass
class Result:
    rows: list[tuple[str, str]]
    outcomes: Outcomes
    violations: dict[str, list[int]]  # window -> monotonic ns of the requests that exceeded it
    throttle_429: int
    final_missing: int  # events neither delivered nor ended by the contact policy, after the SRE step
    final_twice: int
    kills: int
    unexpected_exits: list[str]
    exit_codes: list[int | None]
    receipts: Receipts
    too_soon: list[str]  # phones surveyed twice within the cooldown
    opted_out_surveyed: list[str]  # phones on the opt-out list that were surveyed
    # Losses of the dedup or contact state the replicas reported: none is lost here (only the
    # limiter's keys are deleted), so any is a false alarm (consumer/state/origins.py).
    state_lost_reports: int = 0

    @property
    def ok(self) -> bool:
        o = self.outcomes
        return (not o.lost and o.delivered_twice == 0 and not any(self.violations.values())
                and self.throttle_429 == 0 and self.final_missing == 0
                and self.final_twice == 0 and not self.unexpected_exits and all(c == 0 for c in self.exit_codes)
                and self.receipts.ok and not self.too_soon and not self.opted_out_surveyed
                and self.state_lost_reports == 0)


class Chaos:
    def __init__(self, plan: ChaosPlan, bootstrap: str, redis_url: str, workdir: Path,
                 say: Callable[[str], None] = print) -> None:
        self.plan, self.bootstrap, self.redis_url, self.workdir, self.say = plan, bootstrap, redis_url, workdir, say
        self.rng = random.Random(plan.seed)
        self.prefix = unique("chaos")  # a key prefix of its own: no other run's state is touched
        self.topic, self.dlq, self.group = unique("chaos-events"), unique("chaos-dlq"), unique("chaos-g")
        self.receipt_topic = unique("chaos-receipts")
        self.replicas: list[ConsumerProcess] = []
        self.started: list[ConsumerProcess] = []
        self.kills = 0
        self.unexpected_exits: list[str] = []
        self.produced = 0
        self.happened: list[tuple[int, str]] = []  # (monotonic ns, action): violations are told against it
        self.snapshot: dict[bytes, tuple[bytes, int]] = {}
        self.final_policy = 0  # events the contact policy ended unsent, after the SRE step
        self.events: dict[str, Planned] = {}
        self.opted_out: frozenset[str] = frozenset()  # phones on the opt-out list
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
        create_topic(self.bootstrap, self.receipt_topic, 3)
        self._make_events()
        self._import_opt_outs()  # before any replica starts: one started before would send to all
        windows = parse_rate_limits(plan.windows)
        config = SimulatorConfig(tokens=frozenset({TOKEN}), campaigns=frozenset(CAMPAIGNS), rate_limits=windows,
                                 delivery_log_path=self.log, memory_log_recipients=0, seed=plan.seed,
                                 faults=FaultSettings.from_json(self.base_faults))
        with SimulatorProcess(config) as simulator:  # stamps requests as they arrive, whatever the harness does
            self.simulator = simulator
            env = consumer_env(
                bootstrap=self.bootstrap, redis_url=self.redis_url, topic=self.topic, dlq=self.dlq,
                group=self.group, pisano_url=simulator.url, token=TOKEN, REDIS_KEY_PREFIX=self.prefix,
                PISANO_RATE_LIMITS=plan.windows, PISANO_RATE_MARGIN_MS=plan.margin_ms,
                BATCH_MAX_RECIPIENTS=plan.batch, BATCH_MAX_WAIT_MS=500, THROTTLE_HORIZON_MS=3000,
                PISANO_TIMEOUT_MS=2000, PISANO_CONNECT_TIMEOUT_MS=1000, PISANO_MAX_ATTEMPTS=6,
                PISANO_RETRY_BUDGET_MS=20_000, PISANO_BACKOFF_BASE_MS=200, PISANO_BACKOFF_MAX_MS=2000,
                DEDUP_CLAIM_LEASE_MS=plan.lease_ms, OUTCOME_TOPIC=self.receipt_topic,
                OUTCOME_PHONE_SALT=RECEIPT_SALT, SUPPRESSION_KEY=SUPPRESSION_KEY,
                CONTACT_COOLDOWN=f"{plan.cooldown_s}s")
            self.env = env
            self.replicas = [self._start(i) for i in range(plan.replicas)]
            started = time.monotonic()
            self.started_ns = time.monotonic_ns()
            self._chaos(started)
            self.say("all events produced and every fault done; waiting for every record's outcome")
            self._wait_committed(plan.drain_timeout_s)
            duration = time.monotonic() - started
            before = read_deliveries(self.log)
            before_ends = end_offsets(self.bootstrap, self.topic)
            dead = read_all(self.bootstrap, self.dlq)
            replayed = self._sre_replay(account(self._customers(), per_customer(before), dead))
            requests = simulator.requests()  # the replays' requests too
            self._keep(requests)
            exit_codes = [self._terminate(slot, r) for slot, r in enumerate(self.replicas)]
        final = read_deliveries(self.log)
        receipts = self._judge_receipts(final)
        # Judged as before the SRE step, with the contact-policy outcomes the records had by then.
        outcomes = account(self._customers(), per_customer(before), dead, receipts.policy(before_ends))
        final_missing, final_twice, self.final_policy = self._final(final, receipts.policy())
        violations = window_violations(requests, windows)
        result = Result([], outcomes, violations, throttle_refusals(requests), final_missing, final_twice,
                        self.kills, self.unexpected_exits, exit_codes, receipts,
                        surveyed_too_soon(final, plan.cooldown_s * 1000),
                        sorted({d.phone for d in final if d.phone in self.opted_out}),
                        self._state_lost_reports())
        result.rows = self._rows(result, requests, duration, replayed)
        return result

    def _customers(self) -> dict[str, str]:
        return {event_id: planned.customer for event_id, planned in self.events.items()}

    def _final(self, final: list[Delivery], policy: dict[str, str]) -> tuple[int, int, int]:
        """Events neither delivered nor ended by the contact policy, events delivered twice, and
        events the policy ended unsent."""
        counts = per_customer(final)
        unsent = [e for e, p in self.events.items() if counts[p.customer] == 0]
        missing = sum(1 for e in unsent if e not in policy)
        return missing, sum(1 for p in self.events.values() if counts[p.customer] > 1), len(unsent) - missing

    def _keep(self, requests: list[dict[str, Any]]) -> None:
        """The simulator's request log and the faults' times, beside the replicas' logs, to read
        what happened around a violation (both in the monotonic ns of this process)."""
        with (self.workdir / "requests.jsonl").open("w") as out:
            out.writelines(json.dumps(r) + "\n" for r in requests)
        (self.workdir / "timeline.json").write_text(json.dumps({"started_ns": self.started_ns,
                                                                "faults": self.happened}))

    def _make_events(self) -> None:
        plan, run = self.plan, unique("c")
        # Phones are drawn apart from the faults' generator, so a seed keeps its fault timeline.
        rng = random.Random(f"contacts-{plan.seed}")
        phones: list[str] = []
        for n in range(plan.events):
            event_id = f"{run}-{n}"
            phones.append(self._phone(n, phones, rng))
            self.events[event_id] = Planned(phones[n], f"cust-{n}")  # the mapping's external_id
            self.records.append((event_id.encode(), encode(transaction(event_id, phones[n],
                                                                       CAMPAIGNS[n % len(CAMPAIGNS)], n=n))))
            if plan.duplicate_every and n % plan.duplicate_every == plan.duplicate_every - 1:
                self.records.append(self.records[-1 - plan.duplicate_every // 2])
        self.opted_out = self._pick_opted_out(phones, rng)

    def _phone(self, n: int, earlier: list[str], rng: random.Random) -> str:
        """The event's own phone, or for `reuse_share` of them an earlier event's: one of the last
        50 (two attempts for one phone at once: held back, then cooldown) or any earlier one."""
        if n == 0 or rng.random() >= self.plan.reuse_share:
            return phone_for(n)
        if rng.random() < 0.5:
            return earlier[n - 1 - rng.randrange(min(n, 50))]
        return earlier[rng.randrange(n)]

    def _pick_opted_out(self, phones: list[str], rng: random.Random) -> frozenset[str]:
        """`opted_out` phones of the events, the first of them one that several events share."""
        if not self.plan.opted_out:
            return frozenset()
        counts = Counter(phones)
        shared = sorted(p for p, c in counts.items() if c > 1)
        picked = set(rng.sample(shared, 1)) if shared else set()
        others = sorted(set(counts) - picked)
        picked |= set(rng.sample(others, min(len(others), self.plan.opted_out - len(picked))))
        return frozenset(picked)

    def _import_opt_outs(self) -> None:
        """The opt-out list as an operator writes it: `pisano-sms suppress import FILE`."""
        csv = self.workdir / "opt-outs.csv"
        csv.write_text("phone\n" + "".join(f"{phone}\n" for phone in sorted(self.opted_out)))
        result = CliRunner().invoke(pisano_sms, ["suppress", "import", str(csv)],
                                    env={"REDIS_URL": self.redis_url, "REDIS_KEY_PREFIX": self.prefix,
                                         "SUPPRESSION_KEY": SUPPRESSION_KEY})
        if result.exit_code != 0:
            raise RuntimeError(f"suppress import failed ({result.exit_code}): {result.output}")
        self.say(f"opt-out list imported: {len(self.opted_out)} phones")

    def _judge_receipts(self, final: list[Delivery]) -> Receipts:
        """Every record's receipts, after the SRE step, against the final logs."""
        codec = ReceiptCodec()
        written: list[Receipt] = [codec.decode(m.value()) for m in read_all(self.bootstrap, self.receipt_topic)]
        ends = end_offsets(self.bootstrap, self.topic)
        origins = [(self.topic, p, o) for p, end in ends.items() for o in range(end)]
        dead: dict[Origin, set[str]] = {}
        for message in read_all(self.bootstrap, self.dlq):
            h = headers_of(message)
            origin = (h["dlq.original.topic"], int(h["dlq.original.partition"]), int(h["dlq.original.offset"]))
            dead.setdefault(origin, set()).add(h["dlq.reason"])
        truth = Truth(self.events, final, dead, self.opted_out, PhoneHasher(RECEIPT_SALT))
        return judge_receipts(written, origins, truth)

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

    def _state_lost_reports(self) -> int:
        """The replicas' log lines saying Redis lost the dedup or contact state, over every replica started."""
        return sum(replica.log_path.read_text(encoding="utf-8", errors="replace").count('"reason": "redis_state_lost"')
                   for replica in self.started)

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
        sendable = o.events - self.final_policy
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
            ("ended by the contact policy", ", ".join(f"{k} {n:,}" for k, n in sorted(o.policy.items())) or "none"),
            ("events delivered twice", f"{o.delivered_twice}"),
            ("delivered before the SRE step", f"{o.delivered:,}"),
            ("dead-lettered (distinct events)", f"{reasons} ({o.dead_letter_records:,} DLQ records)"),
            ("ambiguous, accounted for", f"{o.dead_letters['ambiguous']:,}: {o.ambiguous_delivered:,} in the "
                                         f"delivery log, {o.ambiguous_not_delivered:,} not"),
            ("dead-lettered (not ambiguous), yet delivered", f"{len(o.dead_lettered_then_delivered):,} (a copy of "
                                                              "the event read later delivered it: two records)"),
            ("SRE step: replayed (not in the delivery log)", f"{replayed:,}"),
            ("after the SRE step", f"{sendable - result.final_missing:,} of {sendable:,} sendable delivered, "
                                   f"{result.final_twice} twice; {self.final_policy:,} not sent by the contact "
                                   "policy"),
            *self._policy_rows(result),
            *self._receipt_rows(result.receipts),
            ("replica exits", f"unexpected {len(result.unexpected_exits)}, SIGTERM exit codes {result.exit_codes}"),
            ("Redis state reported lost (none was)", str(result.state_lost_reports)),
            ("duration (first event to last commit)", f"{duration:.0f} s"),
        ]


    def _policy_rows(self, result: Result) -> list[tuple[str, str]]:
        phones = Counter(p.phone for p in self.events.values())
        shared = sum(n for n in phones.values() if n > 1)
        on_list = sum(1 for p in self.events.values() if p.phone in self.opted_out)
        return [
            ("contact policy", f"cooldown {self.plan.cooldown_s:,} s; {shared:,} events share a phone "
                               f"({sum(1 for n in phones.values() if n > 1):,} phones); opt-out list "
                               f"{len(self.opted_out)} phones ({on_list} events)"),
            ("phones surveyed twice within the cooldown", f"{len(result.too_soon)}{_some(result.too_soon)}"),
            ("opted-out phones surveyed", f"{len(result.opted_out_surveyed)}{_some(result.opted_out_surveyed)}"),
        ]

    @staticmethod
    def _receipt_rows(r: Receipts) -> list[tuple[str, str]]:
        firsts = ", ".join(f"{k} {n:,}" for k, n in r.first.most_common())
        seconds = ", ".join(f"{a}->{b} {n:,}" for (a, b), n in r.second.most_common()) or "none"
        return [
            ("receipts", f"{r.written:,} for {r.records:,} records; without a receipt "
                         f"{len(r.without_receipt)}{_some(r.without_receipt)}"),
            ("first receipts", firsts),
            ("first receipts the logs contradict", f"{len(r.wrong)}{_some(r.wrong)}"),
            ("second receipts (first->second)", f"{seconds}; not promised by the README "
                                                f"{sum(r.second_not_promised.values())}"),
            ("accepted, its first receipts only `duplicate`", f"{r.accepted_as_duplicate_only:,} (README's one case)"),
        ]


def _some(items: list[Any]) -> str:
    return f" (e.g. {'; '.join(map(str, items[:3]))})" if items else ""


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
    print("\n" + ("PASS: nothing lost, nothing sent twice, no window exceeded, the contact policy held, every "
                  "receipt agrees with the logs." if result.ok else "FAIL: see above."))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
