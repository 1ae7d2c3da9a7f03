"""The `pisano-sms` command line (also `python -m consumer`).

Every command takes `--config FILE` (YAML); environment variables override the file. Bad
configuration ends with one line naming the setting and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from consumer import __version__, logs
from consumer.errors import ConfigError
from consumer.settings import Settings, load_settings

log = logging.getLogger("consumer")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_CONFIG = 2


def config_option(command: F) -> F:
    return click.option(
        "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
        help="YAML settings file (names as in the README); environment variables override it.",
    )(command)


def fail(message: str, code: int = EXIT_CONFIG) -> None:
    click.echo(f"pisano-sms: error: {message}", err=True)
    sys.exit(code)


def configured(command: F) -> F:
    """Load the settings (group's --config, or the command's) and pass them as `settings`."""

    @wraps(command)
    def wrapper(*args: Any, config_file: Path | None = None, **kwargs: Any) -> Any:
        context = click.get_current_context()
        path = config_file or (context.obj or {}).get("config_file")
        try:
            settings = load_settings(path)
            return command(*args, settings=settings, **kwargs)
        except ConfigError as exc:
            fail(str(exc))

    return config_option(wrapper)  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pisano-sms")
@config_option
@click.pass_context
def main(context: click.Context, config_file: Path | None) -> None:
    """Kafka transaction events in, batched Pisano SMS survey sharings out.

    Reads Avro events, drops duplicates in Redis, packs recipients into batched Pisano requests
    inside the fleet-wide throttle, and dead-letters every failure with its Pisano code.
    """
    context.obj = {"config_file": config_file}


@main.command()
@configured
def run(settings: Settings) -> None:
    """Run the consumer until SIGTERM or Ctrl-C (then flush, commit and exit 0)."""
    from consumer.health import Health, HealthServer
    from consumer.metrics import Metrics
    from consumer.pipeline import build_pipeline

    logs.configure(settings.log_format, settings.log_level)
    metrics, health = Metrics(), Health()
    pipeline, probe = build_pipeline(settings, metrics, health)
    server = HealthServer(settings.http_port, health, metrics) if settings.http_port else None

    def stop(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        pipeline.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("starting with %s", {k: v for k, v in settings.as_dict().items() if v not in (None, {}, [])})
    probe.start()
    if server:
        server.start()
    try:
        pipeline.run()
    finally:
        probe.stop()
        if server:
            server.stop()


@main.command()
@click.option("--campaign", help="Campaign id for the Pisano probe (default: a nil UUID).")
@configured
def check(settings: Settings, campaign: str | None) -> None:
    """Validate the configuration and reach Kafka, Redis, the registry and Pisano."""
    from consumer.check import run_checks

    logging.basicConfig(level=logging.CRITICAL)  # librdkafka's own retries would drown the report
    failed = False
    for result in run_checks(settings, campaign):
        colour = {"ok": "green", "failed": "red", "skipped": "yellow"}[result.status]
        click.echo(f"{result.name:<9} " + click.style(f"{result.status:<8}", fg=colour) + f" {result.detail}")
        failed |= result.status == "failed"
    sys.exit(1 if failed else 0)
