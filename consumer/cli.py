"""The `pisano-sms` command line (also `python -m consumer`).

Every command takes `--config FILE` (YAML); environment variables override the file. Bad
configuration ends with one line naming the setting and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consumer import __version__
from consumer.cli_common import EXIT_CONFIG, EXIT_FAILED, config_option, configured, fail
from consumer.operations import collector

if TYPE_CHECKING:
    from consumer.config.settings import Settings

log = logging.getLogger("consumer")

# Each command imports what it needs when it runs, so that `run` loads none of the other
# commands' modules (the simulator's starlette and uvicorn, the SRE tools) and loads its own with
# the collector paused (issue 14: start-up CPU). The SRE commands are loaded when named.
_LOADED_WHEN_NAMED = {
    "dlq": ("consumer.sre.commands", "dlq"),
    "replay": ("consumer.sre.commands", "replay"),
    "suppress": ("consumer.sre.suppress", "suppress"),
}


class _Commands(click.Group):
    """The command group, with the commands of _LOADED_WHEN_NAMED imported when named (or listed
    by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LOADED_WHEN_NAMED})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _LOADED_WHEN_NAMED:
            module, name = _LOADED_WHEN_NAMED[cmd_name]
            command = getattr(importlib.import_module(module), name)
            self.add_command(command, cmd_name)
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pisano-sms")
@config_option
@click.pass_context
def main(context: click.Context, config_file: Path | None) -> None:
    """Kafka transaction events in, batched Pisano SMS survey sharings out.

    Reads Avro events, drops duplicates in Redis, packs recipients into batched Pisano requests
    inside the fleet-wide throttle, and dead-letters every failure with its Pisano code.
    """
    context.obj = {"config_file": config_file}
    if context.invoked_subcommand == "run":
        # Its imports and builders make no garbage worth a pass: one full pass ends the start-up
        # (collector.tune_for_throughput); the collector is back on then, or when the command ends.
        collector.pause_for_start_up()
        context.call_on_close(collector.end_start_up)


@main.command()
@configured
def run(settings: Settings) -> None:
    """Run the consumer until SIGTERM or Ctrl-C (then flush, commit and exit 0)."""
    from confluent_kafka import KafkaError, KafkaException

    from consumer.app import build_pipeline
    from consumer.config.env_names import misspelled_settings
    from consumer.operations import gil, logs
    from consumer.operations.health import Health, HealthServer
    from consumer.operations.metrics import Metrics
    from consumer.operations.tracing import configure as configure_tracing

    collector.freeze_imports()
    logs.configure(settings.log_format, settings.log_level)
    tracing = configure_tracing(settings.kafka_group_id)  # README "Tracing": off unless OTEL_* asks
    metrics, health = Metrics(), Health()
    pipeline, probe = build_pipeline(settings, metrics, health)
    server = HealthServer(settings.http_port, health, metrics, str(settings.http_bind_address),
                          max_connections=settings.http_max_connections,
                          request_timeout_s=settings.http_request_timeout_ms / 1000) if settings.http_port else None

    def stop(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        pipeline.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("starting with %s", {k: v for k, v in settings.as_dict().items() if v not in (None, {}, [])})
    for danger in settings.insecure_transport():
        log.warning("INSECURE (PISANO_ALLOW_INSECURE=true): %s; never in production", danger)
    for warning in [*misspelled_settings(os.environ), *settings.send_window_warnings()]:
        log.warning("%s", warning)
    probe.start()
    if server:
        server.start()
    collector.tune_for_throughput()
    gil.hand_over_less_often()
    try:
        pipeline.run()
    except KafkaException as exc:  # a client failed for good (a fatal producer error): it never recovers
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        fail(f"Kafka failed fatally ({error.str() if error is not None else exc}); this replica stops: its "
             "restart (Kubernetes restarts the pod) begins with new Kafka clients, and what it did not commit "
             "is read again", EXIT_FAILED)
    finally:
        probe.stop()
        if server:
            server.stop()
        tracing.shutdown()  # exports the spans still buffered


@main.command()
@click.option("--campaign", help="Campaign id for the Pisano probe (default: a nil UUID); with --campaigns, "
                                "checked too.")
@click.option("--campaigns", "campaigns", is_flag=True,
              help="Also prove that every routed campaign exists at its destination and has a flow, with an "
                   "empty request that sends no SMS (one throttle slot each).")
@configured
def check(settings: Settings, campaign: str | None, campaigns: bool) -> None:
    """Validate the configuration and reach Kafka, Redis, the registry and Pisano.

    Exit status: 2 when `run` would refuse to start (the configuration, an evicting Redis), as
    `run` exits; 1 when any other check failed; 0 otherwise."""
    from consumer.operations.check import run_checks

    logging.basicConfig(level=logging.CRITICAL)  # librdkafka's own retries would drown the report
    failed = refused = False
    for result in run_checks(settings, campaign, campaigns):
        colour = {"ok": "green", "failed": "red", "skipped": "yellow"}[result.status]
        click.echo(f"{result.name:<9} " + click.style(f"{result.status:<8}", fg=colour) + f" {result.detail}")
        failed |= result.status == "failed"
        refused |= result.refuses_start
    sys.exit(EXIT_CONFIG if refused else EXIT_FAILED if failed else 0)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 for all).")
