"""The composition root: the one place that builds the application from the settings.

`run`, `check` and `demo` all build through here, so what runs in production is what `check`
checks and what the demo shows. Each builder fails fast with a ConfigError naming the setting.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from consumer.config.destinations import DestinationConfig, destination_configs, routes
from consumer.config.registry import registry_connection
from consumer.config.settings import NO_COOLDOWN_KEY, Settings, duration_ms
from consumer.config.tokens import token_source
from consumer.delivery.admission import Admission
from consumer.delivery.attempts import RetryPolicy
from consumer.delivery.backoff import Backoff
from consumer.delivery.batching import Batcher
from consumer.delivery.contacts import ContactCooldown, CooldownWindows
from consumer.delivery.destination import DEFAULT, Destination
from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.outcome import Outcome
from consumer.delivery.pisano import PisanoClient
from consumer.delivery.quiet_hours import QuietHours
from consumer.delivery.sender import FailurePolicy, Sender
from consumer.errors import ConfigError, UnroutableError
from consumer.ingest import fused
from consumer.ingest.avro import build_decoder
from consumer.ingest.freshness import Freshness
from consumer.ingest.intake import native_recipient
from consumer.ingest.kafka import make_consumer, make_producer, refused_settings
from consumer.ingest.mapping import DeclarativeMapper, Mapper, Recipient, fields_read_by, known_campaign, load_mapper
from consumer.operations.health import Health, HealthProbe
from consumer.operations.metrics import Metrics
from consumer.operations.threads import collecting
from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
from consumer.pipeline import Pipeline
from consumer.sre.replay_signature import ReplayVerifier
from consumer.state.accounts import AccountRecord, account_key
from consumer.state.campaigns import CampaignCircuits
from consumer.state.circuit import PROBE_SLOT_WITHIN_S, CircuitBreaker, RedisCircuitStore
from consumer.state.clock import RedisWallClock, SystemWallClock, WallClock
from consumer.state.cooldown import CooldownStore, RedisCooldown, bucket_tags
from consumer.state.dead_letters import RedisDeadLetterMarks
from consumer.state.dedup import DedupStore, RedisDedup
from consumer.state.eviction import require_noeviction
from consumer.state.limiter import Limiter, LimiterHeartbeat, NoLimiter, RedisLimiter
from consumer.state.origins import CONTACTS, DEDUP, Buckets, OriginWatch, RedisOrigins
from consumer.state.receipt_marks import RedisReceiptMarks
from consumer.state.redis import Keys, connect
from consumer.state.replication import ReplicatedCooldown, ReplicatedDedup, ReplicationWait
from consumer.state.suppression import OptOutHasher, RedisOptOutList, Suppression
from consumer.state.witness import CommittedStamps

log = logging.getLogger(__name__)


@dataclass
class State:
    """The shared state's connection and key names."""

    client: Any
    keys: Keys
    wait: ReplicationWait | None = None  # DEDUP_WAIT_REPLICAS's, built on first use (`replication_wait`)


def build_state(settings: Settings) -> State:
    return State(connect(settings.redis_url.get_secret_value(), cluster=settings.redis_cluster,
                         timeout_s=settings.redis_timeout_ms / 1000),
                 Keys(settings.redis_key_prefix))


def replication_wait(settings: Settings, state: State) -> ReplicationWait | None:
    """DEDUP_WAIT_REPLICAS's wait, one per process: the dedup store and the contact cooldown share
    it, so a round trip holding claims and phone reservations waits once (consumer/state/trip.py)."""
    if not settings.dedup_wait_replicas:
        return None
    if state.wait is None:
        state.wait = ReplicationWait(state.client, settings.redis_key_prefix, replicas=settings.dedup_wait_replicas,
                                     timeout_ms=settings.dedup_wait_timeout_ms)
    return state.wait


def build_dedup(settings: Settings, state: State) -> DedupStore:
    dedup = RedisDedup(state.client, state.keys, lease_ms=settings.claim_lease_ms, horizon_s=settings.dedup_horizon_s)
    wait = replication_wait(settings, state)
    return dedup if wait is None else ReplicatedDedup(dedup, wait)


