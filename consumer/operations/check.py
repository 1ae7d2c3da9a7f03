"""`pisano-sms check`: is the configuration usable, and does every dependency answer?

Each check reports ok, failed (with the reason and what to do) or skipped. A failure that `run`
would refuse to start with (the configuration, an evicting Redis) is marked `refuses_start`: the
command then exits 2, as `run` does, and 1 for any other failure (a dependency that did not answer). The Pisano check
proves the token without sending an SMS (`PisanoClient.probe_token`, as the circuit breaker's
probe does). That request counts against the throttle, so it takes a slot from the shared limiter
like any other. `--campaigns` adds one line per routed campaign (`preflight.py`).

The report is pasted into tickets and chats: URLs are shown with their credentials masked, and no
text from a library or a server is shown without its URL credentials masked and phones redacted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
from confluent_kafka import KafkaError, KafkaException

from consumer.app import build_destination, build_state, cooldown_windows
from consumer.config.destinations import DEFAULT, destination_configs
from consumer.config.env_names import misspelled_settings
from consumer.config.registry import registry_connection
from consumer.config.secrets import mask_url, mask_urls_in_text
from consumer.config.settings import Settings, duration_ms
from consumer.delivery.pisano import PROBE_CAMPAIGN
from consumer.delivery.slots import NoSlot, send_in_slot
from consumer.errors import ConfigError, PisanoSmsError, PisanoTransportError, StateStoreError
from consumer.ingest import fused
from consumer.ingest.avro import build_decoder, reader_for
from consumer.ingest.kafka import make_admin, make_consumer, make_producer, refused_settings
from consumer.ingest.mapping import fields_read_by, is_campaign_id, load_mapper
from consumer.ingest.membership import committed_metadata
from consumer.operations.durability import (
    offsets_warning,
    persistence_warning,
    read_offsets_retention,
    read_topic_configs,
    topic_warnings,
)
from consumer.operations.logs import redact_phones
from consumer.state.circuit import Trip, token_verdict
from consumer.state.cooldown import bucket_tags
from consumer.state.dedup_layout import BUCKETS as DEDUP_BUCKETS
from consumer.state.dedup_layout import BucketNames, Layout
from consumer.state.eviction import DENIED_HELP, RedisInfoDenied, eviction_problem, read_memory
from consumer.state.origins import CONTACTS, DEDUP, origins_summary, read_origins
from consumer.state.redis import REDIS_ERRORS, Keys, connect, stored_text
from consumer.state.redis_errors import describe
from consumer.state.replication import ReplicationWait
from consumer.state.witness import judge, read_stamps

NOT_FOUND_CODE = 13002  # Pisano's "Requested resource not found!": any resource, a path too


# A check's own status for a failure `run` refuses to start with; reported as failed.
REFUSED = "refused"


@dataclass(frozen=True)
class Result:
    name: str
    status: str  # ok | failed | skipped
    detail: str
    refuses_start: bool = False  # failed as `run` fails at start: exit 2, not 1


def run_checks(settings: Settings, campaign: str | None = None, campaigns: bool = False) -> Iterator[Result]:
    yield _guard("config", lambda: _config(settings), refuses_start=True)
    yield _guard("kafka", lambda: _kafka(settings))
    yield _guard("redis", lambda: _redis(settings))
    yield _guard("registry", lambda: _registry(settings))
    yield _guard("pisano", lambda: _pisano(settings, campaign or PROBE_CAMPAIGN))
    if campaigns:  # consumer/operations/preflight.py: one empty request per routed campaign
        yield from _campaigns(settings, (campaign,) if campaign else ())


def _campaigns(settings: Settings, extra: tuple[str, ...]) -> Iterator[Result]:
    from consumer.operations.preflight import check_campaigns

    found = 0
    try:
        for result in check_campaigns(settings, extra):
            if isinstance(result, str):
                yield Result("campaign", "skipped", result)
                continue
            found += 1
            # A campaign API id (a UUID) is shown as it is: a run of its digits is not a phone number.
            campaign = result.campaign if is_campaign_id(result.campaign) else redact_phones(result.campaign)
            detail = f"{result.destination} {campaign}: {result.status}: " \
                     + redact_phones(mask_urls_in_text(result.detail))
            yield Result("campaign", "ok" if result.ok else "failed", detail)
    except PisanoSmsError as exc:
        yield Result("campaign", "failed", redact_phones(mask_urls_in_text(str(exc))))
        return
    if not found:
        yield Result("campaign", "skipped", "no routed campaign to check (no destination lists campaigns and the "
                                            "mapping has no campaign_routes); pass --campaign ID")


def _guard(name: str, check: Callable[[], tuple[str, str]], refuses_start: bool = False) -> Result:
    """Run one check; `refuses_start`: any failure of it is one `run` refuses to start with."""
    try:
        status, detail = check()
    except PisanoSmsError as exc:
        status, detail = "failed", str(exc)
    refused = status == REFUSED or (refuses_start and status == "failed")
    return Result(name, "failed" if refused else status, redact_phones(mask_urls_in_text(detail)), refused)


def _native(settings: Settings, mapper: Any, decoder: Any, registry: bool) -> str:
    """Whether records are decoded and mapped by the native core (README, "Decoding and mapping
    natively"), and if not, why."""
    if settings.native_intake == "off":
        return "; records decoded and mapped in Python (NATIVE_INTAKE=off)"
    if registry:  # the schemas come with their records: only the mapping can be judged now
        reason = fused.why_not_mapping(mapper)
        if reason is not None:
            return f"; records decoded and mapped in Python: {reason}"
        if settings.avro_schema_file is not None:
            return ("; records decoded and mapped natively when written with AVRO_SCHEMA_FILE's own schema "
                    "and their schema allows (others are resolved into it in Python)")
        return "; records decoded and mapped natively where their schema allows"
    reason = fused.why_not(decoder.schema, mapper, reader_for)
    return ("; records decoded and mapped natively" if reason is None
            else f"; records decoded and mapped in Python: {reason}")


def _config(settings: Settings) -> tuple[str, str]:
    mapper = load_mapper(settings)
    # As `run` builds it: with the fields the mapper reads (a bad answer fails here, as at start).
    registry = registry_connection(settings)
    decoder = build_decoder(registry, settings.avro_schema_file, fields_read_by(mapper))
    settings.require("kafka_topics", *(() if settings.destinations else ("pisano_url",)))
    configs = destination_configs(settings)
    if settings.outcome_topic:
        settings.outcome_salt()  # refused if missing or too short, as at start
    windows = settings.pisano_rate_limits
    detail = f"topics {','.join(settings.kafka_topics)}, group {settings.kafka_group_id}, throttle {windows}"
    for warning in getattr(mapper, "warnings", ()):
        detail += f"; WARNING (mapping): {warning}"
    detail += _native(settings, mapper, decoder, registry is not None)
    if settings.opt_out_key() is None:
        detail += "; no opt-out list (SUPPRESSION_KEY not set)"
    cooldown = duration_ms(settings.contact_cooldown)
    overrides = len(settings.contact_cooldown_campaigns) + sum(
        c.contact_cooldown_ms is not None for c in configs.values())
    if cooldown or overrides:
        detail += f"; contact cooldown {settings.contact_cooldown.strip()}" + (
            f" ({overrides} override{'' if overrides == 1 else 's'})" if overrides else "")
    detail += _send_windows(settings, configs)
    insecure = settings.insecure_transport()
    if insecure:
        detail += "; INSECURE (PISANO_ALLOW_INSECURE=true): " + "; ".join(insecure)
    for warning in misspelled_settings(os.environ):
        detail += f"; WARNING (environment): {warning}"
    return "ok", detail


def _send_windows(settings: Settings, configs: dict[str, Any]) -> str:
    """The quiet hours in force, and whether each window is open now (by this machine's clock;
    with SEND_WINDOW_CLOCK=redis the replicas read Redis's); a window closed longer than
    MAX_EVENT_AGE is a warning (one closed past the stale limit never gets here: refused at start)."""
    default, campaigns = settings.send_windows
    windows = {f"destination {name}": config.send_window for name, config in configs.items()
               if config.send_window is not None and config.send_window != default}
    windows.update((f"campaign {campaign}", window) for campaign, window in campaigns.items())
    if default is not None:
        windows = {"SEND_WINDOW": default, **windows}
    if not windows:
        return ""
    now_ms = int(time.time() * 1000)
    return "; send windows: " + ", ".join(
        f"{scope} {window} ({'open' if window.is_open(now_ms) else 'closed'} now)" for scope, window in windows.items()
    ) + "".join(f"; WARNING (send window): {warning}" for warning in settings.send_window_warnings())


def _kafka(settings: Settings) -> tuple[str, str]:
    try:
        with refused_settings():
            producer = make_producer(settings)
    except ConfigError as exc:  # `run` refuses to start with these settings too
        return REFUSED, str(exc)
    try:
        metadata = producer.list_topics(timeout=10)
    except KafkaException as exc:
        return "failed", (f"{settings.kafka_bootstrap_servers}: {exc.args[0].str() if exc.args else exc}; "
                          "check KAFKA_BOOTSTRAP_SERVERS and the security settings")
    receipts = [settings.outcome_topic] if settings.outcome_topic else []
    missing = [t for t in [*settings.kafka_topics, settings.dlq_topic, *receipts] if t not in metadata.topics]
    if missing:
        return "failed", (f"topic(s) {', '.join(missing)} do not exist; create them (the DLQ topic too"
                          + (", and OUTCOME_TOPIC)" if receipts else ")"))
    parts = ", ".join(f"{t} ({len(metadata.topics[t].partitions)} partitions)" for t in settings.kafka_topics)
    return "ok", f"{settings.kafka_bootstrap_servers}: {parts}; DLQ {settings.dlq_topic}" \
        + (f"; receipts {settings.outcome_topic}" if receipts else "") + _retention(settings, min(metadata.brokers))


def _retention(settings: Settings, broker_id: int) -> str:
    """Warnings on the topics' and brokers' retention (consumer/operations/durability.py)."""
    try:
        admin = make_admin(settings)
        configs = read_topic_configs(admin, [*settings.kafka_topics, settings.dlq_topic])
        warnings = topic_warnings(configs, settings.kafka_topics, settings.dlq_topic,
                                  held_ms=settings.longest_uncommitted_ms(), stale_ms=settings.stale_after_ms)
        offsets = offsets_warning(read_offsets_retention(admin, broker_id), settings.dedup_horizon_s)
    except Exception as exc:  # a warning, never the report's end (found by review: a describe that timed
        # out on the Python side, concurrent.futures' TimeoutError, ended `check` with a traceback)
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        return (f"; retention unchecked ({error.str() if error is not None else type(exc).__name__}): allow this "
                "user DescribeConfigs on the topics and the cluster, or compare retention.ms yourself (README, "
                "\"Offsets, retention and the dedup horizon\")")
    return "".join(f"; WARNING (retention): {w}" for w in [*warnings, *([offsets] if offsets else [])])


def _redis(settings: Settings) -> tuple[str, str]:
    url = settings.redis_url.get_secret_value()
    client = connect(url, cluster=settings.redis_cluster, timeout_s=settings.redis_timeout_ms / 1000)
    try:
        started = time.perf_counter()
        client.ping()
        elapsed = (time.perf_counter() - started) * 1000
        version = _redis_version(client)
        safe, eviction = _eviction(client, settings.redis_allow_eviction)
    except REDIS_ERRORS as exc:
        return "failed", f"{mask_url(url)}: {describe(exc, 'the check')}"
    if not safe:  # the start refuses it too (consumer/state/eviction.py)
        return REFUSED, f"{mask_url(url)}: {eviction}"
    acknowledged, replicas = _replicas(client, settings)
    if not acknowledged:
        return "failed", f"{mask_url(url)}: {replicas}"
    try:
        persistence = persistence_warning(client)
    except REDIS_ERRORS as exc:
        persistence = f"persistence unchecked ({describe(exc, 'INFO persistence')})"
    return "ok", f"{mask_url(url)} (Redis {version}, PING {elapsed:.1f} ms, {eviction}{replicas})" \
        + (f"; WARNING (persistence): {persistence}" if persistence else "") + _state_origins(client, settings)


def _state_origins(client: Any, settings: Settings) -> str:
    """Since when the dedup (and contact) state has been kept, and a warning when part of it began
    later, or when the group's commits were made under origins Redis no longer holds: lost
    meanwhile (consumer/state/origins.py, witness.py). Read only."""
    keys = Keys(settings.redis_key_prefix)
    try:
        cooldown_s = cooldown_windows(settings).longest_ms / 1000
    except ConfigError:  # the config line says why
        cooldown_s = 0
    try:
        raw = client.get(keys.dedup_layout())
        origins: dict[str, list[str | None]] = {
            DEDUP: [None] * DEDUP_BUCKETS if raw is None
            else read_origins(client, BucketNames(keys, Layout.decode(raw).buckets).bases)}
        if cooldown_s:
            origins[CONTACTS] = read_origins(client, list(bucket_tags(keys.prefix)))
        said = [("dedup state: none yet", None) if raw is None and state == DEDUP else origins_summary(state, found)
                for state, found in origins.items()]
        kept = client.get(keys.witnessed())
    except StateStoreError as exc:
        return f"; state origins unchecked ({exc})"
    except REDIS_ERRORS as exc:
        return f"; state origins unchecked ({describe(exc, 'reading the dedup layout')})"
    except (ValueError, KeyError, TypeError) as exc:  # not a layout this release reads: `run` refuses it too
        return f"; dedup layout unreadable ({type(exc).__name__}): README, \"The dedup state in Redis\""
    return "".join(f"; {text}" + (f"; WARNING (state lost): {warning}" if warning else "") for text, warning in said) \
        + _witnessed(settings, origins, {DEDUP: settings.dedup_horizon_s, CONTACTS: cooldown_s},
                     None if kept is None else stored_text(kept))


def _witnessed(settings: Settings, origins: dict[str, list[str | None]], keeps_s: dict[str, float],
               kept: str | None) -> str:
    """A warning for each state the group's commits were made under that Redis no longer holds:
    lost while no replica ran, which the first replica to start says too (consumer/state/witness.py)."""
    if not settings.kafka_topics:
        return ""  # the config line says so
    try:
        with refused_settings():
            consumer = make_consumer(settings, **{"enable.auto.commit": False})
    except ConfigError:
        return ""  # the config and kafka lines say why
    try:
        committed = committed_metadata(consumer, settings.kafka_topics, 10)
    except KafkaException as exc:
        return f"; commits' stamps unchecked ({exc.args[0].str() if exc.args else exc})"
    finally:
        consumer.close()
    stamps = read_stamps(committed, kept)
    warnings = []
    for state, found in origins.items():
        verdict = judge(stamps.get(state, ()), [origin or "" for origin in found], None, time.time(), keeps_s[state])
        if verdict.lost:
            seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(verdict.lost_since))
            warnings.append(f"; WARNING (state lost): consumer group {settings.kafka_group_id} committed under {state} "
                            f"origins, seen at {seen}, that Redis no longer holds ({verdict.lost} of {len(found)} "
                            "buckets): lost while no replica ran; the first replica to start says so too (README, "
                            "\"When Redis loses its data\")")
    return "".join(warnings)


