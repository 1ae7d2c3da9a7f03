"""What the chaos run's contact policy and receipts are judged by (README, "Contact policy" and "Receipts").

Like figures.py, nothing here trusts the consumers: a survey is a line of the simulator's delivery
log, a receipt is what the receipt topic holds, a dead letter what the dead-letter topic holds.
Events may share a phone (so the cooldown triggers), so a delivery is told to its event by the
recipient's `external_id` attribute (the default mapping's `customer.id`, unique per event), and
to its customer by its phone.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from consumer.outcomes.receipts import PhoneHasher, Receipt, first_receipts

Origin = tuple[str, int, int]  # topic, partition, offset of an input record

# The outcomes that end an event unsent by design (README, "Contact policy"), and their reasons.
POLICY_REASONS = {"cooldown": "contact_cooldown", "suppressed": "opt_out_list"}
# A second receipt of one record says what the second pass saw (README, "Receipts"): a record
# accepted the first time finds its id delivered (`duplicate`); a dead-letter is dead-lettered
# again, not written twice; a duplicate stays one. A contact-policy outcome is seen again as it
# was: the phone is still cooling (the run's cooldown outlasts it), the list still holds it.
SECOND_PASS = {"accepted": "duplicate", "duplicate": "duplicate", "dead_lettered": "dead_lettered",
               "cooldown": "cooldown", "suppressed": "suppressed"}


@dataclass(frozen=True)
class Planned:
    """One event the run produced: its phone (maybe an earlier event's) and its own customer id."""

    phone: str
    customer: str


@dataclass(frozen=True)
class Delivery:
    phone: str
    customer: str | None  # the recipient's external_id attribute
    time_ms: int  # the simulator's wall clock when it accepted the request


def read_deliveries(delivery_log: Path) -> list[Delivery]:
    found: list[Delivery] = []
    if delivery_log.exists():
        with delivery_log.open("rb") as log:
            for line in log:
                if line.endswith(b"\n"):  # the simulator may be writing the last line
                    record = json.loads(line)
                    customer = (record.get("custom_attributes") or {}).get("external_id")
                    found.append(Delivery(record["phone"], customer, int(record["time_ms"])))
    return found


def per_customer(deliveries: Iterable[Delivery]) -> Counter[str]:
    return Counter(d.customer for d in deliveries if d.customer is not None)


def surveyed_too_soon(deliveries: Iterable[Delivery], cooldown_ms: int) -> list[str]:
    """Phones with two accepted surveys less than the cooldown apart. The cooldown counts from
    Pisano's 200 (README), which comes after the simulator logs the first survey, and the second is
    checked before its request leaves: so the simulator's times are at least the cooldown apart."""
    times: dict[str, list[int]] = defaultdict(list)
    for d in deliveries:
        times[d.phone].append(d.time_ms)
    return sorted(phone for phone, t in times.items()
                  if any(b - a < cooldown_ms for a, b in zip(sorted(t), sorted(t)[1:], strict=False)))


@dataclass
class Receipts:
    """The receipt topic against the logs, after the SRE step."""

    records: int  # input records, the SRE step's replays included
    written: int  # receipts in the topic
    without_receipt: list[Origin] = field(default_factory=list)
    first: Counter[str] = field(default_factory=Counter)  # first receipts by outcome
    wrong: list[str] = field(default_factory=list)  # first receipts the logs contradict, described
    second: Counter[tuple[str, str]] = field(default_factory=Counter)  # (first, later) outcome
    # Accepted by Pisano, yet its records' first receipts say only `duplicate`: the README's one
    # case where the first receipt is not the whole truth (a replica killed between Pisano's 200
    # and any receipt of that request's events).
    accepted_as_duplicate_only: int = 0
    # (origin, event id, outcome) of each first receipt `cooldown` or `suppressed` the logs agree with
    policy_records: list[tuple[Origin, str, str]] = field(default_factory=list)

    def policy(self, ends: Mapping[int, int] | None = None) -> dict[str, str]:
        """Event id -> its contact-policy outcome, from the records below `ends` (partition -> end
        offset of the input topic at some moment; None: every record)."""
        return {event_id: outcome for (_, partition, offset), event_id, outcome in self.policy_records
                if ends is None or offset < ends.get(partition, 0)}

    @property
    def second_not_promised(self) -> dict[tuple[str, str], int]:
        return {pair: n for pair, n in self.second.items() if SECOND_PASS.get(pair[0]) != pair[1]}

    @property
    def ok(self) -> bool:
        return not self.without_receipt and not self.wrong and not self.second_not_promised


@dataclass(frozen=True)
class Truth:
    """What the logs say: the planned events, Pisano's deliveries, the dead letters, the list."""

    events: Mapping[str, Planned]
    deliveries: list[Delivery]
    dead: Mapping[Origin, set[str]]  # origin -> dlq.reason of its dead letters
    suppressed: frozenset[str]  # phones on the opt-out list
    hasher: PhoneHasher


def judge_receipts(written: list[Receipt], origins: Iterable[Origin], truth: Truth) -> Receipts:
    first = first_receipts(written)
    judged = Receipts(records=0, written=len(written))
    for origin in origins:
        judged.records += 1
        if origin not in first:
            judged.without_receipt.append(origin)
    delivered = per_customer(truth.deliveries)
    others = _customers_by_phone(truth.deliveries)
    for origin, receipt in first.items():
        judged.first[receipt.outcome] += 1
        problem = _contradiction(receipt, truth, delivered, others)
        if problem:
            judged.wrong.append(f"{origin}: {problem}")
        elif receipt.outcome in POLICY_REASONS and receipt.event_id is not None:
            judged.policy_records.append((origin, receipt.event_id, receipt.outcome))
    judged.wrong += [f"{o}: dead-lettered ({', '.join(sorted(r))}), its first receipt "
                     f"{first[o].outcome if o in first else 'missing'}"
                     for o, r in truth.dead.items() if o not in first or first[o].outcome != "dead_lettered"]
    judged.second = Counter((first[r.origin].outcome, r.outcome) for r in written if first[r.origin] is not r)
    judged.accepted_as_duplicate_only, untold = _accepted_as_duplicate_only(first.values(), truth, delivered)
    judged.wrong += [f"{e}: accepted by Pisano, no first receipt of it says accepted or duplicate" for e in untold]
    return judged


def _customers_by_phone(deliveries: Iterable[Delivery]) -> dict[str, set[str | None]]:
    found: dict[str, set[str | None]] = defaultdict(set)
    for d in deliveries:
        found[d.phone].add(d.customer)
    return found


def _contradiction(receipt: Receipt, truth: Truth, delivered: Counter[str],
                   others: Mapping[str, set[str | None]]) -> str | None:
    """Why this first receipt is not the record's outcome, or None when the logs agree with it."""
    event = truth.events.get(receipt.event_id or "")
    if event is None:
        return f"a receipt for an event the run did not produce ({receipt.event_id})"
    if receipt.phone_hash != truth.hasher(event.phone):
        return "its phone_hash is not the event's phone"
    outcome = receipt.outcome
    if outcome in ("accepted", "duplicate"):
        return None if delivered[event.customer] else f"{outcome}, but Pisano never accepted {receipt.event_id}"
    if outcome == "dead_lettered":
        reasons = truth.dead.get(receipt.origin, set())
        return None if receipt.reason in reasons else f"dead_lettered ({receipt.reason}), DLQ says {reasons or 'none'}"
    if outcome in POLICY_REASONS and receipt.reason != POLICY_REASONS[outcome]:
        return f"{outcome} with reason {receipt.reason}"
    if outcome == "suppressed":
        return None if event.phone in truth.suppressed else "suppressed, its phone is not on the list"
    if outcome == "cooldown":
        # The run's cooldown outlasts it: the phone must have had a survey for another event (a
        # contact of unknown fate counts too, but the SRE step sends those, so the log has it).
        return None if others.get(event.phone, set()) - {event.customer} else \
            "cooldown, but Pisano accepted no other survey for its phone"
    return f"outcome {outcome}: the run sets no policy that gives it"


def _accepted_as_duplicate_only(first: Iterable[Receipt], truth: Truth,
                                delivered: Counter[str]) -> tuple[int, list[str]]:
    """Events Pisano accepted whose records' first receipts say neither `accepted` nor an
    `ambiguous` dead letter (whose fate the delivery log decides): those that say `duplicate`
    (the README's one case where the first receipt is not the whole truth), and those that say
    none of the three (a first receipt that lies: never promised)."""
    accepted: set[str] = set()
    duplicate: set[str] = set()
    for r in first:
        if r.event_id and (r.outcome == "accepted" or r.reason == "ambiguous"):
            accepted.add(r.event_id)
        elif r.event_id and r.outcome == "duplicate":
            duplicate.add(r.event_id)
    sent = [event_id for event_id, e in truth.events.items() if delivered[e.customer] and event_id not in accepted]
    return sum(1 for e in sent if e in duplicate), [e for e in sent if e not in duplicate]
