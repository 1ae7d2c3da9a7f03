"""`replay` and `dlq stats` on the real local Kafka (and, end to end, a real consumer and the simulator).

The dead-letter records are written by the real code: source records are produced, consumed, and
given the headers of `consumer.outcomes.deadletter.dead_letter_headers` (or sent through the pipeline's
`DeadLetterQueue`), with a mix of codes, reasons, campaigns and failure times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from consumer.config.loading import load_settings
from consumer.config.settings import Settings
from consumer.errors import ConfigError
from consumer.ingest.kafka import make_producer
from consumer.outcomes.deadletter import DeadLetterQueue, Failure, dead_letter_headers
from consumer.simulator import SimulatorConfig, SimulatorServer
from consumer.simulator.config import FaultSettings
from consumer.sre.dlq_read import Filters
from consumer.sre.dlq_stats import STATS_GROUP
from consumer.sre.replay import ReplayPlan, ReplaySummary, Verdict, default_group, run_replay
from consumer.sre.replay_signature import verified_replay
from tests.conftest import Stack, unique
from tests.support.consumers import REPLAY_KEY, ROOT, ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, committed, headers_of, produce, read_all
from tests.support.scenario import CAMPAIGNS, delivered_phones, mixed_traffic

NOW = datetime.now(UTC).replace(microsecond=0)
# Campaign API ids, as the consumer writes them (anything else is a malformed dead-letter).
CAMP_A, CAMP_B = "ae51458c-9e82-417f-8f1d-e074891ea5c1", "0b7c2e4a-1f3d-4c5b-9a8e-7d6f5e4c3b2a"
TOKEN_13001 = Failure("pisano_error", "Wrong authentication token", code=13001, http_status=401, campaign_id=CAMP_A,
                      attempts=1)


def failure(code: int | None, campaign: str | None, reason: str = "pisano_error") -> Failure:
    return Failure(reason, f"code {code}", code=code, http_status=400 if code else None, campaign_id=campaign)


@dataclass(frozen=True)
class Spec:
    """One source record and how it sits in the DLQ."""

    failure: Failure
    failed_at: datetime = NOW
    copies: int = 1  # dead-lettering is at-least-once: the same origin more than once
    replays: int = 0  # the source record was itself a replay this many times
    omit_value: bool = False


# The source topic of each DLQ built here: replay publishes only to the consumers' topics
# (KAFKA_TOPICS), so the settings of a replay of that DLQ name it.
SOURCE_OF_DLQ: dict[str, str] = {}


def build_dlq(stack: Stack, source: str, dlq: str, specs: list[Spec], foreign: int = 0) -> list[Any]:
    """Produce one source record per spec, consume them, dead-letter them with the real headers;
    the source records (in spec order) come back."""
    SOURCE_OF_DLQ[dlq] = source
    producer = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True})
    for n, spec in enumerate(specs):
        headers: list[tuple[str, str | bytes | None]] = [("trace-id", f"trace-{n}".encode())]
        if spec.replays:
            headers.append(("dlq.replays", str(spec.replays).encode()))
        producer.produce(source, key=f"evt-{n}".encode(), value=f"payload {n} +90555{n:07d}".encode(),
                         headers=headers)
    assert producer.flush(30) == 0
    originals = sorted(read_all(stack.bootstrap, source, expected=len(specs)), key=lambda m: m.offset())
    for message, spec in zip(originals, specs, strict=True):
        dead_headers: list[tuple[str, str | bytes | None]] = [*dead_letter_headers(message, spec.failure,
                                                                                    spec.failed_at)]
        value = message.value()
        if spec.omit_value:
            dead_headers.append(("dlq.value.omitted", str(len(value)).encode()))
            value = b""
        for _ in range(spec.copies):
            producer.produce(dlq, key=message.key(), value=value, headers=dead_headers)
    for n in range(foreign):
        producer.produce(dlq, key=f"someone-else-{n}".encode(), value=b"not ours", headers=[("x", b"y")])
    assert producer.flush(30) == 0
    return originals


@pytest.fixture
def settings(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Settings]:
    def make(dlq: str) -> Settings:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap)
        monkeypatch.setenv("DLQ_TOPIC", dlq)
        monkeypatch.setenv("KAFKA_TOPICS", SOURCE_OF_DLQ.get(dlq, ""))
        return load_settings()

    return make


def replay(settings: Settings, filters: Filters | None = None, **options: Any) -> ReplaySummary:
    filters = filters or Filters()
    plan = ReplayPlan(source_topic=settings.dlq_topic, group=default_group(filters), filters=filters, **options)
    return run_replay(settings, plan)


def at_end(stack: Stack, group: str, topic: str) -> bool:
    """The group's position is at the end of every partition that has records."""
    return all_committed(stack.bootstrap, group, topic)