def _replicas(client: Any, settings: Settings) -> tuple[bool, str]:
    """With DEDUP_WAIT_REPLICAS, whether every master's replicas acknowledge a write in time, as
    each claim and settlement will need, and what to say ('' when the setting is 0)."""
    if not settings.dedup_wait_replicas:
        return True, ""
    wait = ReplicationWait(client, settings.redis_key_prefix, replicas=settings.dedup_wait_replicas,
                           timeout_ms=settings.dedup_wait_timeout_ms)
    try:
        wait()
    except StateStoreError as exc:
        return False, (f"{exc}; every claim would fail closed: give every master that many replicas, "
                       "or lower DEDUP_WAIT_REPLICAS")
    return True, f", DEDUP_WAIT_REPLICAS={settings.dedup_wait_replicas} acknowledged by every master's replicas"


def _redis_version(client: Any) -> str:
    try:
        return str(client.info("server").get("redis_version", "?"))
    except REDIS_ERRORS:
        return "?"  # a user that may not run INFO; _eviction says what to do


def _eviction(client: Any, allow: bool) -> tuple[bool, str]:
    """Whether Redis keeps every delivered mark (or REDIS_ALLOW_EVICTION accepts it may not), and why."""
    try:
        memory = read_memory(client)
    except RedisInfoDenied:
        return (True, "maxmemory-policy unchecked (REDIS_ALLOW_EVICTION=true)") if allow else (False, DENIED_HELP)
    problem = eviction_problem(memory)
    if problem is None:
        used = f"memory {memory.used_ratio:.0%} of maxmemory" if memory.max_bytes else "no maxmemory"
        return True, f"maxmemory-policy noeviction, {used}"
    if allow:
        return True, (f"maxmemory-policy {memory.policy} ALLOWED by REDIS_ALLOW_EVICTION=true: "
                      "delivered marks may be evicted")
    return False, problem