@click.option("--port", default=8090, show_default=True, help="Port (0 picks a free one).")
@click.option("--token", "tokens", multiple=True,
              help="Accepted API token(s), repeatable or comma list; shown by ps: prefer --token-file. "
                   "Default: PISANO_API_TOKEN(_FILE).")
@click.option("--token-file", "token_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File of accepted API token(s), one per line, repeatable (kept out of the process list).")
@click.option("--campaign", "campaigns", multiple=True, help="Known campaign id(s), repeatable or comma list.")
@click.option("--any-campaign", is_flag=True, help="Accept every campaign id as existing.")
@click.option("--rate-limits", help="Throttle windows N/Ts,... or 'off'. Default: PISANO_RATE_LIMITS.")
@click.option("--max-recipients", default=5000, show_default=True, help="Most phone numbers in one request.")
@click.option("--delivery-log", type=click.Path(dir_okay=False), help="Append every delivery to this JSONL file.")
@click.option("--memory-log-recipients", default=200_000, show_default=True,
              help="Deliveries kept in memory for GET /_sim/deliveries (older ones only in the file).")
@click.option("--seed", type=int, help="Seed the fault dice so a run repeats itself.")
@click.option("--error-rate", "error_rates", multiple=True, help="Random error statuses, e.g. 503=0.1,500=0.05.")
@click.option("--garbage-body-rate", default=0.0, help="Share of injected errors with an HTML body.")
@click.option("--latency-ms", default=0.0, help="Added latency per answer.")
@click.option("--latency-jitter-ms", default=0.0, help="Uniform extra latency up to this.")
@click.option("--hang-rate", default=0.0, help="Share of requests never answered (not delivered).")
@click.option("--hang-after-accept-rate", default=0.0, help="Share delivered, then never answered.")
@click.option("--bad-gateway-after-accept-rate", default=0.0,
              help="Share delivered, then answered with a gateway's bare 502 (HTML, no Pisano body).")
@click.option("--campaign-code", "campaign_codes", multiple=True, help="Force a code for a campaign: ID=13034.")
@click.option("--token-code", "token_codes", multiple=True, help="Force a code for a token: TOKEN=13011.")
@click.option("--poison-phone", "poison_phones", multiple=True, help="Phone(s) that fail any request holding them.")
@click.option("--poison-code", default=13028, show_default=True, help="The code poison phones cause.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve HTTPS with this certificate chain (PEM); needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The private key of --tls-cert (PEM).")
@click.option("--admin-token", envvar="PISANO_SIM_ADMIN_TOKEN", metavar="TOKEN",
              help="Bearer token the /_sim/ endpoints require; needed when --host is not loopback. "
                   "Env: PISANO_SIM_ADMIN_TOKEN.")
@configured
def simulate(settings: Settings, host: str, port: int, tokens: tuple[str, ...], token_files: tuple[Path, ...],
             rate_limits: str | None, tls_cert: Path | None, tls_key: Path | None, admin_token: str | None,
             **options: Any) -> None:
    """Run a Pisano SMS sharing API simulator (for tests, the demo and staging).

    Same endpoint and body as Pisano, token check, exact throttle windows per token, the
    reference's error codes, fault injection, and a delivery log (GET /_sim/deliveries).
    Admin endpoints: /_sim/stats, /_sim/requests, POST /_sim/faults, /_sim/config, /_sim/reset.
    """
    from consumer.operations import logs
    from consumer.simulator import SimulatorConfig, Tls, serve
    from consumer.simulator.token_sources import ARGV_WARNING, file_tokens

    logs.configure(settings.log_format, settings.log_level)
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    if tokens:
        click.echo(f"pisano-sms: warning: {ARGV_WARNING}", err=True)
    tokens = (*tokens, *file_tokens(token_files))
    if not tokens and settings.pisano_api_token is None and settings.pisano_api_token_file is None:
        fail("no token to accept: give --token-file FILE (one token per line), or set PISANO_API_TOKEN or "
             "PISANO_API_TOKEN_FILE")
    config = SimulatorConfig.from_options(
        tokens=tokens or (settings.api_token(),),
        rate_limits=rate_limits or settings.pisano_rate_limits,
        **options,
    )
    serve(config, host=host, port=port, tls=Tls(tls_cert, tls_key) if tls_cert and tls_key else None,
          admin_token=admin_token)


@main.command()
@click.option("--events", default=10_000, show_default=True, help="Sample transactions to produce.")
@configured
def demo(settings: Settings, events: int) -> None:
    """End to end on the local stack: simulator, sample events, consumer, report.

    Needs Kafka and Redis (`make demo` starts them and runs this). Uses fresh topics and a fresh
    Redis key prefix each run, with Pisano's cloud throttle (PISANO_RATE_LIMITS) in force.
    """
    from consumer.demo import run_demo
    from consumer.operations import logs

    # Dead-letters are the point of part of the demo: the report shows them, the log need not.
    logs.configure(settings.log_format, "ERROR")
    run_demo(settings, events)

