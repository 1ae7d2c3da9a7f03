"""Prometheus metrics, prefix `pisano_sms_`, in a registry of their own.

Labels stay low-cardinality and harmless: no phone numbers, tokens, event ids, and no campaign
ids either (events can carry any campaign id, so it would be an unbounded label). The
`destination` label takes configured destination names only (consumer/config/destinations.py).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumer.state.origins import CONTACTS, DEDUP

PREFIX = "pisano_sms"

SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 3000, 4000, 4500, 5000)
SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# The label values of the failure counters, known in advance: each series exists at 0 from the
# start, so that rate() sees the first failure (a counter born at 1 has no increase to show) and
# the dashboard shows 0 rather than "no data". Operations: consumer/delivery/ (slots, claims,
# sender, attempts); kinds: consumer.errors.RegistryError.
# "marks": the dead-letter and receipt marks (consumer/outcomes/owned_marks.py)
REDIS_OPERATIONS = ("throttle", "claim", "settle", "circuit", "suppression", "cooldown", "marks")
REGISTRY_ERROR_KINDS = ("unreachable", "permission", "server")
FILTER_REASONS = ("expired", "suppressed", "cooldown")  # consumer/delivery/outcome.py FILTERED
# schemas/receipt.avsc's outcome symbols (consumer/outcomes/receipts.py RECEIPT_OUTCOMES, which a test compares).
# The roles of the threads /healthz watches (consumer/operations/health.py `Health.watch`): a
# bounded label, never a thread's name (which carries a destination and a number).
THREAD_ROLES = ("sender", "health_probe", "limiter_heartbeat", "token_watcher", "send_window_clock",
                "request_deadlines", "other")
RECEIPT_OUTCOMES = ("accepted", "duplicate", "cooldown", "suppressed", "expired", "dead_lettered")


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = PREFIX
        self.events_consumed = Counter(f"{p}_events_consumed", "Records polled from Kafka", ["topic"], registry=r)
        self.events_decoded = Counter(f"{p}_events_decoded", "Records decoded and mapped to a recipient",
                                      ["topic"], registry=r)
        self.events_mapped_natively = Counter(
            f"{p}_events_mapped_natively", "Records of events_decoded that the native core decoded and mapped "
            "(NATIVE_INTAKE; the rest went through Python); counted for the whole process", registry=r)
        self.duplicates_skipped = Counter(f"{p}_duplicates_skipped", "Events skipped: their id was already delivered",
                                          registry=r)
        self.events_filtered = Counter(f"{p}_events_filtered",
                                       "Events not sent by the contact policy (expired: past MAX_EVENT_AGE; "
                                       "suppressed: on the opt-out list; cooldown: phone contacted within "
                                       "CONTACT_COOLDOWN)", ["reason"], registry=r)
        for reason in FILTER_REASONS:
            self.events_filtered.labels(reason)
        self.events_held = Counter(f"{p}_events_held",
                                   "Events held back: their id (or phone, CONTACT_COOLDOWN) was in flight elsewhere",
                                   registry=r)
        self.recipients_delivered = Counter(f"{p}_recipients_delivered", "Recipients in requests Pisano accepted",
                                            ["destination"], registry=r)
        self.dead_letters = Counter(f"{p}_dead_letters", "Records dead-lettered (acknowledged by Kafka)",
                                    ["reason", "code"], registry=r)
        self.receipts = Counter(f"{p}_receipts", "Receipts acknowledged by Kafka (OUTCOME_TOPIC), by outcome",
                                ["outcome"], registry=r)
        self.requests = Counter(f"{p}_requests", "Pisano requests by outcome (HTTP status, or transport)",
                                ["status", "code", "destination"], registry=r)
        self.batch_size = Histogram(f"{p}_batch_size", "Recipients per Pisano request", buckets=SIZE_BUCKETS,
                                    registry=r)
        self.batch_age = Histogram(f"{p}_batch_age_seconds", "How long a request's oldest event waited in the batch",
                                   buckets=SECONDS_BUCKETS, registry=r)
        self.end_to_end = Histogram(f"{p}_end_to_end_latency_seconds",
                                    "Event timestamp to the request Pisano accepted", buckets=SECONDS_BUCKETS,
                                    registry=r)
        self.request_duration = Histogram(f"{p}_request_duration_seconds", "Duration of Pisano requests",
                                          buckets=SECONDS_BUCKETS, registry=r)
        self.throttle_wait = Histogram(f"{p}_throttle_wait_seconds", "Wait for a throttle slot after reserving it",
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.throttle_slots = Counter(f"{p}_throttle_slots_granted", "Throttle slots reserved by this replica",
                                      ["destination"], registry=r)
        self.throttle_refusals = Counter(f"{p}_throttle_refusals", "Reservations refused: next slot beyond horizon",
                                         ["destination"], registry=r)
        self.throttle_pauses = Counter(f"{p}_throttle_pauses", "Fleet pauses after a 429 from Pisano",
                                       ["destination"], registry=r)
        self.throttle_wasted = Counter(f"{p}_throttle_slots_wasted", "Reserved slots that found nothing to send",
                                       ["destination"], registry=r)
        self.throttle_utilisation = Gauge(f"{p}_throttle_window_utilisation",
                                          "Share of each window's limit used by the fleet", ["window", "destination"],
                                          registry=r)
        self.throttle_fenced = Gauge(f"{p}_throttle_fenced",
                                     "1 while the fleet is held after the throttle state was lost or is in doubt",
                                     ["destination"], registry=r)
        self.redis_errors = Counter(f"{p}_redis_errors", "Redis calls that failed", ["operation"], registry=r)
        self.redis_state_lost = Counter(f"{p}_redis_state_lost",
                                        "Buckets of the dedup or contact state found lost since this replica saw "
                                        "them (consumer/state/origins.py)", ["state"], registry=r)
        for state in (DEDUP, CONTACTS):  # exported at 0 from the start, so that a loss is an increase
            self.redis_state_lost.labels(state)
        self.redis_memory_used_ratio = Gauge(f"{p}_redis_memory_used_ratio",
                                             "Redis used_memory / maxmemory (0 when maxmemory is 0: no limit)",
                                             registry=r)
        self.kafka_errors = Counter(f"{p}_kafka_errors", "Errors reported by librdkafka", ["code"], registry=r)
        self.consumer_replaced = Counter(f"{p}_kafka_consumer_replaced",
                                         "Kafka consumers replaced after staying outside their group longer "
                                         "than any rebalance takes", registry=r)
        self.consumer_lag = Gauge(f"{p}_consumer_lag", "Records behind the end of the partition",
                                  ["topic", "partition"], registry=r)
        self.buffered_events = Gauge(f"{p}_buffered_events", "Events waiting in batches", registry=r)
        self.held_events = Gauge(f"{p}_held_events", "Events waiting for another attempt on their id to end",
                                 registry=r)
        self.unfinished_records = Gauge(f"{p}_unfinished_records",
                                        "Consumed records without an outcome yet (they hold back the commit)",
                                        ["topic", "partition"], registry=r)
        self.buffered_bytes = Gauge(f"{p}_buffered_bytes",
                                    "Bytes held by consumed records without an outcome (MAX_BUFFERED_BYTES)",
                                    registry=r)
        self.oldest_unfinished_age = Gauge(f"{p}_oldest_unfinished_record_age_seconds",
                                           "Age of the oldest consumed record without an outcome (STUCK_RECORD_MS)",
                                           registry=r)
        self.registry_errors = Counter(f"{p}_schema_registry_errors",
                                       "Schema registry failures (records wait): unreachable, permission, server",
                                       ["kind"], registry=r)
        self.in_flight_requests = Gauge(f"{p}_in_flight_requests", "Pisano requests under way", ["destination"],
                                        registry=r)
        self.partitions_paused = Gauge(f"{p}_partitions_paused", "1 while fetching is paused for backpressure",
                                       registry=r)
        self.circuit_state = Gauge(f"{p}_circuit_state", "Pisano circuit: 0 closed, 1 open, 2 half-open",
                                   ["destination"], registry=r)
        # A count per destination, never a campaign label: campaign ids come from records.
        self.campaign_circuits_open = Gauge(f"{p}_campaign_circuits_open",
                                            "Campaigns whose circuit is open or half-open (unknown campaign, "
                                            "no flow): their batches are dead-lettered without a request",
                                            ["destination"], registry=r)
        # Quiet hours (consumer/delivery/quiet_hours.py): `window` is `destination` or a campaign id
        # of CAMPAIGN_SEND_WINDOWS (from the configuration, never from records: bounded).
        self.send_window_open = Gauge(f"{p}_send_window_open", "1 while the send window is open, 0 while closed",
                                      ["destination", "window"], registry=r)
        self.send_window_held_events = Gauge(f"{p}_send_window_held_events",
                                             "Buffered events held until their send window opens (not stuck)",
                                             registry=r)
        self.assigned_partitions = Gauge(f"{p}_assigned_partitions", "Partitions assigned to this replica",
                                         registry=r)
        # Set at each scrape from what /healthz watches; above 0 the replica is not alive (restarted).
        self.threads_ended = Gauge(f"{p}_threads_ended",
                                   "Watched threads that have ended (not during a shutdown): the replica is not "
                                   "alive and is restarted", ["role"], registry=r)
        for operation in REDIS_OPERATIONS:
            self.redis_errors.labels(operation)
        for kind in REGISTRY_ERROR_KINDS:
            self.registry_errors.labels(kind)
        for outcome in RECEIPT_OUTCOMES:
            self.receipts.labels(outcome)
        for role in THREAD_ROLES:
            self.threads_ended.labels(role)

    def destination(self, name: str) -> DestinationMetrics:
        """The metrics of one destination, its label bound."""
        return DestinationMetrics(
            name=name, requests_family=self.requests,
            recipients_delivered=self.recipients_delivered.labels(name),
            throttle_slots=self.throttle_slots.labels(name), throttle_refusals=self.throttle_refusals.labels(name),
            throttle_pauses=self.throttle_pauses.labels(name), throttle_wasted=self.throttle_wasted.labels(name),
            throttle_fenced=self.throttle_fenced.labels(name),
            in_flight_requests=self.in_flight_requests.labels(name), circuit_state=self.circuit_state.labels(name))


@dataclass(frozen=True)
class DestinationMetrics:
    name: str
    requests_family: Counter
    recipients_delivered: Any
    throttle_slots: Any
    throttle_refusals: Any
    throttle_pauses: Any
    throttle_wasted: Any
    throttle_fenced: Any
    in_flight_requests: Any
    circuit_state: Any

    def requests(self, status: str, code: str) -> Any:
        return self.requests_family.labels(status, code, self.name)


def observe_ages(histogram: Histogram, now_ms: int, stamps_ms: Iterable[int]) -> None:
    """`histogram.observe(max(0.0, (now_ms - t) / 1000))` for every stamp t > 0 (epoch ms; 0 or
    less: no timestamp), in a few C-level passes: a delivered request observes the age of up to
    5000 events at once, and one observe each takes two locks and a bisection in Python.

    The stamps are sorted once. An age shrinks as its stamp grows, so the stamps whose age is
    within a bucket's bound are a suffix, found by bisecting with the very test `observe` makes
    (`amount <= bound`): the buckets come out exactly as one observe per stamp would fill them
    (tests/unit/operations/test_metrics.py checks both against each other)."""
    stamps = sorted(stamps_ms)
    first = bisect_right(stamps, 0)
    if first == len(stamps):
        return

    upper = len(stamps)  # stamps[upper:] are in the buckets counted so far
    for index, bound in enumerate(histogram._upper_bounds):
        def is_within(stamp: int, bound: float = bound) -> bool:
            return max(0.0, (now_ms - stamp) / 1000) <= bound  # observe's own amount and test

        # The first stamp whose age is within the bound: the test reads False, then True.
        within = bisect_left(stamps, True, first, upper, key=is_within)
        if within < upper:
            histogram._buckets[index].inc(upper - within)
            upper = within
    past = bisect_left(stamps, now_ms, first)  # stamps from `past` on are not in the past: age 0
    histogram._sum.inc((now_ms * (past - first) - sum(stamps[first:past])) / 1000)

