"""What every `pisano-sms` command shares: the --config option, settings loading, failure exit.

Light to import (click and the standard library): the settings' modules (pydantic, Redis's
client through the limiter's constants) load when a command loads its settings, so that `run`
loads them with the collector paused (consumer/operations/collector.py, `pause_for_start_up`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from consumer.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CONFIG = 2  # bad options or configuration: the command does not start (README "Configuration")
EXIT_FAILED = 1  # the command ran and something it checked or did failed


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
        from consumer.config.loading import load_settings

        try:
            settings = load_settings(path)
            return command(*args, settings=settings, **kwargs)
        except ConfigError as exc:
            fail(str(exc))

    return config_option(wrapper)  # type: ignore[return-value]