def counts(summary: ReplaySummary) -> tuple[Any, ...]:
    return (summary.read, summary.matched, dict(summary.verdicts), dict(summary.by_code), dict(summary.by_campaign),
            dict(summary.by_reason), dict(summary.by_target))


def by_key(messages: list[Any]) -> dict[bytes, list[Any]]:
    out: dict[bytes, list[Any]] = {}
    for message in messages:
        out.setdefault(message.key(), []).append(message)
    return out


MIX = [
    Spec(TOKEN_13001),
    Spec(TOKEN_13001),
    Spec(failure(13001, CAMP_B)),
    Spec(failure(13034, CAMP_B)),
    Spec(failure(None, CAMP_A, "ambiguous")),
    Spec(failure(None, None, "decode_error")),
]


def test_dry_run_counts_equal_the_real_run_and_records_go_back_untouched(
        stack: Stack, new_topic: Callable[..., str], settings: Callable[[str], Settings]) -> None:
    source, dlq = new_topic("source"), new_topic("dlq", partitions=2)
    originals = build_dlq(stack, source, dlq, MIX, foreign=1)
    config = settings(dlq)

    tokens = Filters.from_options(["13001"])
    dry = replay(config, tokens, dry_run=True)
    assert (dry.read, dry.matched, dry.replayed) == (7, 3, 3)
    assert dry.by_code == {"13001": 3} and dry.by_campaign == {CAMP_A: 2, CAMP_B: 1}
    assert committed(stack.bootstrap, default_group(tokens), dlq) == {0: -1001, 1: -1001}
    assert len(read_all(stack.bootstrap, source)) == len(MIX)  # nothing published
    dry_everything = replay(config, dry_run=True)
    # The ambiguous one is held: its event may have been delivered (only --reason ambiguous takes it).
    assert dry_everything.verdicts == {Verdict.REPLAY: 5, Verdict.FATE_UNKNOWN: 1, Verdict.FOREIGN: 1}
    assert dry_everything.by_code == {"13001": 3, "13034": 1, "-": 1}
    assert dry_everything.by_reason == {"pisano_error": 4, "decode_error": 1}
    assert dry_everything.fate_unknown == {"ambiguous": 1}

    real = replay(config, tokens)
    assert counts(real) == counts(dry) and real.committed
    assert at_end(stack, default_group(tokens), dlq)
    records = by_key(read_all(stack.bootstrap, source))
    for n, original in enumerate(originals):
        copies = records[original.key()]
        assert len(copies) == (2 if n < 3 else 1)
        if n < 3:
            republished = copies[1]
            assert republished.value() == original.value()
            # and the source record's time: the replay's age runs from it (MAX_EVENT_AGE)
            assert republished.headers() == [("trace-id", f"trace-{n}".encode()), ("dlq.replays", b"1"),
                                             ("dlq.source.timestamp", str(original.timestamp()[1]).encode())]

    # Every filter set has its own group: the 13001 run did not take the ambiguous record away.
    # Signed: a replay of ambiguous dead-letters does not start without the fleet's key.
    ambiguous = Filters.from_options(reasons=["ambiguous"])
    assert replay(config.model_copy(update={"replay_signing_key": SecretStr(REPLAY_KEY)}), ambiguous).replayed == 1
    # Same filters again: it resumes at the end, nothing more to do.
    again = replay(config, tokens)
    assert (again.read, again.replayed) == (0, 0)
    # From the beginning: read and re-published again (the consumers' dedup drops the delivered).
    assert replay(config, tokens, from_beginning=True).replayed == 3
    assert len(read_all(stack.bootstrap, source)) == len(MIX) + 3 + 1 + 3
    assert replay(config, dry_run=True).replayed == 5  # dry runs commit nothing