def build_dead_letter_marks(settings: Settings, state: State, dedup: DedupStore) -> RedisDeadLetterMarks:
    """The marks read 0.2.0's as long as the dedup layout reads 0.2.0's dedup marks: one look for
    both kinds, made once by the replica that created the layout (consumer/state/dead_letters.py)."""
    return RedisDeadLetterMarks(state.client, state.keys, horizon_s=settings.dedup_horizon_s,
                                group=settings.kafka_group_id, dlq_topic=settings.dlq_topic,
                                previous_release=_redis_dedup(dedup).reads_previous_release)


def build_origins(state: State, dedup: DedupStore, cooldown: ContactCooldown | None,
                  wait: ReplicationWait | None = None, horizon_s: float = math.inf) -> OriginWatch:
    """Every bucket's origin, so that Redis losing the dedup or contact state is noticed and said
    (consumer/state/origins.py); with DEDUP_WAIT_REPLICAS (`wait`), only what reached the replicas
    counts, as for the marks. `horizon_s` (DEDUP_HORIZON_S) and the longest cooldown: how long a
    commit's stamp of each state witnesses something (consumer/state/witness.py)."""
    redis_dedup = _redis_dedup(dedup)

    def dedup_buckets() -> Buckets:
        tags, layout_copy = redis_dedup.buckets()
        return Buckets(DEDUP, tags, layout_copy, keeps_s=horizon_s)

    sources = [dedup_buckets]
    if cooldown is not None:
        keeps_s = cooldown.windows.longest_ms / 1000
        sources.append(lambda: Buckets(CONTACTS, bucket_tags(state.keys.prefix), keeps_s=keeps_s))
    return OriginWatch(RedisOrigins(state.client), sources, replicated=wait, witnessed_key=state.keys.witnessed())


def _redis_dedup(dedup: DedupStore) -> RedisDedup:
    redis_dedup = dedup.inner if isinstance(dedup, ReplicatedDedup) else dedup
    assert isinstance(redis_dedup, RedisDedup)
    return redis_dedup


def build_limiter(config: DestinationConfig, state: State, horizon_ms: int, grace_ms: int,
                  account: str | None = None) -> Limiter:
    if not config.windows:
        return NoLimiter()
    return RedisLimiter(state.client, state.keys, account or config.token, config.windows, margin_ms=config.margin_ms,
                        horizon_ms=horizon_ms, grace_ms=grace_ms,
                        account=AccountRecord(state.client, state.keys, config.name))


def build_destination(config: DestinationConfig, settings: Settings, state: State, *,
                      connections: int, horizon_ms: int | None = None) -> Destination:
    """One Pisano account: client, fleet-wide throttle and circuit (state keyed by its first token,
    consumer/state/accounts.py, so a rotated token keeps them)."""
    horizon = settings.throttle_horizon_ms if horizon_ms is None else horizon_ms
    account = account_key(state.client, state.keys, config.name, config.token)
    tokens = token_source(config.name, config.token, token_file=config.token_file,
                          provider=settings.pisano_token_provider, interval_s=settings.pisano_token_refresh_ms / 1000)
    client = PisanoClient(config.url, tokens, timeout_s=config.timeout_ms / 1000,
                          connect_timeout_s=config.connect_timeout_ms / 1000, max_connections=connections,
                          tls_verify=config.tls_verify, ca_file=config.ca_file, destination=config.name)
    # The wrong-token circuit belongs to the token this replica started with, not to the account:
    # pods restarted with a corrected token must not inherit the open circuit of the wrong one.
    # Throttle and campaign circuits stay with the account (Pisano's budget, its campaigns).
    circuit = CircuitBreaker(RedisCircuitStore(state.client, state.keys, config.token),
                             cooldown_ms=settings.circuit_cooldown_ms, max_cooldown_ms=settings.circuit_max_cooldown_ms,
                             # The longest probe (consumer/state/circuit.py): its slots' time, the
                             # last slot up to the horizon away, its request's whole deadline
                             # (connect and read timeouts), and 10 s for Redis's replies around it.
                             probe_lease_ms=round(PROBE_SLOT_WITHIN_S * 1000) + horizon + config.connect_timeout_ms
                             + config.timeout_ms + 10_000, name=config.name)
    campaigns = CampaignCircuits(lambda campaign: RedisCircuitStore(state.client, state.keys, account, campaign),
                                 cooldown_ms=settings.circuit_cooldown_ms,
                                 max_cooldown_ms=settings.circuit_max_cooldown_ms,
                                 probe_lease_ms=settings.claim_lease_ms, name=config.name)
    return Destination(config.name, client, build_limiter(config, state, horizon, settings.throttle_grace_ms, account),
                       circuit,
                       max_recipients=config.max_recipients, max_lateness_s=config.margin_ms / 2000,
                       campaigns=campaigns)


