"""Settings outside this project that decide whether an event survives: read by `pisano-sms check`.

The consumer's guarantees (nothing lost, nothing sent twice) rest on three things it cannot set:
how long Kafka keeps the records it has not committed yet, how long it keeps the dead letters SREs
replay, and whether Redis keeps the delivered marks across a restart. Each is a broker or server
setting a platform team owns, so `check` reads them and names each risk with what to change. They
are warnings, not refusals: a setting may be what the operator meant (a test cluster without AOF),
and a user not allowed to read configs must still be able to run.

- An input topic compacted (`cleanup.policy` holds `compact`) keeps one record per key: two
  transactions of one customer, keyed by customer, lose the first survey before it is read.
- An input topic keeps records `retention.ms`; a record stays uncommitted (so a restart reads it
  again from Kafka) up to `STUCK_RECORD_MS`, plus the longest stretch a send window stays closed.
  Deleted sooner, a record a replica held when it restarted is gone unsent. `retention.bytes`
  deletes by size, which no duration can be compared with: said when set.
- The DLQ compacted drops older dead letters of one key; kept shorter than the stale limit
  (`DEDUP_HORIZON_S` minus `STALE_MARGIN_S`), a dead letter is deleted while it could still be
  replayed and sent.
- The group's offsets are kept `offsets.retention.minutes` (a broker setting) after the group
  empties; README "Offsets, retention and the dedup horizon" asks for more than `DEDUP_HORIZON_S`:
  a fleet scaled to zero longer starts again from the topic's start.
- Redis without AOF has after a restart only its last snapshot, if any: the delivered marks written
  since are gone, and a copy of such an event (a redelivery, a record read again, a replay) is
  sent again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

from consumer.config.settings import span
from consumer.state.eviction import is_denied
from consumer.state.redis import REDIS_ERRORS

NO_LIMIT = -1  # Kafka's value for "kept forever" (retention.ms, retention.bytes)


def topic_warnings(configs: Mapping[str, Mapping[str, str]], inputs: Iterable[str], dlq: str, *,
                   held_ms: int, stale_ms: int) -> list[str]:
    """What the topics' own configs (`configs[topic][name]`, as Kafka describes them) risk.
    `held_ms`: the longest a record may stay uncommitted (the longest closed send window plus
    STUCK_RECORD_MS); `stale_ms`: the stale limit."""
    warnings = []
    for topic in inputs:
        config = configs.get(topic, {})
        if _compacted(config):
            warnings.append(f"topic {topic} is compacted (cleanup.policy={config['cleanup.policy']}): it keeps one "
                            "record per key, so an event followed by another of the same key may be deleted before "
                            "it is read; set cleanup.policy=delete")
        retention = _kept_ms(config)
        if retention is not None and retention < held_ms:
            warnings.append(f"topic {topic} keeps records {span(retention)} (retention.ms), less than a record may "
                            f"wait uncommitted ({span(held_ms)}: STUCK_RECORD_MS and the longest closed send window): "
                            "a record held when its replica restarts may be deleted unsent; raise retention.ms")
        size = _number(config.get("retention.bytes"))
        if size is not None and size != NO_LIMIT:
            warnings.append(f"topic {topic} also deletes records by size (retention.bytes={size} a partition): a "
                            "backlog larger than that is deleted unread; size it for the longest outage you ride out")
    config = configs.get(dlq, {})
    if _compacted(config):
        warnings.append(f"DLQ {dlq} is compacted (cleanup.policy={config['cleanup.policy']}): it keeps one dead letter "
                        "per key, so earlier failures of one key are lost to replay; set cleanup.policy=delete")
    retention = _kept_ms(config)
    if retention is not None and retention < stale_ms:
        warnings.append(f"DLQ {dlq} keeps dead letters {span(retention)} (retention.ms), less than the stale limit "
                        f"({span(stale_ms)}: DEDUP_HORIZON_S minus STALE_MARGIN_S): failures are deleted while they "
                        "could still be replayed; raise its retention.ms")
    return warnings


def offsets_warning(minutes: str | None, horizon_s: int) -> str | None:
    """The broker's `offsets.retention.minutes` against DEDUP_HORIZON_S."""
    kept = _number(minutes)
    if kept is None or kept == NO_LIMIT or kept * 60 >= horizon_s:
        return None
    return (f"the brokers keep a group's offsets {span(kept * 60_000)} after it empties (offsets.retention.minutes), "
            f"less than DEDUP_HORIZON_S ({span(horizon_s * 1000)}): a fleet stopped that long starts again from "
            "the topic's start, and re-reads what it sent (duplicates skipped, older records dead-lettered as "
            "stale); raise offsets.retention.minutes or keep one replica running")


def read_topic_configs(admin: Any, topics: Iterable[str], timeout_s: float = 10) -> dict[str, dict[str, str]]:
    """Each topic's described configs, name to value (a topic Kafka does not describe is left out).
    Raises what the admin client raises (an ACL without DescribeConfigs, a timeout)."""
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in dict.fromkeys(topics)],
                                     request_timeout=timeout_s)
    return {resource.name: {name: str(entry.value) for name, entry in future.result(timeout_s).items()}
            for resource, future in futures.items()}


def read_offsets_retention(admin: Any, broker_id: int, timeout_s: float = 10) -> str | None:
    """A broker's `offsets.retention.minutes` (every broker of a cluster should agree)."""
    futures = admin.describe_configs([ConfigResource(ResourceType.BROKER, str(broker_id))], request_timeout=timeout_s)
    for future in futures.values():
        entry = future.result(timeout_s).get("offsets.retention.minutes")
        return None if entry is None else str(entry.value)
    return None


def persistence_warning(client: Any) -> str | None:
    """Whether every Redis node keeps its writes in an append-only file (INFO persistence), and
    what to do if not; None when it does. A user not allowed INFO gets a line saying so."""
    try:
        info = client.info("persistence")
    except REDIS_ERRORS as exc:
        if not is_denied(exc):
            raise
        return ("Redis persistence unchecked (INFO denied): make sure appendonly is yes, or a restart forgets the "
                "delivered marks and customers get a second SMS")
    nodes = [info] if "aof_enabled" in info else [v for v in info.values() if isinstance(v, Mapping)]
    if any(str(node.get("aof_enabled", "1")) == "0" for node in nodes):
        return ("Redis runs without AOF (appendonly no): after a restart it has only its last snapshot, so the "
                "delivered marks written since are forgotten and a copy of such an event is sent again; set "
                "appendonly yes (README, \"Redis durability matters\")")
    if not nodes or any("aof_enabled" not in node for node in nodes):
        return ("Redis persistence unchecked (INFO persistence does not say aof_enabled): make sure appendonly is "
                "yes, or a restart forgets the delivered marks and customers get a second SMS")
    return None


def _compacted(config: Mapping[str, str]) -> bool:
    return "compact" in config.get("cleanup.policy", "")


def _kept_ms(config: Mapping[str, str]) -> int | None:
    """The topic's retention.ms, None when it keeps records for ever or says nothing readable."""
    kept = _number(config.get("retention.ms"))
    return None if kept == NO_LIMIT else kept


def _number(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
