"""Issue 14: `pisano-sms run`'s start-up CPU. The throughput benchmark counts the whole process's
CPU per event, start-up included, and imports were most of it (benchmarks/startup.py). What `run`
never uses stays out of its imports, and the collector is paused while it starts; these tests
fail if either comes back, so the gain cannot go unnoticed."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from consumer.cli import main
from consumer.operations import collector

ROOT = Path(__file__).resolve().parents[2]

# Other commands' modules and heavy libraries `run` does not need: the simulator (starlette,
# uvicorn), the SRE tools, `check`, the demo, the tracing SDK while no OTEL_* asks for it, and
# the in-memory twins of the Redis stores.
# (Redis's client itself imports OpenTelemetry's metrics API and SDK when they are installed: not
# ours to avoid, so only the tracing SDK and the exporters are named.)
NOT_FOR_RUN = ("starlette", "uvicorn", "opentelemetry.sdk.trace", "opentelemetry.exporter",
               "consumer.simulator", "consumer.sre.commands", "consumer.sre.suppress", "consumer.sre.replay",
               "consumer.sre.dlq_read", "consumer.sre.dlq_stats", "consumer.demo", "consumer.operations.check",
               "consumer.operations.otel", "consumer.state.memory")
# What the command line needs before it knows the command: not the settings' libraries.
NOT_FOR_THE_COMMAND_LINE = ("pydantic", "pydantic_settings", "redis", "yaml", "confluent_kafka", "httpx",
                            "consumer.config", "consumer.app")


def imported_by(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=60, check=True)
    return list(json.loads(done.stdout.splitlines()[-1]))


def named(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_run_s_modules_import_none_of_the_other_commands_or_the_tracing_sdk() -> None:
    modules = imported_by("import consumer.cli, consumer.app")
    assert named(modules, NOT_FOR_RUN) == []
    assert "consumer.app" in modules  # the check above looked at a real import


def test_the_command_line_imports_the_settings_libraries_only_once_a_command_runs() -> None:
    modules = imported_by("import consumer.cli")
    assert named(modules, NOT_FOR_THE_COMMAND_LINE) == []


def test_the_sre_commands_are_still_commands_and_listed() -> None:
    listed = CliRunner().invoke(main, ["--help"])
    assert listed.exit_code == 0
    for command in ("run", "check", "simulate", "demo", "replay", "dlq", "suppress"):
        assert f"  {command} " in listed.output
    for command in (["dlq", "stats", "--help"], ["replay", "--help"], ["suppress", "add", "--help"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output
        assert "Usage: " in result.output


def test_a_start_that_fails_leaves_the_collector_on(tmp_path: Path) -> None:
    """`run` pauses the collector for its start-up; a bad setting ends it (exit 2, the same one
    line) with the collector back on, as it was."""
    config = tmp_path / "c.yaml"
    config.write_text("PISANO_RATE_LIMITS: 20 per 5\n")
    assert gc.isenabled()
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 2 and "PISANO_RATE_LIMITS='20 per 5'" in result.output
    assert gc.isenabled()


def test_the_start_up_pause_ends_with_the_tuning_and_leaves_a_collector_already_off_off() -> None:
    threshold = gc.get_threshold()
    try:
        collector.pause_for_start_up()
        assert not gc.isenabled()
        collector.tune_for_throughput()
        assert gc.isenabled()
        gc.disable()
        collector.pause_for_start_up()
        collector.end_start_up()
        assert not gc.isenabled()  # off before the pause: it was not the pause's to turn on
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_what_run_may_never_need_is_built_at_its_first_use_not_at_import() -> None:
    """The DESTINATIONS entries' validator (PISANO_URL alone needs none) and the log redaction's
    trace-id patterns (7 ms to compile; needed once a log line holds a timestamp or a UUID)."""
    code = ("import json, sys\nimport consumer.cli, consumer.app\n"
            "from consumer.config.destinations import DestinationSettings\n"
            "from consumer.operations import logs\n"
            "print(json.dumps([DestinationSettings.__pydantic_complete__, logs._trace_ids.cache_info().currsize]))\n"
            "DestinationSettings.model_validate({'url': 'https://eu.pisano.co'})\n"
            "said = logs.redact_text('at 2026-12-04T10:11:12Z for 0532 123 45 67')\n"
            "print(json.dumps([DestinationSettings.__pydantic_complete__, logs._trace_ids.cache_info().currsize,"
            " said]))")
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=60, check=True)
    before, after = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert before == [False, 0]
    assert after[:2] == [True, 1]
    assert "2026-12-04T10:11:12Z" in after[2] and "0532 123 45 67" not in after[2]


def test_the_imports_are_frozen_without_a_pass_only_while_the_start_up_pause_holds() -> None:
    threshold = gc.get_threshold()
    try:
        gc.unfreeze()
        collector.freeze_imports()
        assert gc.get_freeze_count() == 0  # not paused: not run's start-up
        collector.pause_for_start_up()
        collector.freeze_imports()
        assert gc.get_freeze_count() > 0 and not gc.isenabled()
        collector.tune_for_throughput()
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_a_start_up_ended_before_the_tuning_leaves_the_heap_unfrozen_and_the_collector_on() -> None:
    """As when `run` fails to build (a Redis that evicts) in a process that goes on (a test)."""
    gc.unfreeze()
    try:
        collector.pause_for_start_up()
        collector.freeze_imports()
        assert gc.get_freeze_count() > 0
        collector.end_start_up()
        assert gc.get_freeze_count() == 0 and gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