def build_destinations(settings: Settings, state: State,
                       configs: dict[str, DestinationConfig] | None = None) -> dict[str, Destination]:
    """`configs`: destination_configs(settings), when the caller has them already (the builders
    below take them too: read once, a PISANO_TOKEN_PROVIDER is asked once per destination)."""
    configs = destination_configs(settings) if configs is None else configs
    return {name: build_destination(config, settings, state, connections=settings.max_in_flight_requests)
            for name, config in configs.items()}


def failure_policy(settings: Settings) -> FailurePolicy:
    retry = RetryPolicy(settings.pisano_max_attempts, settings.pisano_retry_budget_ms / 1000,
                        Backoff(settings.pisano_backoff_base_ms / 1000, settings.pisano_backoff_max_ms / 1000))
    return FailurePolicy(retry, settings.ambiguous_policy, settings.isolation_budget_share)


class RoutedMapper:
    """The configured mapper, plus the campaign's destination: a campaign no destination takes
    is unroutable (dead-lettered as such), never sent to a guessed account."""

    def __init__(self, mapper: Mapper, route: Callable[[str], str | None]) -> None:
        self.mapper = mapper
        self.route = route
        # Resolved once: a duck-typed mapper may have only `map`.
        inner = getattr(mapper, "map_kafka", None)
        self._map_kafka: Callable[[Any, Any], Recipient] = inner if inner is not None else (
            lambda record, kafka: mapper.map(record))

    def map(self, record: Any) -> Recipient:
        return self.map_kafka(record, None)

    def native(self, decoder: Any) -> Callable[[bytes], Recipient | None] | None:
        """The decoder's native recipient (consumer/ingest/fused.py), routed as `map_kafka` routes:
        a campaign no destination takes is left to `map_kafka`, whose refusal says so."""
        fused = native_recipient(decoder, self.mapper)
        if fused is None:
            return None
        route = self.route

        def routed(value: bytes) -> Recipient | None:
            recipient = fused(value)
            return None if recipient is None or route(recipient.campaign_id) is None else recipient

        return routed

    def map_kafka(self, record: Any, kafka: Any) -> Recipient:
        recipient = self._map_kafka(record, kafka)
        # Routed in the form the settings are keyed by (a plug-in may write upper case); what is
        # not a campaign id at all is the recipient check's to refuse, after this.
        campaign = recipient.campaign_id
        known = known_campaign(campaign) if isinstance(campaign, str) else None
        if known is not None and self.route(known) is None:
            raise UnroutableError(f"campaign {known} belongs to no configured destination; "
                                  "list it under a destination's `campaigns` or set PISANO_URL")
        return recipient


def native_mapper(settings: Settings, mapper: Mapper) -> Mapper | None:
    """The mapper the native core may decode and map for (consumer/ingest/fused.py), or None
    (NATIVE_INTAKE=off, or the core not built: said once)."""
    if settings.native_intake == "off":
        return None
    if not fused.available():
        log.info("the native core (pisano_native) is not installed: records are decoded and mapped in Python; "
                 "`make install` builds it")
        return None
    return mapper


def phone_reading(settings: Settings, mapper: Mapper) -> tuple[str | None, bool]:
    """(region, digits are E.164) of the recipients' phones: how to read them back into E.164."""
    if isinstance(mapper, DeclarativeMapper):
        return mapper.phones.region, mapper.phones.output == "e164_digits"
    return settings.phone_region, settings.phone_region is None


def opt_out_hasher(settings: Settings, mapper: Mapper) -> OptOutHasher | None:
    key = settings.opt_out_key()
    return None if key is None else OptOutHasher(key, phone_reading(settings, mapper)[0])


