"""The `replay` and `dlq stats` commands: options in, progress and a summary out.

The work is done in consumer.sre.replay and consumer.sre.dlq_stats; this module checks the options
(one line and exit 2 when one is wrong), shows progress on stderr (stdout carries only the
summary, or the JSON of `dlq stats --json`) and prints counts, never a record's value: values
carry phone numbers. What it prints of a record's headers (campaigns, topics, malformed reasons)
goes through record_text.shown: escaped, phones masked.

consumer.cli imports this module when `replay` or `dlq` is named (or --help lists the commands),
and registers the commands there.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from consumer.cli_common import EXIT_CONFIG, configured, fail
from consumer.config.settings import Settings
from consumer.errors import StateStoreError
from consumer.operations import logs
from consumer.outcomes.deadletter import REASONS
from consumer.plain_number import plain_number
from consumer.sre.dlq_read import Filters, TopicError
from consumer.sre.dlq_stats import StatsError, StatsInterrupted, collect_stats
from consumer.sre.record_text import shown, shown_id
from consumer.sre.replay import (
    ReplayError,
    ReplayInterrupted,
    ReplayPlan,
    ReplaySummary,
    Verdict,
    default_group,
    resume_hint,
    run_replay,
)
from consumer.sre.replay_lock import RedisLockStore, ReplayLock, ReplayLocked, lock_key
from consumer.sre.replay_signature import MAX_SIGNED_REPLAYS
from consumer.sre.signals import Terminated
from consumer.state.redis import translated

EXIT_FAILED = 1
# `replay` ran to its end, but left selected records in the DLQ (refused or held): a script or a
# Job must not take the run for a full replay (found by review: it exited 0).
EXIT_NOT_ALL_REPLAYED = 3
EXIT_INTERRUPTED = 130  # the shell's own status for a command ended by Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # and by SIGTERM (128 + SIGTERM)
PLAIN_PROGRESS_INTERVAL_S = 5.0
# Progress lines of a wait on Kafka (Progress.note): at most one this often, the first at once.
NOTE_INTERVAL_S = 2.0
BAR_REDRAW_S = 0.1


class Count(click.IntRange):
    """A whole number of at least `min`, in ASCII digits: click's int() reading takes ' 3', '1_000'
    and Arabic-Indic or full-width digits, which an SRE did not mean as a count."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and plain_number(value, 18) is None:
            self.fail(f"{value!r} is not a whole number in ASCII digits, e.g. 100", param, ctx)
        return super().convert(value, param, ctx)