def _registry(settings: Settings) -> tuple[str, str]:
    connection = registry_connection(settings)
    if connection is None:
        source = settings.avro_schema_file or "the default schema"
        return "skipped", f"SCHEMA_REGISTRY_URL not set; plain Avro with {source}"
    url = mask_url(connection.url)  # its query may carry a key
    try:
        with httpx.Client(timeout=10, **connection.client_options()) as client:  # type: ignore[arg-type]
            response = client.get("/subjects")
            subjects = response.json() if response.status_code == 200 else None
    except httpx.HTTPError as exc:
        return "failed", f"{url}: {type(exc).__name__}; check SCHEMA_REGISTRY_URL and SCHEMA_REGISTRY_CA_FILE"
    except ValueError:
        return "failed", f"{url} answered 200 with a body that is not JSON; is SCHEMA_REGISTRY_URL the registry?"
    if response.status_code in (401, 403):
        return "failed", (f"{url} answered HTTP {response.status_code}; check SCHEMA_REGISTRY_USER and "
                          "SCHEMA_REGISTRY_PASSWORD (or the client certificate)")
    if response.status_code != 200:
        return "failed", f"{url} answered HTTP {response.status_code}"
    auth = f" as {connection.auth[0]}" if connection.auth else ""
    count = len(subjects) if isinstance(subjects, list) else "?"
    return "ok", f"{url}{auth} ({count} subjects)"