def build_admission(settings: Settings, state: State, mapper: Mapper) -> Admission:
    """The contact policy at admission: the stale guard, MAX_EVENT_AGE, and the opt-out list when
    SUPPRESSION_KEY is set."""
    age = settings.max_event_age_ms
    hasher = opt_out_hasher(settings, mapper)
    suppression = None if hasher is None else Suppression(
        hasher, RedisOptOutList(state.client, state.keys), digits_are_e164=phone_reading(settings, mapper)[1],
        plus_is_valid=isinstance(mapper, DeclarativeMapper) and mapper.phones.output == "e164")
    # The stale guard again before the claim: an event may wait past its margin (quiet hours).
    return Admission(freshness=Freshness(age) if age else None, suppression=suppression,
                     stale_after_ms=settings.stale_after_ms)


def build_quiet_hours(settings: Settings, state: State, metrics: Metrics,
                      configs: dict[str, DestinationConfig] | None = None) -> dict[str, QuietHours]:
    """Each destination's send windows (none configured: no entry, no check on the send path)."""
    campaigns = settings.send_windows[1]
    configs = destination_configs(settings) if configs is None else configs
    if not campaigns and all(c.send_window is None for c in configs.values()):
        return {}
    redis_clock = settings.send_window_clock == "redis"
    clock: WallClock = RedisWallClock(state.client, state.keys) if redis_clock else SystemWallClock()
    out = {}
    for name, config in configs.items():
        gate = QuietHours(name, config.send_window, campaigns, clock, metrics)
        if gate:
            out[name] = gate
    return out


def cooldown_windows(settings: Settings, configs: dict[str, DestinationConfig] | None = None) -> CooldownWindows:
    """CONTACT_COOLDOWN and its overrides: per destination (`contact_cooldown` of its entry), per campaign."""
    configs = destination_configs(settings) if configs is None else configs
    return CooldownWindows(
        duration_ms(settings.contact_cooldown),
        {c.name: c.contact_cooldown_ms for c in configs.values() if c.contact_cooldown_ms is not None},
        {campaign: duration_ms(value) for campaign, value in settings.contact_cooldown_campaigns.items()})


def build_cooldown(settings: Settings, state: State, admission: Admission,
                   configs: dict[str, DestinationConfig] | None = None) -> ContactCooldown | None:
    """The per-phone contact cooldown when any campaign has one (it needs SUPPRESSION_KEY)."""
    windows = cooldown_windows(settings, configs)
    if not windows:
        return None
    if admission.suppression is None:
        raise ConfigError(NO_COOLDOWN_KEY)  # the settings refuse this already; kept for callers that skip them
    store: CooldownStore = RedisCooldown(state.client, lease_ms=settings.claim_lease_ms, ttl_ms=windows.longest_ms)
    wait = replication_wait(settings, state)
    if wait is not None:  # contacts on replicas too: a failover must not forget one
        store = ReplicatedCooldown(store, wait)
    return ContactCooldown(store, windows, state.keys, admission.suppression.phone_entry)


def router(destinations: dict[str, Destination], settings: Settings,
           configs: dict[str, DestinationConfig] | None = None) -> Callable[[str], str | None]:
    owned = routes(destination_configs(settings) if configs is None else configs)
    fallback = DEFAULT if DEFAULT in destinations else None
    return lambda campaign: owned.get(campaign, fallback)


def build_receipts(settings: Settings, state: State, producer: Any, route: Callable[[str], str | None],
                   metrics: Metrics) -> ReceiptWriter | None:
    """The receipt writer on the dead-letters' producer, with its marks in Redis; None without OUTCOME_TOPIC."""
    if not settings.outcome_topic:
        return None
    return ReceiptWriter(producer, settings.outcome_topic, group=settings.kafka_group_id,
                         hasher=PhoneHasher(settings.outcome_salt()), codec=ReceiptCodec(settings.outcome_schema_id),
                         route=route, on_acknowledged=lambda outcome: metrics.receipts.labels(outcome).inc(),
                         marks=RedisReceiptMarks(state.client, state.keys, horizon_s=settings.dedup_horizon_s),
                         on_marks_error=metrics.redis_errors.labels("marks").inc)


