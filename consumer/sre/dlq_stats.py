"""`pisano-sms dlq stats`: what is in the dead-letter topic, by error code, reason and campaign.

One pass over the whole topic, from the low to the high watermarks taken at start, with an
assigned consumer that never commits: looking must not move any group's position. Unique origins
count the distinct source records (dead-lettering is at-least-once, so one may appear twice),
exactly: a token outage can put millions of records in the DLQ, so they are kept as offset
intervals (consumer/sre/origin_set.py), not in sets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaException

from consumer.config.settings import Settings
from consumer.errors import PisanoSmsError
from consumer.ingest.kafka import make_consumer, refused_settings
from consumer.sre.dlq_read import (
    NO_VALUE,
    OTHER,
    DeadLetter,
    MalformedDeadLetter,
    ReadStopped,
    TopicReader,
    close_reader,
    kafka_error_text,
    parse_dead_letter,
)
from consumer.sre.origin_set import OriginSet
from consumer.sre.record_text import shown_id
from consumer.sre.signals import Terminated, terminate_interrupts

log = logging.getLogger(__name__)

# Never committed to nor joined: librdkafka only insists on a group id.
STATS_GROUP = "pisano-sms-dlq-stats"

RowKey = tuple[str, str, str]  # error code, reason, campaign
# Rows past this many distinct (code, reason, campaign) share one row, OTHER_ROW: the DLQ's writers
# choose codes and campaigns (consumer/sre/dlq_read.py, MAX_DISTINCT), and each row keeps an origin set.
MAX_ROWS = 10_000
OTHER_ROW: RowKey = (OTHER, OTHER, OTHER)


class StatsError(PisanoSmsError):
    """Kafka failed part-way through the read; the message says what to check."""


class StatsInterrupted(StatsError):
    """Ctrl-C or SIGTERM part-way (`terminated`): how far the read got. No table: counts of part
    of the topic would pass for the whole; nothing was changed (no group's position moves)."""

    def __init__(self, stats: DlqStats, total: int, terminated: bool) -> None:
        how = "terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)"
        super().__init__(f"{how} after {stats.records:,} of {total:,} record(s) of {shown_id(stats.topic)} read; "
                         "no counts shown (part of the topic would pass for the whole); dlq stats only reads, "
                         "it changed nothing: run it again for the whole count")
        self.stats, self.total, self.terminated = stats, total, terminated


@dataclass
class Row:
    records: int = 0
    origins: OriginSet = field(default_factory=OriginSet)
    oldest: datetime | None = None
    newest: datetime | None = None

    def add(self, letter: DeadLetter) -> None:
        self.records += 1
        self.origins.add(letter.origin)
        if self.oldest is None or letter.failed_at < self.oldest:
            self.oldest = letter.failed_at
        if self.newest is None or letter.failed_at > self.newest:
            self.newest = letter.failed_at


@dataclass
class DlqStats:
    topic: str
    records: int = 0
    foreign: int = 0
    malformed: int = 0  # our headers, unusable (MalformedDeadLetter)
    rows: dict[RowKey, Row] = field(default_factory=dict)
    origins: OriginSet = field(default_factory=OriginSet)
    other_records: int = 0  # records counted in OTHER_ROW: their rows were past MAX_ROWS

    def add(self, letter: DeadLetter | None) -> None:
        self.records += 1
        if letter is None:
            self.foreign += 1
            return
        key = (letter.code_label, letter.reason, letter.campaign_label)
        row = self.rows.get(key)
        if row is None and len(self.rows) >= MAX_ROWS:
            key, self.other_records = OTHER_ROW, self.other_records + 1
            row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row()
        row.add(letter)
        self.origins.add(letter.origin)

    def sorted_rows(self) -> list[tuple[RowKey, Row]]:
        return sorted(self.rows.items(), key=lambda item: (-item[1].records, item[0]))

    def shown_rows(self) -> list[tuple[RowKey, Row]]:
        """The rows with their keys as they may be printed: the keys come from records
        (consumer/sre/record_text.py), checked by the parser, escaped all the same."""
        return [((shown_id(code), shown_id(reason), shown_id(campaign)), row)
                for (code, reason, campaign), row in self.sorted_rows()]

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "records": self.records,
            "foreign": self.foreign,
            "malformed": self.malformed,
            "unique_origins": len(self.origins),
            "other_records": self.other_records,
            "rows": [
                {"error_code": None if code == NO_VALUE else code, "reason": reason,
                 "campaign_id": None if campaign == NO_VALUE else campaign, "records": row.records,
                 "unique_origins": len(row.origins), "oldest": _iso(row.oldest, "milliseconds"),
                 "newest": _iso(row.newest, "milliseconds")}
                for (code, reason, campaign), row in self.shown_rows()
            ],
        }

    def table(self) -> list[str]:
        header = ("error code", "reason", "campaign", "records", "origins", "oldest failure", "newest failure")
        lines = [[code, reason, campaign, f"{row.records:,}", f"{len(row.origins):,}", _iso(row.oldest) or "",
                  _iso(row.newest) or ""] for (code, reason, campaign), row in self.shown_rows()]
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
        numeric = {3, 4}

        def render(cells: tuple[str, ...] | list[str]) -> str:
            return "  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

        out = [render(header), *(render(cells) for cells in lines)]
        out.append(f"{self.records:,} record(s) in {self.topic}, {len(self.origins):,} unique origin(s)"
                   + (f", {self.foreign:,} foreign (not written by pisano-sms)" if self.foreign else "")
                   + (f", {self.malformed:,} malformed (our headers, unusable)" if self.malformed else ""))
        if self.other_records:
            out.append(f"{self.other_records:,} record(s) of more than {MAX_ROWS:,} distinct (error code, reason, "
                       f"campaign) counted together as {OTHER}: records not written by pisano-sms? look at the "
                       "topic's producers (its ACLs)")
        return out