def test_to_topic(stack: Stack, new_topic: Callable[..., str], settings: Callable[[str], Settings]) -> None:
    source, dlq, elsewhere = new_topic("source"), new_topic("dlq"), new_topic("elsewhere")
    originals = build_dlq(stack, source, dlq, MIX)
    with pytest.raises(ConfigError, match="--to-unconsumed-topic"):  # not in KAFKA_TOPICS
        replay(settings(dlq), Filters.from_options(["13001", "13034"]), to_topic=elsewhere)
    summary = replay(settings(dlq), Filters.from_options(["13001", "13034"]), to_topic=elsewhere,
                     to_unconsumed_topic=True)
    assert summary.by_target == {elsewhere: 4}
    moved = sorted(read_all(stack.bootstrap, elsewhere), key=lambda m: m.key())
    assert [(m.key(), m.value()) for m in moved] == [(o.key(), o.value()) for o in originals[:4]]
    assert all(headers_of(m)["dlq.replays"] == "1" for m in moved)
    assert len(read_all(stack.bootstrap, source)) == len(MIX)


def test_max_replays_refused_and_duplicate_origins_published_once(
        stack: Stack, new_topic: Callable[..., str], settings: Callable[[str], Settings]) -> None:
    source, dlq = new_topic("source"), new_topic("dlq", partitions=3)
    worn, twice_before, duplicated = Spec(TOKEN_13001, replays=3), Spec(TOKEN_13001, replays=2), \
        Spec(TOKEN_13001, copies=3)
    originals = build_dlq(stack, source, dlq, [worn, twice_before, duplicated])
    config = settings(dlq)

    summary = replay(config)
    assert summary.read == 5
    assert summary.verdicts == {Verdict.OVER_MAX_REPLAYS: 1, Verdict.REPLAY: 2, Verdict.DUPLICATE: 2}
    records = by_key(read_all(stack.bootstrap, source))
    assert len(records[originals[0].key()]) == 1  # refused: only the original
    assert headers_of(records[originals[1].key()][1])["dlq.replays"] == "3"
    assert len(records[originals[2].key()]) == 2  # three DLQ copies, one replay

    higher = replay(config, max_replays=4, from_beginning=True)
    assert higher.verdicts[Verdict.REPLAY] == 3 and not higher.verdicts[Verdict.OVER_MAX_REPLAYS]
    assert headers_of(by_key(read_all(stack.bootstrap, source))[originals[0].key()][1])["dlq.replays"] == "4"


def test_limit_stops_after_n_matched_and_the_next_run_goes_on(
        stack: Stack, new_topic: Callable[..., str], settings: Callable[[str], Settings]) -> None:
    source, dlq = new_topic("source"), new_topic("dlq")
    other = Spec(failure(13034, CAMP_B))
    specs = [Spec(TOKEN_13001), other, Spec(TOKEN_13001), Spec(TOKEN_13001), other, Spec(TOKEN_13001),
             Spec(TOKEN_13001)]
    build_dlq(stack, source, dlq, specs)
    config, tokens = settings(dlq), Filters.from_options(["13001"])

    first = replay(config, tokens, limit=2)
    assert (first.read, first.matched, first.replayed, first.limit_reached) == (3, 2, 2, True)
    assert committed(stack.bootstrap, default_group(tokens), dlq) == {0: 3}  # right after the 2nd match
    assert replay(config, tokens, limit=2, dry_run=True).replayed == 2
    second = replay(config, tokens, limit=2)
    assert (second.read, second.replayed) == (3, 2)
    third = replay(config, tokens, limit=2)
    assert (third.read, third.replayed, third.limit_reached) == (1, 1, False)
    assert len(read_all(stack.bootstrap, source)) == len(specs) + 5


