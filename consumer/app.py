"""The composition root: the one place that builds the application from the settings.

`run`, `check` and `demo` all build through here, so what runs in production is what `check`
checks and what the demo shows. Each builder fails fast with a ConfigError naming the setting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from consumer.config.destinations import DestinationConfig, destination_configs, routes
from consumer.config.registry import registry_connection
from consumer.config.settings import Settings
from consumer.config.tokens import token_source
from consumer.delivery.attempts import RetryPolicy
from consumer.delivery.backoff import Backoff
from consumer.delivery.batching import Batcher
from consumer.delivery.destination import DEFAULT, Destination
from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.outcome import Outcome
from consumer.delivery.pisano import PisanoClient
from consumer.delivery.sender import FailurePolicy, Sender
from consumer.errors import UnroutableError
from consumer.ingest.avro import build_decoder
from consumer.ingest.kafka import make_consumer, make_producer
from consumer.ingest.mapping import Mapper, Recipient, load_mapper
from consumer.operations.health import Health, HealthProbe
from consumer.operations.metrics import Metrics
from consumer.pipeline import Pipeline
from consumer.sre.replay_signature import ReplayVerifier
from consumer.state.accounts import account_key
from consumer.state.campaigns import CampaignCircuits
from consumer.state.circuit import CircuitBreaker, RedisCircuitStore
from consumer.state.dead_letters import RedisDeadLetterMarks
from consumer.state.dedup import RedisDedup
from consumer.state.eviction import require_noeviction
from consumer.state.limiter import Limiter, LimiterHeartbeat, NoLimiter, RedisLimiter
from consumer.state.redis import Keys, connect


@dataclass
class State:
    """The shared state's connection and key names."""

    client: Any
    keys: Keys


def build_state(settings: Settings) -> State:
    return State(connect(settings.redis_url.get_secret_value(), cluster=settings.redis_cluster),
                 Keys(settings.redis_key_prefix))


def build_limiter(config: DestinationConfig, state: State, horizon_ms: int, grace_ms: int,
                  account: str | None = None) -> Limiter:
    if not config.windows:
        return NoLimiter()
    return RedisLimiter(state.client, state.keys, account or config.token, config.windows, margin_ms=config.margin_ms,
                        horizon_ms=horizon_ms, grace_ms=grace_ms)


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
                          tls_verify=config.tls_verify, ca_file=config.ca_file)
    circuit = CircuitBreaker(RedisCircuitStore(state.client, state.keys, account),
                             cooldown_ms=settings.circuit_cooldown_ms, max_cooldown_ms=settings.circuit_max_cooldown_ms,
                             probe_lease_ms=config.timeout_ms + horizon + 10_000, name=config.name)
    campaigns = CampaignCircuits(lambda campaign: RedisCircuitStore(state.client, state.keys, account, campaign),
                                 cooldown_ms=settings.circuit_cooldown_ms,
                                 max_cooldown_ms=settings.circuit_max_cooldown_ms,
                                 probe_lease_ms=settings.claim_lease_ms, name=config.name)
    return Destination(config.name, client, build_limiter(config, state, horizon, settings.throttle_grace_ms, account),
                       circuit,
                       max_recipients=config.max_recipients, max_lateness_s=config.margin_ms / 2000,
                       campaigns=campaigns)


def build_destinations(settings: Settings, state: State) -> dict[str, Destination]:
    return {name: build_destination(config, settings, state, connections=settings.max_in_flight_requests)
            for name, config in destination_configs(settings).items()}


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

    def map(self, record: Any) -> Recipient:
        recipient = self.mapper.map(record)
        if self.route(recipient.campaign_id) is None:
            raise UnroutableError(f"campaign {recipient.campaign_id} belongs to no configured destination; "
                                  "list it under a destination's `campaigns` or set PISANO_URL")
        return recipient


def router(destinations: dict[str, Destination], settings: Settings) -> Callable[[str], str | None]:
    owned = routes(destination_configs(settings))
    fallback = DEFAULT if DEFAULT in destinations else None
    return lambda campaign: owned.get(campaign, fallback)


def build_pipeline(settings: Settings, metrics: Metrics, health: Health) -> tuple[Pipeline, HealthProbe]:
    """Wire the real components from the settings (each fails fast with a ConfigError)."""
    settings.require("kafka_topics", *(() if settings.destinations else ("pisano_url",)))
    state = build_state(settings)
    require_noeviction(state.client, allow=settings.redis_allow_eviction)
    destinations = build_destinations(settings, state)
    decoder = build_decoder(registry_connection(settings), settings.avro_schema_file)
    route = router(destinations, settings)
    mapper = RoutedMapper(load_mapper(settings), route)
    dedup = RedisDedup(state.client, state.keys, lease_ms=settings.claim_lease_ms,
                       horizon_s=settings.dedup_horizon_s)
    policy = failure_policy(settings)

    def kafka_error(error: KafkaError) -> None:
        metrics.kafka_errors.labels(error.name()).inc()
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            health.kafka_ok = False

    def delivery(report: Callable[[Outcome], None]) -> Lanes:
        lanes = {}
        for name, destination in destinations.items():
            batcher = Batcher(destination.max_recipients, settings.batch_max_wait_ms / 1000)
            sender = Sender(destination=destination, batcher=batcher, dedup=dedup, metrics=metrics, report=report,
                            policy=policy, threads=settings.max_in_flight_requests,
                            throttle_horizon_s=settings.throttle_horizon_ms / 1000,
                            pace_share=settings.pisano_pace_share)
            lanes[name] = Lane(batcher, sender)
        return Lanes(lanes, lambda campaign: route(campaign) or DEFAULT)

    pipeline = Pipeline(
        settings,
        consumer_factory=lambda on_commit: make_consumer(settings, kafka_error, on_commit=on_commit),
        producer=make_producer(settings, kafka_error),
        decoder=decoder,
        mapper=mapper,  # type: ignore[arg-type]
        delivery_factory=delivery,
        metrics=metrics,
        health=health,
        replays=ReplayVerifier.from_settings(settings),
        dead_letter_marks=RedisDeadLetterMarks(state.client, state.keys, horizon_s=settings.dedup_horizon_s),
    )
    probe = HealthProbe(health, metrics, redis_client=state.client, producer=pipeline.producer,
                        dlq_topic=settings.dlq_topic, destinations=list(destinations.values()),
                        heartbeat=LimiterHeartbeat([d.limiter for d in destinations.values()]),
                        allow_eviction=settings.redis_allow_eviction)
    return pipeline, probe