def build_pipeline(settings: Settings, metrics: Metrics, health: Health) -> tuple[Pipeline, HealthProbe]:
    """Wire the real components from the settings (each fails fast with a ConfigError).

    Every thread that lives as long as the process is made by `long_lived` and watched by
    liveness (`Health.watch`) without being named here: those made while building (the token
    watchers, the send-window clock, the health probe, the limiter heartbeat, and any added
    later) by this build, the senders, made when the pipeline starts, by the delivery factory
    (README "Health")."""
    with collecting() as started:
        pipeline, probe = _build_pipeline(settings, metrics, health)
    health.watch(*started)
    return pipeline, probe


def _build_pipeline(settings: Settings, metrics: Metrics, health: Health) -> tuple[Pipeline, HealthProbe]:
    settings.require("kafka_topics", *(() if settings.destinations else ("pisano_url",)))
    state = build_state(settings)
    require_noeviction(state.client, allow=settings.redis_allow_eviction)
    configs = destination_configs(settings)  # once: each asks a token provider, reads token files
    destinations = build_destinations(settings, state, configs)
    route = router(destinations, settings, configs)
    loaded = load_mapper(settings)
    # Only the fields the mapper reads make the decoded record: the rest are checked, not kept.
    decoder = build_decoder(registry_connection(settings), settings.avro_schema_file, fields_read_by(loaded),
                            native_mapper(settings, loaded))
    mapper = RoutedMapper(loaded, route)
    admission = build_admission(settings, state, loaded)
    cooldown = build_cooldown(settings, state, admission, configs)
    dedup = build_dedup(settings, state)
    policy = failure_policy(settings)
    quiet_hours = build_quiet_hours(settings, state, metrics, configs)

    def kafka_error(error: KafkaError) -> None:
        metrics.kafka_errors.labels(error.name()).inc()
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            health.kafka_ok = False

    def delivery(report: Callable[[Outcome], None]) -> Lanes:
        with collecting() as made:
            routed = make_lanes(report)
        # A sender thread that ends leaves its lane short (or empty) and its batch without an
        # outcome: the replica is then not alive, and restarted (README "Health").
        health.watch(*made)
        return routed

    def make_lanes(report: Callable[[Outcome], None]) -> Lanes:
        lanes = {}
        for name, destination in destinations.items():
            gate = quiet_hours.get(name)
            batcher = Batcher(destination.max_recipients, settings.batch_max_wait_ms / 1000,
                              holds=gate.holds if gate else None)
            sender = Sender(destination=destination, batcher=batcher, dedup=dedup, metrics=metrics, report=report,
                            policy=policy, threads=settings.max_in_flight_requests,
                            throttle_horizon_s=settings.throttle_horizon_ms / 1000,
                            claim_lease_ms=settings.claim_lease_ms, admission=admission,
                            pace_share=settings.pisano_pace_share, quiet_hours=gate, cooldown=cooldown)
            lanes[name] = Lane(batcher, sender)
        return Lanes(lanes, lambda campaign: route(campaign) or DEFAULT)

    origins = build_origins(state, dedup, cooldown, replication_wait(settings, state), settings.dedup_horizon_s)
    with refused_settings():  # the producer, and the Pipeline's first consumer
        producer = make_producer(settings, kafka_error)
        pipeline = Pipeline(
            settings,
            consumer_factory=lambda on_commit: make_consumer(settings, kafka_error, on_commit=on_commit),
            producer=producer,
            decoder=decoder,
            mapper=mapper,  # type: ignore[arg-type]
            delivery_factory=delivery,
            metrics=metrics,
            health=health,
            replays=ReplayVerifier.from_settings(settings),
            dead_letter_marks=build_dead_letter_marks(settings, state, dedup),
            receipts=build_receipts(settings, state, producer, route, metrics),
            stamps=CommittedStamps(origins),
        )
    probe = HealthProbe(health, metrics, redis_client=state.client, producer=pipeline.producer,
                        dlq_topic=settings.dlq_topic, destinations=list(destinations.values()),
                        heartbeat=LimiterHeartbeat([d.limiter for d in destinations.values()]),
                        allow_eviction=settings.redis_allow_eviction,
                        origins=origins)
    return pipeline, probe
