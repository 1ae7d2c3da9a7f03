"""How long the replica has been outside its consumer group, and when that is longer than any
rebalance can take.

After a broker restart, librdkafka's consumer rejoins by itself: a lost session, a new member id,
a join that waits for the old member's session to expire. Once (CI, a single broker restarted late
in the suite) the consumer never rejoined: no coordinator found for 12 s after the broker
answered, then no assignment for the remaining 80 s of the test, while the same broker served
the group's offsets to other clients. A replica in that state consumes nothing, and with every
replica in it nothing is sent at all; nothing in the client reports it.

A legitimate join waits at most for every other member to rejoin (the rebalance timeout, their
max.poll.interval.ms) and for a dead member's session to expire (session.timeout.ms, and a
second one for a member id the client abandoned). Past that, with Kafka answering, the client is
replaced (`Pipeline._check_membership`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import TopicPartition

from consumer.ingest.kafka import CONSUMER_DEFAULTS


def rejoin_limit_s(kafka: Mapping[str, Any]) -> float:
    """max.poll.interval.ms plus twice session.timeout.ms, from the user's librdkafka settings
    (`kafka`, strings or numbers) or the consumer's defaults."""
    def ms(name: str) -> float:
        return float(kafka.get(name, CONSUMER_DEFAULTS[name]))

    return (ms("max.poll.interval.ms") + 2 * ms("session.timeout.ms")) / 1000


class GroupWatch:
    """Outside the group from the subscription, from each lost assignment and from a member id
    reset, until an assignment (possibly empty) arrives."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._outside_since: float | None = None

    def left(self, now: float) -> None:
        if self._outside_since is None:
            self._outside_since = now

    def joined(self) -> None:
        self._outside_since = None

    @property
    def inside(self) -> bool:
        return self._outside_since is None

    def restart(self, now: float) -> None:
        """Still outside, but the time so far does not count (Kafka did not answer, or had none of
        the subscribed topics): a client is given the whole time of a rebalance from `now`."""
        if self._outside_since is not None:
            self._outside_since = now

    def outside_for(self, now: float) -> float:
        return 0.0 if self._outside_since is None else now - self._outside_since

    def overdue(self, now: float) -> bool:
        return self.outside_for(now) >= self.limit_s


def missing_topics(subscribed: Iterable[str], metadata: Any) -> list[str]:
    """The subscribed topics (names, or librdkafka's regular expressions: `^...`) that name no
    topic with partitions in the cluster's `metadata` (`list_topics()`): with all of them missing,
    librdkafka joins no group, and a new client would not either."""
    present = [name for name, topic in metadata.topics.items() if topic.error is None and topic.partitions]
    return [s for s in subscribed if not (_matches_any(s, present) if s.startswith("^") else s in present)]


def committed_metadata(consumer: Any, subscribed: Iterable[str], timeout_s: float
                       ) -> list[tuple[str, int, str | None]]:
    """The group's committed (topic, partition, metadata) of the subscribed topics, for the stamps
    its commits carry (consumer/state/witness.py); raises KafkaException."""
    metadata = consumer.list_topics(timeout=timeout_s)
    partitions = [TopicPartition(topic, partition) for topic in subscribed_topics(subscribed, metadata)
                  for partition in metadata.topics[topic].partitions]
    committed = consumer.committed(partitions, timeout=timeout_s) if partitions else []
    return [(p.topic, p.partition, _metadata_of(p)) for p in committed if p.error is None]


def _metadata_of(partition: Any) -> str | None:
    """A committed partition's metadata, None when it cannot be read: confluent-kafka raises
    UnicodeDecodeError for some metadata other tools commit (one or two bytes, b"\\xff" or "é",
    seen with 2.16: it reads past them), and it must not stop the start of every replica."""
    try:
        return partition.metadata  # type: ignore[no-any-return]
    except ValueError:  # UnicodeDecodeError among others
        return None


def subscribed_topics(subscribed: Iterable[str], metadata: Any) -> list[str]:
    """The topics of the cluster's `metadata` the subscription names, or matches (`^...`); a
    pattern in librdkafka's dialect that Python cannot read matches none here."""
    names = list(subscribed)
    return [name for name in sorted(metadata.topics) if subscribes(names, name)]


def subscribes(subscribed: Iterable[str], name: str) -> bool:
    """Whether the subscription (names, or librdkafka's regular expressions: `^...`) takes topic
    `name`; a pattern in librdkafka's dialect that Python cannot read takes none here."""
    return any(s == name or (s.startswith("^") and _matches(s, name)) for s in subscribed)


def _matches(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


def _matches_any(pattern: str, names: list[str]) -> bool:
    try:
        return any(re.search(pattern, name) for name in names)
    except re.error:  # librdkafka's regex dialect, not Python's: not known missing, so not counted as missing
        return True