def test_since_and_until(stack: Stack, new_topic: Callable[..., str], settings: Callable[[str], Settings]) -> None:
    source, dlq = new_topic("source"), new_topic("dlq")
    days = [datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC),
            datetime(2026, 1, 2, 12, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)]
    build_dlq(stack, source, dlq, [Spec(TOKEN_13001, failed_at=day) for day in days])
    config = settings(dlq)
    second_day = Filters.from_options(since="2026-01-02", until="2026-01-03T00:00:00Z")
    horizon_start = datetime(2026, 1, 2, 6, tzinfo=UTC)
    dry = replay(config, second_day, dry_run=True, stale_before=horizon_start)
    # The one that failed before the horizon's start is held (it may have been delivered by an
    # earlier replay the consumers no longer remember); --past-horizon takes it, with a warning.
    assert (dry.read, dry.matched, dry.replayed, dry.verdicts[Verdict.PAST_HORIZON]) == (4, 2, 1, 1)
    dry = replay(config, replace(second_day, past_horizon=True), dry_run=True, stale_before=horizon_start)
    assert (dry.read, dry.matched, dry.replayed, dry.stale) == (4, 2, 2, 1)
    assert replay(config, Filters.from_options(since="2026-01-02T12:00:00+00:00"), dry_run=True).replayed == 2
    assert replay(config, Filters.from_options(until="2026-01-02T03:00:00+03:00"), dry_run=True).replayed == 1


def test_value_omitted_by_the_dead_letter_queue_is_refused(
        stack: Stack, new_topic: Callable[..., str], settings: Callable[[str], Settings]) -> None:
    source, dlq = new_topic("source"), unique("small-dlq")
    SOURCE_OF_DLQ[dlq] = source
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for future in admin.create_topics([NewTopic(dlq, 1, 1, config={"max.message.bytes": "4096"})]).values():
        future.result(timeout=30)
    # Random bytes: compression must not bring it under the DLQ's limit.
    produce(stack.bootstrap, source, [(b"big", os.urandom(20_000)), (b"small", b"fits")])
    config = settings(dlq)
    queue = DeadLetterQueue(make_producer(config), dlq)
    done: list[bytes] = []

    def on_done(key: bytes) -> Callable[[], None]:
        return lambda: done.append(key)

    # One at a time: the broker judges a whole batch, and a batch holding the big record would
    # cost the small one its value too.
    for message in read_all(stack.bootstrap, source, expected=2):
        queue.send(message, Failure("pisano_error", "no such campaign", code=13034, campaign_id=CAMP_B),
                   on_done(message.key()))
        assert queue.flush(30)
    assert sorted(done) == [b"big", b"small"]
    dead = read_all(stack.bootstrap, dlq, expected=2)
    assert {m.key(): "dlq.value.omitted" in headers_of(m) for m in dead} == {b"big": True, b"small": False}

    summary = replay(config)
    assert summary.verdicts == {Verdict.VALUE_OMITTED: 1, Verdict.REPLAY: 1}
    assert [m.key() for m in read_all(stack.bootstrap, source)] == [b"big", b"small", b"small"]

    result = pisano_sms("replay", "--from-beginning", "--dry-run", env=cli_env(stack, dlq))
    assert result.returncode == 3, result.stderr  # one record would not be replayed
    assert line_of(result.stdout, "refused: value omitted").split()[3] == "1"
    assert count_in(result.stdout, "not replayed") == 1 and "1 selected record(s)" in result.stderr


def test_a_record_the_target_topic_refuses_is_counted_and_the_run_goes_on(
        stack: Stack, settings: Callable[[str], Settings]) -> None:
    """Larger than the source topic allows (the DLQ takes more): every run used to stop on it, and
    nothing after it was replayed. The records batched with it are sent again, alone."""
    source, dlq = unique("small-source"), unique("dlq")
    SOURCE_OF_DLQ[dlq] = source
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for future in admin.create_topics([NewTopic(source, 1, 1, config={"max.message.bytes": "4096"}),
                                       NewTopic(dlq, 1, 1)]).values():
        future.result(timeout=30)
    produce(stack.bootstrap, source, [(f"evt-{n}".encode(), f"payload {n}".encode()) for n in range(4)])
    originals = read_all(stack.bootstrap, source, expected=4)
    producer = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True})
    for n, message in enumerate(originals):
        # Random bytes: compression must not bring it under the source topic's limit.
        value = os.urandom(20_000) if n == 1 else message.value()
        producer.produce(dlq, key=message.key(), value=value, headers=dead_letter_headers(message, TOKEN_13001))
    assert producer.flush(30) == 0

    summary = replay(settings(dlq))
    assert summary.verdicts == {Verdict.REPLAY: 3, Verdict.REFUSED_BY_KAFKA: 1}
    assert summary.kafka_refusals == {("MSG_SIZE_TOO_LARGE", source): 1} and summary.by_target == {source: 3}
    assert summary.committed and at_end(stack, default_group(Filters()), dlq)
    assert sorted(m.key() for m in read_all(stack.bootstrap, source)) == \
        sorted([b"evt-0", b"evt-1", b"evt-2", b"evt-3", b"evt-0", b"evt-2", b"evt-3"])

    result = pisano_sms("replay", "--from-beginning", env=cli_env(stack, dlq))
    assert result.returncode == 3, result.stderr  # the refused record is not replayed
    assert count_in(result.stdout, "refused: by Kafka") == 1 and count_in(result.stdout, "replayed") == 3
    assert f"MSG_SIZE_TOO_LARGE ({source}) 1" in result.stdout


