"""Which topic of a name a replay group's position was committed on (README, "SRE replay").

A replay resumes from its group's committed offsets, and an offset means something only on the
topic it was committed on. A DLQ deleted and recreated under the same name (an SRE purging it)
starts again at 0; an unclean leader election moves a partition's end back on the same topic. An
offset past the end cannot tell the two apart (read from the beginning, the truncated partition was
re-published), and a recreated topic that grew past the old offset does not show at all (its
records below it were skipped). Kafka's topic id, given at creation, tells: the replay stores it in
the metadata of each offset it commits and compares it with the topic's current id at start.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Future
from enum import StrEnum
from typing import Any

from confluent_kafka import KafkaException, TopicCollection

from consumer.config.settings import Settings
from consumer.ingest.kafka import make_admin

log = logging.getLogger(__name__)

# Prefixed: a group's metadata written by another tool is not taken for an id.
METADATA_PREFIX = "pisano-sms.topic-id="
DESCRIBE_TIMEOUT_S = 10.0
NOTE_EVERY_S = 2.5  # as dlq_read.METADATA_NOTE_S
# A topic id as librdkafka writes it: 16 bytes in base64, unpadded (either alphabet).
_TOPIC_ID = re.compile(r"[A-Za-z0-9+/_-]{22}")
# What a broker that keeps no topic ids (ZooKeeper before IBP 2.8, Metadata before v10) answers
# for every topic: taken for an id, a recreated topic would look like the same one.
ZERO_ID = "AAAAAAAAAAAAAAAAAAAAAA"


class Start(StrEnum):
    RESUME = "resume"  # from the committed position
    RECREATED = "recreated"  # another topic of that name since: from its beginning
    TRUNCATED = "truncated"  # the same topic, its end moved back below the position: from its end


def decide(position: int, stored_id: str | None, current_id: str | None, end: int) -> Start:
    """Where a partition's read starts, given the committed position and the ids."""
    if position < 0:  # nothing committed
        return Start.RESUME
    if stored_id is not None and current_id is not None:
        if stored_id != current_id:
            return Start.RECREATED
        return Start.TRUNCATED if position > end else Start.RESUME
    # A commit without an id (a replay before ids were stored, another tool) or a broker that did
    # not say: an offset past the end is all there is, taken for a recreated topic, the safe side
    # (the consumers' dedup absorbs what is sent again; records skipped are never sent).
    return Start.RECREATED if position > end else Start.RESUME


def encoded(topic_id: str) -> str:
    return METADATA_PREFIX + topic_id


def decoded(metadata: str | None) -> str | None:
    """The id a commit carries; None for anything else (another tool's metadata, garbage behind
    our prefix, the zero id): such a commit goes by offsets alone."""
    if metadata and metadata.startswith(METADATA_PREFIX):
        return _id_or_none(metadata[len(METADATA_PREFIX):])
    return None


def committed_id(committed: Any) -> str | None:
    """The id a committed offset (a TopicPartition from `Consumer.committed`) carries."""
    try:
        metadata = committed.metadata
    except UnicodeDecodeError:
        # confluent_kafka decodes it as UTF-8 when read: whoever commits on the group chooses
        # the bytes, and a broker may keep them as sent. Not ours, and no reason to stop a replay.
        return None
    return decoded(metadata)


def _id_or_none(text: str) -> str | None:
    return text if _TOPIC_ID.fullmatch(text) and text != ZERO_ID else None


def topic_id_of(settings: Settings, topic: str, note: Callable[[str], None] = lambda text: None) -> str | None:
    """The topic's current id, None when the broker does not say (an old broker, no Describe
    right): the replay then goes by offsets alone, as before ids were stored. `note(text)` says
    what it waits for every NOTE_EVERY_S of the wait (up to DESCRIBE_TIMEOUT_S)."""
    admin = make_admin(settings)  # held until the answer: a client collected meanwhile fails its futures
    try:
        described = admin.describe_topics(TopicCollection([topic]), request_timeout=DESCRIBE_TIMEOUT_S)[topic]
        topic_id = _answer(described, f"the id of topic {topic}", note).topic_id
    except (KafkaException, TimeoutError) as exc:  # concurrent.futures' TimeoutError is this one
        log.warning("could not read the id of topic %s (%s): a recreated topic is told by its offsets alone",
                    topic, exc, extra={"topic": topic})
        return None
    known = _id_or_none(str(topic_id)) if topic_id is not None else None
    if known is None:
        log.warning("Kafka gives no id for topic %s (a broker that keeps no topic ids): a recreated topic is "
                    "told by its offsets alone", topic, extra={"topic": topic})
    return known


def _answer(future: Future[Any], what: str, note: Callable[[str], None]) -> Any:
    """The future's result within DESCRIBE_TIMEOUT_S (TimeoutError after), `note` saying what it
    waits for after each NOTE_EVERY_S it waited (found by review: 10 s of silence)."""
    started = time.monotonic()
    while True:
        left = started + DESCRIBE_TIMEOUT_S - time.monotonic()
        try:
            return future.result(timeout=max(0.0, min(NOTE_EVERY_S, left)))
        except TimeoutError:
            if left <= NOTE_EVERY_S:
                raise
        note(f"{what}: waiting for Kafka, {time.monotonic() - started:.0f}s of at most {DESCRIBE_TIMEOUT_S:.0f}s")
