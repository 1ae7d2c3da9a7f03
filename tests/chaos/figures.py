"""What a chaos run is judged by, computed from the simulator's own logs and the dead-letter topic.

Nothing here trusts the consumers' metrics: deliveries come from the simulator's delivery log,
request times from its request log (its monotonic clock, the one its throttle counts with), and
outcomes from the dead-letter topic and the committed offsets.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.config.windows import RateWindow
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.samples import default_schema
from consumer.sre.dlq_read import DeadLetter, parse_dead_letter


def violating(times_ns: list[int], limit: int, period_ns: int) -> list[int]:
    """Times of the requests that found `limit` others in the half-open window (t - T, t] before
    them: the rule of the simulator's throttle and tests/integration/test_throttle_fleet.py."""
    return [times_ns[j] for j in range(limit, len(times_ns)) if times_ns[j] - times_ns[j - limit] < period_ns]


def window_violations(requests: Iterable[Mapping[str, Any]], windows: Iterable[RateWindow]) -> dict[str, list[int]]:
    """Violating request times per window, over every request that reached Pisano's throttle: the
    ones it let through (whatever the answer after it, as Pisano counts them) and the ones it
    refused with a throttle 429. A fleet that kept its windows has none, and no throttle 429."""
    times = sorted(int(r["clock_ns"]) for r in requests if _reached_throttle(r))
    return {f"{w.limit}/{w.period_ms}ms": violating(times, w.limit, w.period_ms * 1_000_000) for w in windows}


def describe_violations(found: Mapping[str, list[int]], happened: list[tuple[int, str]], start_ns: int) -> str:
    """How many per window, and for the first of each the three kinds of fault that came last
    before it (and the limiter's restore, if earlier), with how long before. The simulator runs in
    a process of its own on this machine (tests/support/simulator_process.py), so its monotonic
    clock is the run's."""
    parts = []
    for window, times in found.items():
        text = f"{window}: {len(times)}"
        if times:
            latest: dict[str, int] = {}
            for t, action in happened:
                if t <= times[0]:
                    latest[action] = t
            recent = sorted(latest.items(), key=lambda item: -item[1])[:3]
            if "restore_limiter" in latest and "restore_limiter" not in dict(recent):  # the usual suspect
                recent.append(("restore_limiter", latest["restore_limiter"]))
            after = "".join(f", {(times[0] - t) / 1e9:.1f} s after {a}" for a, t in recent)
            text += f" (first at {(times[0] - start_ns) / 1e9:.1f} s{after})"
        parts.append(text)
    return f"{sum(len(t) for t in found.values())}: " + ", ".join(parts)


def _reached_throttle(request: Mapping[str, Any]) -> bool:
    """Not refused before the throttle (consumer/simulator/sharing.py steps 1-5: body, token, campaign)."""
    if request["fault"] in ("token_code", "campaign_code"):
        return False
    return not (request["fault"] is None and request["http_status"] in (401, 404, 413))


def throttle_refusals(requests: Iterable[Mapping[str, Any]]) -> int:
    """429s the simulator's throttle gave (an injected 429 of the storm carries fault=error_rate)."""
    return sum(1 for r in requests if r["http_status"] == 429 and r["fault"] is None)


def delivered_phones(delivery_log: Path) -> Counter[str]:
    phones: Counter[str] = Counter()
    if delivery_log.exists():
        with delivery_log.open("rb") as log:
            for line in log:
                if line.endswith(b"\n"):  # the simulator may be writing the last line
                    phones[json.loads(line)["phone"]] += 1
    return phones


@dataclass
class Outcomes:
    """Each valid event's fate, before the SRE step."""

    events: int
    delivered: int = 0
    delivered_twice: int = 0
    # Event ids with neither a delivery, nor a dead letter, nor a contact-policy outcome (a first
    # receipt `cooldown` or `suppressed`, which contacts.py holds to the logs).
    lost: list[str] = field(default_factory=list)
    policy: Counter[str] = field(default_factory=Counter)  # outcome -> events ended unsent by the policy
    dead_letters: Counter[str] = field(default_factory=Counter)  # reason -> distinct events
    dead_letter_records: int = 0  # records in the DLQ (at-least-once: copies of one origin)
    ambiguous_delivered: int = 0  # ambiguous, and the simulator's log shows the delivery
    ambiguous_not_delivered: int = 0
    # Dead-lettered for a reason that says "not sent" (throttled, retries_exhausted...), and yet in
    # the delivery log: a copy of the event (another record, the same id) read later delivered it;
    # two records, one outcome each, one SMS. (The partition's next owner, reading the dead-lettered
    # record again before its commit, used to deliver it too: two outcomes for one record, which
    # the receipts' judge, contacts.py, now fails as a first receipt the logs contradict.)
    dead_lettered_then_delivered: list[str] = field(default_factory=list)
    to_replay: dict[str, DeadLetter] = field(default_factory=dict)  # event id -> one of its letters


def account(events: Mapping[str, str], delivered: Counter[str], dead: Iterable[Any],
            policy: Mapping[str, str] | None = None) -> Outcomes:
    """`events` maps each valid event id to the key its deliveries are counted by in `delivered`
    (its customer id: events may share a phone), `policy` the events a contact policy ended."""
    policy = policy or {}
    decoder = SchemalessDecoder(default_schema())
    outcomes = Outcomes(events=len(events))
    reasons: dict[str, set[str]] = {}
    letters: dict[str, DeadLetter] = {}
    for message in dead:
        outcomes.dead_letter_records += 1
        letter = parse_dead_letter(message)
        if letter is None or letter.value is None:
            continue
        event_id = str(decoder.decode(letter.value)["event_id"])
        reasons.setdefault(event_id, set()).add(letter.reason)
        letters.setdefault(event_id, letter)
    for event_id, key in events.items():
        count = delivered.get(key, 0)
        outcomes.delivered += count > 0
        outcomes.delivered_twice += count > 1
        why = reasons.get(event_id, set())
        if event_id in policy and not count:
            outcomes.policy[policy[event_id]] += 1
        elif count == 0 and not why:
            outcomes.lost.append(event_id)
        for reason in why:
            outcomes.dead_letters[reason] += 1
        if "ambiguous" in why:
            if count:
                outcomes.ambiguous_delivered += 1
            else:
                outcomes.ambiguous_not_delivered += 1
        elif why and count:
            outcomes.dead_lettered_then_delivered.append(event_id)
        if why and not count:
            outcomes.to_replay[event_id] = letters[event_id]
    return outcomes


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"| {name.ljust(width)} | {value} |" for name, value in rows)