def recreate_topic(stack: Stack, topic: str, partitions: int = 1) -> None:
    """Delete and create again, as an SRE purges a DLQ."""
    from tests.support.kafka import create_topic

    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for future in admin.delete_topics([topic]).values():
        future.result(timeout=30)
    wait_until(lambda: topic not in admin.list_topics(timeout=5).topics, 30, "topic deleted")

    def created() -> bool:
        try:
            create_topic(stack.bootstrap, topic, partitions)
        except Exception:  # the deletion may still be under way on the controller: TOPIC_ALREADY_EXISTS
            return False
        return True

    wait_until(created, 60, "topic created again")


def test_a_dlq_recreated_behind_the_groups_position_is_replayed_from_its_beginning(
        stack: Stack, new_topic: Callable[..., str], settings: Callable[[str], Settings]) -> None:
    # Found in review: after a purge (delete, recreate) a group position (5) past the new topic's
    # end (3) made the run start at the end: those 3 dead-letters were never replayed. Kafka 4.1
    # drops an empty group's offsets with the topic, but a replay still running during the purge
    # commits its old position onto the new topic (as do brokers that keep such offsets): that
    # commit is made here.
    first_source, dlq = new_topic("source"), new_topic("dlq")
    build_dlq(stack, first_source, dlq, [Spec(TOKEN_13001)] * 5)
    assert replay(settings(dlq)).replayed == 5
    group = default_group(Filters())
    assert committed(stack.bootstrap, group, dlq) == {0: 5}

    recreate_topic(stack, dlq)
    late = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        late.commit(offsets=[TopicPartition(dlq, 0, 5)], asynchronous=False)
    finally:
        late.close()
    second_source = new_topic("source")
    build_dlq(stack, second_source, dlq, [Spec(TOKEN_13001)] * 3)
    again = replay(settings(dlq))
    assert (again.read, again.replayed) == (3, 3)
    assert again.recreated == [(0, 5, 3, False)]  # partition, stale position, end, no ids: the summary warns
    assert len(read_all(stack.bootstrap, second_source)) == 3 + 3
    assert committed(stack.bootstrap, group, dlq) == {0: 3}


# ------------------------------------------------------------------------------------- CLI


def pisano_sms(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumer", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def cli_env(stack: Stack, dlq: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PISANO_", "REDIS_", "DLQ_"))}
    # The SRE holds the fleet's replay key (README, "SRE replay"), as the replicas do.
    env.update(KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap, DLQ_TOPIC=dlq, KAFKA_TOPICS=SOURCE_OF_DLQ.get(dlq, ""),
               REPLAY_SIGNING_KEY=REPLAY_KEY)
    env.update(extra)
    return env


def line_of(output: str, label: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(label)]
    assert len(lines) == 1, output
    return lines[0]


def count_in(output: str, label: str) -> int:
    return int(line_of(output, label)[len(label):].split()[0].replace(",", ""))


