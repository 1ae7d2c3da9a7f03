"""The suite's pytest-xdist workers each run a local stack of their own (tests/conftest.py), and
installing what the stacks need happens once at a time on a machine (scripts/localstack.py)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from tests.conftest import ROOT, WORKER_PORT_STEP, localstack, own_stack_per_worker


def test_the_first_worker_and_a_run_without_workers_keep_the_configured_stack() -> None:
    for worker in (None, "gw0"):
        environ = {"PISANO_STACK_KAFKA_PORT": "25092"}
        own_stack_per_worker(environ, worker)
        assert environ == {"PISANO_STACK_KAFKA_PORT": "25092"}


def test_each_other_worker_takes_ports_and_a_directory_of_its_own() -> None:
    default: dict[str, str] = {}
    own_stack_per_worker(default, "gw1")
    assert default == {"PISANO_STACK_DIR": str(ROOT / ".stack-gw1"),
                       "PISANO_STACK_KAFKA_PORT": str(19092 + WORKER_PORT_STEP),
                       "PISANO_STACK_REDIS_PORT": str(16379 + WORKER_PORT_STEP)}
    configured = {"PISANO_STACK_DIR": "/tmp/stk", "PISANO_STACK_KAFKA_PORT": "25092",
                  "PISANO_STACK_REDIS_PORT": "24379", "PISANO_STACK_PROMETHEUS_PORT": "25100"}
    own_stack_per_worker(configured, "gw2")
    assert configured == {"PISANO_STACK_DIR": "/tmp/stk-gw2",
                          "PISANO_STACK_KAFKA_PORT": str(25092 + 2 * WORKER_PORT_STEP),
                          "PISANO_STACK_REDIS_PORT": str(24379 + 2 * WORKER_PORT_STEP),
                          "PISANO_STACK_PROMETHEUS_PORT": str(25100 + 2 * WORKER_PORT_STEP)}


def test_the_workers_ports_never_overlap() -> None:
    """Kafka uses its port +0..+2 and +5, Redis +0, +1 and +100..+115: a step wider than both."""
    used = []
    for n in range(4):
        environ: dict[str, str] = {}
        own_stack_per_worker(environ, f"gw{n}")
        kafka = int(environ.get("PISANO_STACK_KAFKA_PORT", 19092))
        redis = int(environ.get("PISANO_STACK_REDIS_PORT", 16379))
        used += [kafka + i for i in (0, 1, 2, 5)] + [redis, redis + 1] + [redis + i for i in range(100, 116)]
    assert len(used) == len(set(used))


def _install(cache: str, log: str, name: str) -> None:
    localstack.CACHE_DIR = Path(cache)
    with localstack._installing():
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{name} in\n")
        time.sleep(0.3)
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{name} out\n")


def test_two_installs_on_one_machine_run_one_after_the_other(tmp_path: Path) -> None:
    log = tmp_path / "log"
    others = [multiprocessing.get_context("fork").Process(target=_install, args=(str(tmp_path), str(log), name))
              for name in ("a", "b")]
    for process in others:
        process.start()
        time.sleep(0.1)
    for process in others:
        process.join(10)
        assert process.exitcode == 0
    assert log.read_text().split("\n") == ["a in", "a out", "b in", "b out", ""]


def test_make_down_stops_the_second_workers_stack_where_it_runs() -> None:
    """`make down` also stops a stack an interrupted `make test` left running in worker gw1."""
    gw1: dict[str, str] = {}
    own_stack_per_worker(gw1, "gw1")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    down = makefile[makefile.index("\ndown:"):makefile.index("\n\n", makefile.index("\ndown:"))]
    assert f"PISANO_STACK_DIR={Path(gw1['PISANO_STACK_DIR']).name}" in down
    assert f"PISANO_STACK_KAFKA_PORT={gw1['PISANO_STACK_KAFKA_PORT']}" in down
    assert f"PISANO_STACK_REDIS_PORT={gw1['PISANO_STACK_REDIS_PORT']}" in down