class Progress:
    """A bar on a terminal; elsewhere (a pipe, a CI log) a plain line every few seconds."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.interactive = sys.stderr.isatty()
        self._bar: Any = None
        self._shown = 0
        self._next = time.monotonic() + (BAR_REDRAW_S if self.interactive else PLAIN_PROGRESS_INTERVAL_S)
        self._next_note = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now < self._next and done < total:
            return
        if self.interactive:
            if self._bar is None:
                self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
                self._bar.__enter__()
            self._bar.update(done - self._shown)
            self._shown = done
            self._next = now + BAR_REDRAW_S
        elif done < total:
            click.echo(f"{self.label}: {done:,} of {total:,} records ({100 * done // max(total, 1)}%)", err=True)
            self._next = now + PLAIN_PROGRESS_INTERVAL_S

    def note(self, text: str) -> None:
        """A line saying what the command waits for (Kafka's acknowledgements, end offsets): no
        record moves the bar meanwhile, and a silent wait looks like a hung run."""
        now = time.monotonic()
        if now < self._next_note:
            return
        self._next_note = now + NOTE_INTERVAL_S
        # On its own line: a bar drawn on this terminal line is redrawn below it.
        click.echo(("\n" if self._bar is not None else "") + f"{self.label}: {text}", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _quiet_kafka_logs(settings: Settings) -> None:
    # These commands turn a Kafka failure into one line saying what to do; librdkafka's reconnect
    # chatter would bury it.
    logs.configure(settings.log_format, "WARNING")
    logging.getLogger("consumer.ingest.kafka").setLevel(logging.CRITICAL)
    logging.getLogger("librdkafka").setLevel(logging.CRITICAL)


@click.command("replay")
@click.option("--error-code", "error_codes", multiple=True, metavar="CODE",
              help="Only records with this Pisano error code (pisano.error.code), e.g. 13001. Repeatable.")
@click.option("--reason", "reasons", multiple=True, metavar="REASON",
              help=f"Only records with this dlq.reason ({', '.join(REASONS)}). Repeatable. "
                   "ambiguous and stale (events that may have been delivered) are replayed only when named "
                   "here, after checking with Pisano.")
@click.option("--campaign", "campaigns", multiple=True, metavar="ID",
              help="Only records of this campaign (dlq.campaign.id). Repeatable.")
@click.option("--since", metavar="WHEN",
              help="Only records that failed at or after WHEN (dlq.failed.at): ISO 8601 date or datetime, "
                   "UTC unless it carries an offset; Z accepted.")
@click.option("--until", metavar="WHEN", help="Only records that failed before WHEN (same form as --since).")
@click.option("--limit", type=Count(min=1), metavar="N",
              help="Stop after N records replayed (in a dry run: that would be); held and refused records do "
                   "not count (the next run goes on from there).")
@click.option("--max-replays", type=Count(min=1, max=MAX_SIGNED_REPLAYS), default=3, show_default=True,
              help="Refuse records already replayed this many times (header dlq.replays).")
@click.option("--from-topic", metavar="TOPIC", help="Read this topic instead of DLQ_TOPIC.")
@click.option("--to-topic", metavar="TOPIC",
              help="Re-publish to this topic instead of each record's dlq.original.topic. Like that one, it must "
                   "be a topic the consumers read (KAFKA_TOPICS, its patterns included), never the DLQ or the "
                   "receipt topic.")
@click.option("--to-unconsumed-topic", is_flag=True,
              help="Take a --to-topic that is not in KAFKA_TOPICS (a topic the fleet reads under a configuration "
                   "this run does not have). Never the DLQ or the receipt topic.")
@click.option("--group", metavar="GROUP",
              help="Consumer group that keeps the position. Default: pisano-sms-replay- and a hash of the filters.")
@click.option("--from-beginning", is_flag=True,
              help="Ignore the group's position and read from the start (the new position is still committed).")
@click.option("--past-horizon", is_flag=True,
              help="Replay also records that failed (or whose source records were written) longer ago than "
                   "DEDUP_HORIZON_S minus STALE_MARGIN_S, after "
                   "checking with Pisano: held otherwise (an earlier replay may have delivered them, and the "
                   "consumers remember a delivery that long only).")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed; publish and commit nothing.")
@click.option("--force", is_flag=True,
              help="Take the replay lock of this topic and group over from the run that holds it: only once you "
                   "made sure that run is gone (two at once re-publish the same records).")
@configured
def replay_command(settings: Settings, error_codes: tuple[str, ...], reasons: tuple[str, ...],
                   campaigns: tuple[str, ...], since: str | None, until: str | None, limit: int | None,
                   max_replays: int, from_topic: str | None, to_topic: str | None, to_unconsumed_topic: bool,
                   group: str | None, from_beginning: bool, past_horizon: bool, dry_run: bool, force: bool) -> None:
    """Re-publish dead-lettered records to their original topic, through the pipeline again.

    Only to the consumers' topics (KAFKA_TOPICS) or --to-topic: a dead-letter naming any other
    topic is refused, as is one whose headers are malformed. With REPLAY_SIGNING_KEY each record
    is signed, so the consumers can tell a real replay from a forged dlq.replays header.

    Key, value and the original headers are re-published untouched, with dlq.replays one higher;
    the consumers' dedup never sends a delivered event again, so replaying twice is safe. Filters
    combine with AND. Reads up to the end of the topic as it is at start, and resumes where the
    last run with the same filters stopped (its position is committed only once Kafka
    acknowledged everything re-published before it).

    \b
    Exit status:
      0    every selected record was replayed (in a dry run: would be); --limit may stop it
      3    the run ended, but selected records were refused or held (the summary's rows
           and its `not replayed` count): they are still in the DLQ
      1    Kafka failed part-way (the summary so far, then what to check)
      2    bad options or configuration, a missing topic, the lock held: nothing done
      130  interrupted (Ctrl-C), 143 terminated (SIGTERM)
    """
    try:
        filters = replace(Filters.from_options(error_codes, reasons, campaigns, since, until),
                          past_horizon=past_horizon)
    except ValueError as exc:
        fail(str(exc))
    plan = ReplayPlan(
        source_topic=from_topic or settings.dlq_topic, group=group or default_group(filters), filters=filters,
        limit=limit, max_replays=max_replays, to_topic=to_topic, to_unconsumed_topic=to_unconsumed_topic,
        dry_run=dry_run, from_beginning=from_beginning,
        # The consumers look for a delivered mark when they claim the replay, later than now (lag, a
        # backlog): their stale guard leaves STALE_MARGIN_S for that wait, and so does the hold.
        stale_before=datetime.now(UTC) - timedelta(milliseconds=settings.stale_after_ms),
    )
    _quiet_kafka_logs(settings)
    # A dry run publishes and commits nothing: it needs no lock, and never waits for one.
    lock = None if dry_run else _CliLock(settings, plan, force)
    progress = Progress(f"replay: reading {plan.source_topic}")
    try:
        summary = run_replay(settings, plan, progress, lock, progress.note)
    except (TopicError, ReplayLocked) as exc:
        fail(str(exc), EXIT_CONFIG)
    except ReplayInterrupted as exc:
        progress.close()
        _print_replay(plan, exc.summary, dlq_topic=settings.dlq_topic)
        terminated = isinstance(exc.__cause__, Terminated)
        fail(_interrupted(plan, exc.summary, exc.not_committed, terminated),
             EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    except ReplayError as exc:
        # The counts so far, then the one line saying what failed and what to do.
        progress.close()
        if exc.summary is not None:
            _print_replay(plan, exc.summary, failed=True, dlq_topic=settings.dlq_topic)
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt as exc:
        # Before the read began, or a second Ctrl-C while the interrupt's checkpoint waited for Kafka.
        terminated = isinstance(exc, Terminated)
        fail(("terminated (SIGTERM)" if terminated else "interrupted")
             + "; positions after the last checkpoint were not committed: run the same command again"
             + resume_hint(plan) + " to resume (the consumers skip what was delivered)",
             EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    finally:
        progress.close()
        if lock is not None:
            lock.release()
    _print_replay(plan, summary, dlq_topic=settings.dlq_topic)
    if summary.not_replayed:
        would = "would not be replayed (dry run)" if plan.dry_run else "were not replayed"
        fail(f"{summary.not_replayed:,} selected record(s) {would}: refused or held, see the summary's rows "
             "(they stay in the DLQ); everything else the run selected was "
             + ("counted" if plan.dry_run else "replayed and its position committed"), EXIT_NOT_ALL_REPLAYED)


def open_replay_lock(settings: Settings, plan: ReplayPlan) -> ReplayLock:
    """The lock of `plan`'s topic and group in the fleet's Redis (REDIS_URL, REDIS_KEY_PREFIX)."""
    from consumer.app import build_state

    with translated("the replay lock"):
        state = build_state(settings)
    return ReplayLock(RedisLockStore(state.client), lock_key(settings.redis_key_prefix, plan.source_topic, plan.group),
                      f"{shown_id(plan.source_topic)} with group {shown_id(plan.group)}")


class _CliLock:
    """The run's lock (consumer/sre/replay_lock.py), taken by run_replay once the topics are
    checked: ReplayLocked (exit 2) when another run holds it; a warning and no lock when Redis
    cannot be asked (the consumers' dedup still keeps records from going twice)."""

    def __init__(self, settings: Settings, plan: ReplayPlan, force: bool) -> None:
        self.settings, self.plan, self.force = settings, plan, force
        self.held: ReplayLock | None = None

    def acquire(self) -> None:
        self.held = _take_replay_lock(self.settings, self.plan, self.force)

    def lost(self) -> str | None:
        return self.held.lost() if self.held is not None else None

    def release(self) -> None:
        if self.held is not None:
            self.held.release()


def _take_replay_lock(settings: Settings, plan: ReplayPlan, force: bool) -> ReplayLock | None:
    try:
        lock = open_replay_lock(settings, plan)
        with translated("the replay lock"):
            took_over = lock.acquire(force)
    except StateStoreError as exc:
        click.secho(f"pisano-sms: warning: replay runs without its lock ({exc}): make sure no other replay of "
                    f"{shown_id(plan.source_topic)} with group {shown_id(plan.group)} runs (two at once re-publish "
                    "the same records; the consumers' dedup sends none twice)", fg="yellow", err=True)
        return None
    if took_over is not None:
        click.secho(f"pisano-sms: warning: {took_over}", fg="yellow", err=True)
    return lock


def _interrupted(plan: ReplayPlan, summary: ReplaySummary, not_committed: str | None = None,
                 terminated: bool = False) -> str:
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    if plan.dry_run:
        return f"{how}: a dry run publishes and commits nothing; run it again for the whole count"
    if not_committed is not None:
        # The interrupt's checkpoint could not commit: only earlier checkpoints' positions stand.
        kept = ((f"positions up to the last checkpoint are committed for group {plan.group}" if summary.committed
                 else "nothing was committed") + f", none after it ({not_committed})")
    else:
        kept = (f"what Kafka acknowledged is committed for group {plan.group}" if summary.committed
                else "nothing was committed")
    return (f"{how} after {summary.read:,} record(s) read: {kept}; run the same command "
            f"again{resume_hint(plan)} to resume")


def _advised_run(plan: ReplayPlan, dlq_topic: str | None, options: str, more: str = "") -> str:
    """The options of the run that replays what this one held: it reads the topic this one read
    and publishes where this one did (without --from-topic it would read DLQ_TOPIC and never reach
    them); its own default group reads them, whatever this run's position."""
    if plan.source_topic != dlq_topic:
        options += f" --from-topic {shown_id(plan.source_topic)}"
    if plan.to_topic is not None:
        options += f" --to-topic {shown_id(plan.to_topic)}"
        if plan.to_unconsumed_topic:
            options += " --to-unconsumed-topic"
    if plan.group != default_group(plan.filters):
        # The same --group again would resume past them and read nothing.
        more += f", without --group {shown_id(plan.group)}"
    position = ("a real run of this group commits its position past them" if plan.dry_run
                else "this group's position is past them")
    return f"{options}{more}: that run's default group reads them, {position}"


def _fate_unknown_hint(plan: ReplayPlan, summary: ReplaySummary, dlq_topic: str | None) -> str:
    """What to do with the dead-letters held because their events may have been delivered."""
    if not summary.fate_unknown:
        return "ambiguous or stale: replayed only by a run whose --reason names them"
    reasons = sorted(summary.fate_unknown)
    counts = ", ".join(f"{reason} {summary.fate_unknown[reason]:,}" for reason in reasons)
    named = " ".join(f"--reason {reason}" for reason in reasons)
    return (f"{counts}: their events may have been delivered; check with Pisano, then replay the ones it "
            f"never got with {_advised_run(plan, dlq_topic, named, ' (and --since/--until, --campaign)')}")


def _past_horizon_hint(plan: ReplayPlan, summary: ReplaySummary, dlq_topic: str | None) -> str:
    """What to do with the dead-letters held because they failed longer ago than the horizon."""
    what = ("failed, or were written, longer ago than DEDUP_HORIZON_S minus STALE_MARGIN_S: an earlier replay "
            "or copy may have delivered them, and the consumers no longer remember it")
    if not summary.verdicts[Verdict.PAST_HORIZON]:
        return what
    return (f"{what}; check with Pisano, then replay the ones it never got with these filters and "
            f"{_advised_run(plan, dlq_topic, '--past-horizon')}")


def _print_replay(plan: ReplayPlan, summary: ReplaySummary, failed: bool = False,
                  dlq_topic: str | None = None) -> None:
    would = "would replay" if plan.dry_run else "replayed"
    title = f"Replay of {plan.source_topic} (group {plan.group})"
    click.secho(title + (", dry run: nothing published, nothing committed" if plan.dry_run else ""), bold=True)
    # After a failure part-way, what Kafka acknowledged: the records the `replayed` row counts.
    replayed = summary.breakdown(acknowledged=not plan.dry_run)
    targets = ", ".join(f"{shown_id(topic)} {n:,}" for topic, n in sorted(replayed.by_target.items()))
    rows = [
        ("read", summary.read, ""),
        ("foreign", summary.verdicts[Verdict.FOREIGN], "no dead-letter headers: not written by pisano-sms, left alone"),
        ("matched", summary.matched, "records that pass the filters"),
        (would, summary.replayed if plan.dry_run else summary.acknowledged,
         (f"to {targets}" if targets else "")
         + (f" (stopped at --limit {plan.limit})" if summary.limit_reached else "")),
        ("duplicates skipped", summary.verdicts[Verdict.DUPLICATE],
         "same origin, key and value as a record replayed in this run"),
        ("held: fate unknown", summary.verdicts[Verdict.FATE_UNKNOWN], _fate_unknown_hint(plan, summary, dlq_topic)),
        ("held: past horizon", summary.verdicts[Verdict.PAST_HORIZON], _past_horizon_hint(plan, summary, dlq_topic)),
        ("refused: max replays", summary.verdicts[Verdict.OVER_MAX_REPLAYS],
         f"replayed {plan.max_replays} times already (--max-replays): find out why they keep failing; to replay "
         "them still, a higher --max-replays with their time range and a new --group (this group's position is "
         "past them)"),
        ("refused: value omitted", summary.verdicts[Verdict.VALUE_OMITTED],
         "the DLQ kept only the headers (too large): re-send from the source, dlq.original.*"),
        ("refused: no value", summary.verdicts[Verdict.NO_VALUE],
         "a tombstone (null value) with dead-letter headers: no event to re-publish; left in the DLQ"),
        ("refused: other topic", summary.verdicts[Verdict.NOT_CONSUMER_TOPIC],
         "dlq.original.topic is not in KAFKA_TOPICS: check the record; if its topic is wrong, replay its time "
         "range (--since/--until) with --to-topic (a topic of KAFKA_TOPICS, or add --to-unconsumed-topic) and a new "
         "--group (this group's position is past it)"
         + (f" ({_top(summary.not_consumer_topics, show=shown_id)})" if summary.not_consumer_topics else "")),
        ("refused: by Kafka", summary.verdicts[Verdict.REFUSED_BY_KAFKA],
         "Kafka refused them, each sent alone (e.g. larger than the topic's max.message.bytes): fix the topic, "
         "then replay their time range with --since/--until and a new --group (--from-beginning would "
         "re-publish records replayed already)" + (f" ({_top_refusals(summary.kafka_refusals)})"
                                                      if summary.kafka_refusals else "")),
        ("refused: malformed", summary.verdicts[Verdict.MALFORMED],
         "our headers, but unusable" + (f" ({_top(summary.malformed)})" if summary.malformed else "")),
    ]
    rows.append(("not replayed", summary.not_replayed,
                 "of the records selected, the ones refused or held above: still in the DLQ (exit status 3)"
                 if summary.not_replayed else ""))
    if not plan.dry_run and summary.replayed > summary.acknowledged:
        rows.insert(4, ("unacknowledged", summary.replayed - summary.acknowledged,
                        "published, not acknowledged by Kafka before the run stopped: the next run publishes them "
                        "again (the consumers skip what was delivered)"))
    for name, count, detail in rows:
        click.echo(f"  {name:<24}{count:>9,}   {detail}".rstrip())
    for name, counter in (("by error code", replayed.by_code), ("by campaign", replayed.by_campaign),
                          ("by reason", replayed.by_reason)):
        if counter:
            click.echo(f"  {name:<24}" + ", ".join(f"{shown_id(key)} {n:,}" for key, n in counter.most_common()))
    for partition, position, end, by_id in summary.recreated:
        # Past the end with no topic id to go by, it may be a truncation too (consumer/sre/topic_identity.py).
        why = ("was committed on an earlier topic of that name (its topic id differs): the topic was deleted "
               "and recreated" if by_id else
               f"was past its end ({end:,}): the topic was deleted and recreated (or truncated)")
        click.secho(f"  warning: group {plan.group}'s position {position:,} on {shown_id(plan.source_topic)} partition "
                    f"{partition} {why}; read it from its beginning (what was replayed before is not sent twice: "
                    "the consumers' dedup)", fg="yellow")
    for partition, position, end in summary.truncated:
        click.secho(f"  warning: group {plan.group}'s position {position:,} on {shown_id(plan.source_topic)} partition "
                    f"{partition} was past its end ({end:,}) on the same topic (its topic id is unchanged): its last "
                    "records were lost (an unclean leader election?); they were read before, so the run resumed at "
                    "its end and re-published none of them", fg="yellow")
    if summary.read == 0 and summary.behind:
        # The group is a hash of the filters alone: a run to a wrong --to-topic moved it too.
        click.echo(f"  nothing new for group {plan.group}: its position is past the {summary.behind:,} record(s) "
                   "an earlier run with these filters read (whatever its --to-topic); --from-beginning or a new "
                   "--group reads them again")
    elif summary.read and not summary.matched:
        click.echo("  no record matched the filters: `pisano-sms dlq stats` shows the codes, reasons and campaigns "
                   "in the topic")
    if replayed.stale:
        click.secho(f"  warning: {replayed.stale:,} of these failed, or were written, longer ago than "
                    "DEDUP_HORIZON_S minus STALE_MARGIN_S: the consumers may no longer know whether those events "
                    "were delivered, and would send them", fg="yellow")
    if replayed.by_reason.get("stale"):
        # The replay is a new record: the consumers' stale guard reads its new time and lets it by.
        click.secho(f"  warning: {replayed.by_reason['stale']:,} of these are `stale` dead-letters: replayed, their "
                    "events are sent even if they were delivered longer ago than DEDUP_HORIZON_S; replay them "
                    "only if Pisano shows they were never delivered (--reason names the reasons to replay)",
                    fg="yellow")
    if not summary.signed and summary.replayed:
        click.secho("  warning: REPLAY_SIGNING_KEY is not set: these records carry no replay signature, and "
                    "consumers that check signatures treat them as fresh records (an event of unknown fate "
                    "is not sent)", fg="yellow")
    if plan.dry_run:
        return
    if failed:
        click.echo("  positions up to the last checkpoint committed for group " + plan.group if summary.committed
                   else "  nothing committed")
        return
    click.echo("  position committed for group " + plan.group if summary.committed else "  nothing to commit")


def _top(counter: Counter[str], count: int = 3, show: Callable[[str, int], str] = shown) -> str:
    return ", ".join(f"{show(key, 80)} {n:,}" for key, n in counter.most_common(count))


def _top_refusals(counter: Counter[tuple[str, str]], count: int = 3) -> str:
    # Topic names as they are (shown_id): masked like phones, a dated topic is not the one to fix.
    return ", ".join(f"{shown_id(error, 40)} ({shown_id(topic, 80)}) {n:,}" for (error, topic), n in
                     counter.most_common(count))


@click.group("dlq")
def dlq_group() -> None:
    """Look into the dead-letter topic (DLQ_TOPIC)."""


@dlq_group.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@configured
def stats(settings: Settings, as_json: bool) -> None:
    """Counts of the dead-letter topic by error code, reason and campaign.

    With unique origins (a source record dead-lettered twice counts once) and the oldest and
    newest failure time. Reads the whole topic once and moves no consumer group's position.
    """
    _quiet_kafka_logs(settings)
    progress = Progress(f"dlq stats: reading {settings.dlq_topic}")
    try:
        result = collect_stats(settings, settings.dlq_topic, progress, progress.note)
    except TopicError as exc:
        fail(str(exc), EXIT_CONFIG)
    except StatsInterrupted as exc:
        progress.close()
        fail(str(exc), EXIT_TERMINATED if exc.terminated else EXIT_INTERRUPTED)
    except StatsError as exc:
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt as exc:  # before the read began (connecting, the topic's metadata)
        terminated = isinstance(exc, Terminated)
        fail(("terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)") + " before the read began; dlq "
             "stats only reads, it changed nothing: run it again", EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        for line in result.table():
            click.echo(line)


# Declared types: consumer.cli registers these by name, and mypy cannot infer decorated names.
replay: click.Command = replay_command
dlq: click.Group = dlq_group