def _iso(when: datetime | None, timespec: str = "seconds") -> str | None:
    return when.isoformat(timespec=timespec).replace("+00:00", "Z") if when else None


def collect_stats(settings: Settings, topic: str, progress: Callable[[int, int], None] | None = None,
                  waiting: Callable[[str], None] | None = None) -> DlqStats:
    """Read `topic` once, to the end offsets it had when the read started; StatsInterrupted on a
    Ctrl-C or SIGTERM part-way (found by review: SIGTERM killed it without a word). `waiting(text)`:
    a progress line before each partition's end offsets are read (TopicReader.open)."""
    with terminate_interrupts():
        return _collect_stats(settings, topic, progress, waiting or (lambda text: None))


def _collect_stats(settings: Settings, topic: str, progress: Callable[[int, int], None] | None,
                   waiting: Callable[[str], None]) -> DlqStats:
    with refused_settings():  # a client librdkafka refuses to make: a ConfigError naming the setting
        consumer = make_consumer(settings, **{"group.id": STATS_GROUP, "enable.partition.eof": True})
    stats = DlqStats(topic)
    reader = TopicReader(consumer, topic, settings.kafka_bootstrap_servers, start="beginning",
                         missing_hint="check DLQ_TOPIC", note=waiting)
    try:
        reader.open()
        for message in reader.records():
            try:
                stats.add(parse_dead_letter(message))
            except MalformedDeadLetter:
                stats.records += 1
                stats.malformed += 1
            if progress is not None:
                progress(stats.records, reader.total)
    except KeyboardInterrupt as exc:
        raise StatsInterrupted(stats, reader.total, isinstance(exc, Terminated)) from exc
    except ReadStopped as exc:  # part-way: as below, not the exit 2 of a topic missing at the start
        raise StatsError(f"{exc} (after {stats.records:,} of {reader.total:,} record(s))") from exc
    except KafkaException as exc:
        # From consume(): counts of part of the topic would pass for the whole, so none are shown.
        raise StatsError(f"reading {topic} failed after {stats.records:,} of {reader.total:,} record(s) "
                         f"({kafka_error_text(exc)}): check KAFKA_BOOTSTRAP_SERVERS and the security settings, "
                         f"that {topic} exists and that this user's ACLs allow reading it; then run again") from exc
    finally:
        close_reader(consumer, "the dlq stats consumer")
    log.info("read %d dead-letter(s) from %s", stats.records, topic, extra={"topic": topic, "count": stats.records})
    return stats