def _pisano(settings: Settings, campaign: str) -> tuple[str, str]:
    """Every destination's token, each probed in a slot of its own throttle."""
    state = build_state(settings)
    results = []
    for config in destination_configs(settings).values():
        destination = build_destination(config, settings, state, connections=1, horizon_ms=60_000)
        shown_url = mask_url(config.url)
        try:
            sent = send_in_slot(destination.limiter, 60.0, partial(destination.client.probe_token, campaign),
                                warm=destination.client.warm)
            if isinstance(sent, NoSlot):
                return "failed", f"{config.name}: {sent.why}"
            answer = sent
        except PisanoTransportError as exc:
            return "failed", f"{config.name} {shown_url}: {exc.message}; check its URL (PISANO_URL)"
        finally:
            destination.client.close()
        if answer is not None and answer.http_status == 404 and answer.code == NOT_FOUND_CODE:
            status, detail = _not_found(config.name, config.url, campaign)
            if status == "failed":
                return status, detail
            results.append(detail)
            continue
        verdict = token_verdict(answer)
        if isinstance(verdict, Trip):
            return "failed", token_refused(config.name, verdict)
        if verdict is None:
            assert answer is not None
            return "failed", f"{config.name} {shown_url}: unexpected answer HTTP {answer.http_status} " \
                             f"code {answer.code}"
        shown = "HTTP 200" if answer is None else f"HTTP {answer.http_status} code {answer.code}"
        results.append(f"{config.name} {shown_url}: token accepted (probe answered {shown})")
    return "ok", "; ".join(results)