def test_cli_replay_summary_and_dlq_stats(stack: Stack, new_topic: Callable[..., str]) -> None:
    source, dlq = new_topic("source"), new_topic("dlq", partitions=2)
    old = NOW - timedelta(hours=5)
    specs = [Spec(TOKEN_13001, failed_at=old), Spec(TOKEN_13001, copies=2), Spec(failure(13034, CAMP_B)),
             Spec(failure(None, CAMP_A, "ambiguous"), replays=3)]
    build_dlq(stack, source, dlq, specs, foreign=1)
    env = cli_env(stack, dlq)

    dry = pisano_sms("replay", "--error-code", "13001", "--error-code", "13034", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing published, nothing committed" in dry.stdout
    assert (count_in(dry.stdout, "read"), count_in(dry.stdout, "foreign"), count_in(dry.stdout, "matched"),
            count_in(dry.stdout, "would replay"), count_in(dry.stdout, "duplicates skipped")) == (6, 1, 4, 3, 1)
    assert line_of(dry.stdout, "by error code").split()[3:] == ["13001", "2,", "13034", "1"]
    assert line_of(dry.stdout, "by campaign").split()[2:] == [CAMP_A, "2,", CAMP_B, "1"]
    assert "+90555" not in dry.stdout + dry.stderr and "payload" not in dry.stdout + dry.stderr

    real = pisano_sms("replay", "--error-code", "13034", "--error-code", "13001", env=env)
    assert real.returncode == 0, real.stderr
    assert count_in(real.stdout, "replayed") == 3
    assert "position committed for group " + default_group(Filters.from_options(["13001", "13034"])) in real.stdout
    again = pisano_sms("replay", "--error-code", "13001", "--error-code", "13034", env=env)
    assert (count_in(again.stdout, "read"), count_in(again.stdout, "replayed")) == (0, 0)
    refused = pisano_sms("replay", "--reason", "ambiguous", "--dry-run", env=env)
    assert count_in(refused.stdout, "refused: max replays") == 1

    table = pisano_sms("dlq", "stats", env=env)
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[0][:5] == ["error", "code", "reason", "campaign", "records"]
    assert rows[1][:5] == ["13001", "pisano_error", CAMP_A, "3", "2"]
    assert rows[1][5] == old.isoformat().replace("+00:00", "Z")
    assert table.stdout.splitlines()[-1] == f"6 record(s) in {dlq}, 4 unique origin(s), 1 foreign (not written by " \
                                            "pisano-sms)"
    as_json = pisano_sms("dlq", "stats", "--json", env=env)
    document = json.loads(as_json.stdout)
    assert (document["records"], document["foreign"], document["unique_origins"]) == (6, 1, 4)
    assert {(r["error_code"], r["reason"], r["campaign_id"]): (r["records"], r["unique_origins"])
            for r in document["rows"]} == {("13001", "pisano_error", CAMP_A): (3, 2),
                                           ("13034", "pisano_error", CAMP_B): (1, 1),
                                           (None, "ambiguous", CAMP_A): (1, 1)}
    first = document["rows"][0]
    assert first["oldest"] == old.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert first["newest"] == NOW.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert committed(stack.bootstrap, STATS_GROUP, dlq) == {0: -1001, 1: -1001}  # looking moves nothing


def test_cli_counts_hostile_dead_letters_as_malformed_and_prints_nothing_raw(
        stack: Stack, new_topic: Callable[..., str]) -> None:
    """Anyone who may write to the DLQ chooses its headers: a campaign holding escape sequences or
    a phone, a failure time whose UTC falls off the calendar. Both tools count them and go on."""
    source, dlq = new_topic("source"), new_topic("dlq")
    build_dlq(stack, source, dlq, [Spec(TOKEN_13001)])
    original = read_all(stack.bootstrap, source, expected=1)[0]
    hostile = {"dlq.campaign.id": b"\x1b]0;owned\x07\x1b[2J+905321234567",
               "dlq.failed.at": b"0001-01-01T00:00:00+01:00"}
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    for name, value in hostile.items():
        headers = [(k, v) for k, v in dead_letter_headers(original, TOKEN_13001) if k != name]
        producer.produce(dlq, key=b"hostile", value=b"x", headers=[*headers, (name, value)])
    assert producer.flush(30) == 0
    env = cli_env(stack, dlq)

    dry = pisano_sms("replay", "--dry-run", env=env)
    assert dry.returncode == 3, dry.stderr  # the two malformed would not be replayed
    assert count_in(dry.stdout, "would replay") == 1 and count_in(dry.stdout, "refused: malformed") == 2
    assert "dlq.campaign.id is not a campaign id" in dry.stdout and "dlq.failed.at is not an ISO 8601" in dry.stdout
    stats = pisano_sms("dlq", "stats", env=env)
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.splitlines()[-1].endswith("2 malformed (our headers, unusable)")
    as_json = pisano_sms("dlq", "stats", "--json", env=env)
    assert json.loads(as_json.stdout)["malformed"] == 2
    for result in (dry, stats, as_json):
        printed = result.stdout + result.stderr
        assert "\x1b" not in printed and "905321234567" not in printed and "Traceback" not in printed


def test_cli_errors_are_one_line_with_exit_2(stack: Stack, new_topic: Callable[..., str]) -> None:
    dlq = new_topic("dlq")
    cases = [
        (("replay", "--since", "last tuesday"), cli_env(stack, dlq), "--since 'last tuesday' is not an ISO 8601"),
        (("replay", "--error-code", "wrong-token"), cli_env(stack, dlq), "--error-code 'wrong-token': expected"),
        (("replay", "--error-code", "\u00b2"), cli_env(stack, dlq), "--error-code '\u00b2': expected"),
        (("replay", "--since", "0001-01-01T00:00:00+01:00"), cli_env(stack, dlq), "is outside the dates"),
        (("replay",), cli_env(stack, "no-such-dlq", KAFKA_TOPICS="t"), "topic no-such-dlq does not exist"),
        (("replay",), cli_env(stack, dlq, KAFKA_TOPICS=""), "KAFKA_TOPICS is not set"),
        (("replay", "--to-topic", "no-such-topic", "--to-unconsumed-topic"), cli_env(stack, dlq),
         "topic no-such-topic does not exist"),
        (("replay", "--to-topic", "other-teams-topic"), cli_env(stack, dlq, KAFKA_TOPICS="t"),
         "--to-topic other-teams-topic is not a topic the consumers read: not in KAFKA_TOPICS (t)"),
        (("dlq", "stats"), cli_env(stack, "no-such-dlq"), "check DLQ_TOPIC"),
        (("dlq", "stats"), {**cli_env(stack, dlq), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
         "cannot reach Kafka at 127.0.0.1:1"),
    ]
    for args, env, message in cases:
        result = pisano_sms(*args, env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        *waits, error = result.stderr.splitlines()
        assert error.startswith("pisano-sms: error: ") and message in error, result.stderr
        if "cannot reach Kafka" in message:
            # 10 s of waiting for an answer: said every few seconds, then the one error line.
            assert len(waits) >= 2 and all("waiting for Kafka" in line for line in waits), result.stderr
        else:
            assert not waits, result.stderr


def test_a_missing_original_topic_stops_the_run_before_publishing(stack: Stack, new_topic: Callable[..., str]) -> None:
    source, dlq = new_topic("source"), new_topic("dlq")
    build_dlq(stack, source, dlq, [Spec(TOKEN_13001)])
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for future in admin.delete_topics([source]).values():
        future.result(timeout=30)
    wait_until(lambda: source not in admin.list_topics(timeout=5).topics, 30, "source topic deleted")
    result = pisano_sms("replay", env=cli_env(stack, dlq))
    assert result.returncode == 2 and f"topic {source} does not exist" in result.stderr
    assert "--to-topic" in result.stderr
    assert committed(stack.bootstrap, default_group(Filters()), dlq) == {0: -1001}


# ------------------------------------------------------------------------------ end to end

TOKEN = "replay-token-7c1"


def test_replayed_events_are_delivered_once_and_a_second_replay_sends_nothing(  # type: ignore[no-untyped-def]
        stack: Stack, new_topic: Callable[..., str], tmp_path: Path, processes) -> None:
    topic, dlq, group = new_topic(), new_topic("dlq"), unique("g")
    # Own event ids and Redis keys: the dedup state of other tests must neither hide nor skip ours.
    traffic = mixed_traffic(30, duplicate_every=0, invalid_every=0, prefix=unique("replay"))
    produce(stack.bootstrap, topic, traffic.records)
    log = tmp_path / "deliveries.jsonl"
    # Pisano refuses one campaign (13034) until the SRE fixes it on the Pisano side.
    config = SimulatorConfig(tokens=frozenset({TOKEN}), any_campaign=True, rate_limits=(), delivery_log_path=log,
                             faults=FaultSettings(campaign_codes={CAMPAIGNS[0]: 13034}))
    with SimulatorServer(config) as simulator:
        # The refusals open the campaign's circuit: the replay waits for its probe, after the
        # cooldown (30 s by default, most of this test's time before it was shortened).
        env = consumer_env(bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
                           pisano_url=simulator.url, token=TOKEN, REDIS_KEY_PREFIX=unique("replay"),
                           CIRCUIT_COOLDOWN_MS=3000, CIRCUIT_MAX_COOLDOWN_MS=6000)
        replica = ConsumerProcess(env, tmp_path / "consumer.log").start()
        processes.append(replica)

        def caught_up() -> bool:
            return all_committed(stack.bootstrap, group, topic)

        wait_until(caught_up, 60, "the first pass committed")
        assert len(read_all(stack.bootstrap, dlq, expected=10)) == 10
        assert len(delivered_phones(log)) == 20
        simulator.state.set_faults(FaultSettings())

        first = pisano_sms("replay", "--error-code", "13034", env=cli_env(stack, dlq, KAFKA_TOPICS=topic))
        assert first.returncode == 0, first.stderr
        assert count_in(first.stdout, "replayed") == 10
        wait_until(caught_up, 60, "the replay committed")
        phones = delivered_phones(log)
        assert set(phones) == traffic.valid_phones and max(phones.values()) == 1

        skipped_before = replica.metric("pisano_sms_duplicates_skipped_total")
        second = pisano_sms("replay", "--error-code", "13034", "--from-beginning",
                            env=cli_env(stack, dlq, KAFKA_TOPICS=topic))
        assert count_in(second.stdout, "replayed") == 10
        wait_until(caught_up, 60, "the second replay committed")
        assert delivered_phones(log) == phones  # nobody got a second SMS
        assert replica.metric("pisano_sms_duplicates_skipped_total") - skipped_before == 10
        assert replica.terminate() == 0


def test_hostile_dead_letters_are_refused_and_real_replays_are_signed(
        stack: Stack, new_topic: Callable[..., str], settings: Callable[[str], Settings],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever writes to the DLQ chooses its headers: a record naming a topic the consumers do not
    read goes nowhere, a malformed one is refused with its reason, and what is replayed carries a
    signature the consumers can check (consumer.sre.replay_signature)."""
    source, elsewhere, dlq = new_topic("source"), new_topic("not-consumed"), new_topic("dlq")
    originals = build_dlq(stack, source, dlq, [Spec(TOKEN_13001)])
    good = dict(dead_letter_headers(originals[0], TOKEN_13001, NOW))
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    redirected = {**good, "dlq.original.topic": elsewhere.encode(), "dlq.original.offset": b"1"}
    malformed = {**good, "dlq.original.offset": b"2", "dlq.replays": "\u00b2".encode()}
    for headers in (redirected, malformed):
        producer.produce(dlq, key=b"evt-x", value=b"forged", headers=list(headers.items()))
    assert producer.flush(30) == 0
    key = "replay-key-for-this-test-0123456789"
    monkeypatch.setenv("REPLAY_SIGNING_KEY", key)
    summary = replay(settings(dlq))
    assert summary.verdicts == {Verdict.REPLAY: 1, Verdict.NOT_CONSUMER_TOPIC: 1, Verdict.MALFORMED: 1}
    assert summary.not_consumer_topics == {elsewhere: 1}
    assert list(summary.malformed) == ["dlq.replays is not a number"]
    assert summary.signed
    assert read_all(stack.bootstrap, elsewhere) == []
    replayed = [m for m in read_all(stack.bootstrap, source, expected=2) if m.offset() == 1]
    assert len(replayed) == 1
    message = replayed[0]
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert verified_replay(key.encode(), source, message.key(), message.value(), message.headers(), now_ms,
                           86_400_000).count == 1
    assert verified_replay(b"a-key-the-source-producer-guessed", source, message.key(), message.value(),
                           message.headers(), now_ms, 86_400_000).count == 0