def _not_found(destination: str, url: str, campaign: str) -> tuple[str, str]:
    """404 13002 ("Requested resource not found!") proves neither the token nor the URL: Pisano
    gives it for a campaign it does not find once the token passed, and for any path it does not
    serve, whatever the token (a PISANO_URL whose path does not belong there)."""
    path = urlsplit(url).path.rstrip("/")
    where = (f"PISANO_URL's path {path!r}: Pisano's endpoint is /v1/sms_campaigns/... right under its base URL, "
             "so remove the path unless a proxy in front of Pisano needs it" if path else
             "that PISANO_URL (or the destination's url) is Pisano's base URL")
    shown = f"{destination} {mask_url(url)}: Pisano answered HTTP 404 code {NOT_FOUND_CODE} (resource not found)"
    if campaign != PROBE_CAMPAIGN:
        return "failed", (f"{shown} for campaign {campaign}: no such campaign at this account, or a wrong URL; "
                          f"the token is not proven. Check the campaign's API ID in Pisano and {where}")
    return "ok", (f"{shown} to the probe for the nil campaign, as it does after accepting the token, and also to "
                  f"any path it does not serve: the token is not proven. Verify {where}, and prove the token with "
                  "`pisano-sms check --campaign <an SMS campaign's API ID>` (or `check --campaigns`)")


def token_refused(destination: str, verdict: Trip) -> str:
    """Which settings hold the refused token. Written so the report's masking, which takes the
    word after `token` for a credential, leaves the setting names readable (it once read
    `check its token ***)`)."""
    where = ("PISANO_API_TOKEN or PISANO_API_TOKEN_FILE (or what PISANO_TOKEN_PROVIDER returns)"
             if destination == DEFAULT else
             f"api_token or api_token_file of destination {destination} in DESTINATIONS (or what "
             "PISANO_TOKEN_PROVIDER returns)")
    return (f"{destination}: Pisano refused the token (HTTP {verdict.http_status}, code {verdict.code}: "
            f"{redact_phones(verdict.message)}); check {where}")
