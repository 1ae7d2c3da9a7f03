"""Session fixtures: the real local stack (Kafka + Redis) started once, unique names per test.

Under pytest-xdist (`make test` runs two workers) each worker starts a stack of its own, on ports
and in a directory of its own (`own_stack_per_worker`).

Point the suite at an existing cluster by setting both KAFKA_BOOTSTRAP_SERVERS and REDIS_URL, with
one worker (`-n 0`): the tests that restart Kafka or Redis are skipped then, since they need to
own the processes.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

# Ports apart between pytest-xdist workers' stacks: Kafka takes its port +0..+2 and +5
# (Prometheus), Redis +0, +1 and +100..+115 (the cluster and its bus).
WORKER_PORT_STEP = 500


def own_stack_per_worker(environ: dict[str, str] | os._Environ[str], worker: str | None) -> None:
    """Give each pytest-xdist worker a stack of its own: the tests flush Redis db 0, restart
    Redis and Kafka and kill cluster masters, so two workers must never share one. Worker gwN
    takes the configured ports (or localstack.py's defaults) plus N * WORKER_PORT_STEP and a stack
    directory of its own; gw0 keeps them, so a stack started by hand (`make up`) serves it. Set
    before localstack.py is imported: it reads them once."""
    if not worker or worker == "gw0":
        return
    step = WORKER_PORT_STEP * int(worker.removeprefix("gw"))
    base_dir = Path(environ.get("PISANO_STACK_DIR", ROOT / ".stack"))
    environ["PISANO_STACK_DIR"] = str(base_dir.with_name(f"{base_dir.name}-{worker}"))
    for name, default in (("PISANO_STACK_KAFKA_PORT", 19092), ("PISANO_STACK_REDIS_PORT", 16379)):
        environ[name] = str(int(environ.get(name, default)) + step)
    for name in ("PISANO_STACK_PROMETHEUS_PORT", "PISANO_STACK_REDIS_CLUSTER_PORT"):
        if name in environ:
            environ[name] = str(int(environ[name]) + step)


def refuse_shared_servers(what: str) -> None:
    """Servers given from outside are one for every pytest-xdist worker: they would flush each
    other's Redis. Said when a test first asks for them (the unit tests never do)."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        pytest.fail(f"{what} is set, and {os.environ['PYTEST_XDIST_WORKER_COUNT']} pytest-xdist workers would "
                    "share those servers and flush each other's Redis: run the suite with `-n 0`, or unset "
                    "it so that each worker starts a stack of its own", pytrace=False)


own_stack_per_worker(os.environ, os.environ.get("PYTEST_XDIST_WORKER"))

import localstack  # noqa: E402


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    redis_url: str
    local: bool  # True when the suite owns the processes and may restart them


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    bootstrap, redis_url = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("REDIS_URL")
    if bootstrap and redis_url:
        refuse_shared_servers("KAFKA_BOOTSTRAP_SERVERS with REDIS_URL")
        yield Stack(bootstrap, redis_url, local=False)
        return
    was_running = all(localstack.running().values())
    values = localstack.up()
    yield Stack(values["KAFKA_BOOTSTRAP_SERVERS"], values["REDIS_URL"], local=True)
    if not was_running:
        localstack.down()


@dataclass(frozen=True)
class ClusterStack:
    url: str  # a seed node; clients connect with REDIS_CLUSTER=true (RedisCluster)
    local: bool  # True when the suite owns the nodes and may kill them


@pytest.fixture(scope="session")
def redis_cluster(stack: Stack) -> Iterator[ClusterStack]:
    """A Redis Cluster (three masters, three replicas), started once, only when a test asks for it.

    PISANO_TEST_REDIS_CLUSTER_URL points the suite at an existing cluster (the failover tests are
    skipped then); otherwise the local stack's (`localstack.py up --redis-cluster`)."""
    url = os.environ.get("PISANO_TEST_REDIS_CLUSTER_URL")
    if url:
        refuse_shared_servers("PISANO_TEST_REDIS_CLUSTER_URL")
        yield ClusterStack(url, local=False)
        return
    if not stack.local:
        pytest.skip("no Redis Cluster: set PISANO_TEST_REDIS_CLUSTER_URL to test against one")
    was_running = localstack.cluster_running()
    localstack.start_redis_cluster()
    yield ClusterStack(localstack.cluster_url(), local=True)
    if not was_running:
        localstack.stop_redis_cluster()


def close_redis(client: Any) -> None:
    """Close a client and its sockets. redis-py's RedisCluster.close() leaves each node's pooled
    connections open (Python then warns of unclosed sockets, an error in this suite)."""
    for node in client.get_nodes() if hasattr(client, "get_nodes") else ():
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect()
    client.close()


def flushed_client(request: pytest.FixtureRequest, variant: str) -> Any:
    """A new consumer-kind client of the test Redis of `variant` ("redis" or "cluster"), flushed
    once per test (db 0, or every master), closed after the test."""
    from consumer.state.redis import connect

    if variant == "cluster":
        request.getfixturevalue("cluster_client")  # flushes every master
        client = connect(request.getfixturevalue("redis_cluster").url, cluster=True)
    else:
        request.getfixturevalue("redis_client")  # flushes db 0
        client = connect(str(request.getfixturevalue("stack").redis_url))
    request.addfinalizer(lambda: close_redis(client))
    return client


@pytest.fixture
def cluster_client(redis_cluster: ClusterStack):  # type: ignore[no-untyped-def]
    """A client of the cluster, every master flushed (the cluster twin of `redis_client`)."""
    import redis

    if redis_cluster.local:
        localstack.wait_cluster()  # a failover test before may have left a node rejoining
    client = redis.RedisCluster.from_url(redis_cluster.url)
    client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    yield client
    close_redis(client)


@pytest.fixture
def local_stack(stack: Stack) -> Stack:
    if not stack.local:
        pytest.skip("needs the suite's own local stack (restarts Kafka or Redis)")
    return stack


@pytest.fixture
def redis_client(stack: Stack):  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    yield client
    client.close()


# Letters only: a name is said in reports that mask a run of 7 or more digits as a possible phone
# number (consumer/operations/logs.py), which a random hex name held about once in 12.
_NAME_LETTERS = string.ascii_lowercase


def unique(prefix: str) -> str:
    return f"{prefix}-{''.join(secrets.choice(_NAME_LETTERS) for _ in range(10))}"


@pytest.fixture
def new_topic(stack: Stack) -> Callable[..., str]:
    from tests.support.kafka import create_topic

    def make(prefix: str = "events", partitions: int = 1) -> str:
        name = unique(prefix)
        create_topic(stack.bootstrap, name, partitions)
        return name

    return make


@pytest.fixture
def processes():  # type: ignore[no-untyped-def]
    """Consumer processes started by a test; whatever is still running at the end is killed."""
    started: list = []  # type: ignore[type-arg]
    yield started
    for process in started:
        if process.alive():
            process.kill()


@pytest.fixture(autouse=True)
def _loggers_enabled() -> Iterator[None]:
    """Tests that read `caplog` see the project's loggers whatever ran before them: a library
    configuring logging in-process (dictConfig's disable_existing_loggers) or a test calling
    `logs.configure` must not silence them for the rest of the session."""
    root = logging.getLogger()
    level = root.level
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("consumer") and isinstance(logger, logging.Logger):
            logger.disabled = False
            logger.propagate = True
    yield
    root.setLevel(level)



@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Escape lone surrogates in a report's captured output before pytest-xdist sends it to the
    controller as UTF-8 (`make test` runs the unit tests in two workers): the hostile-input tests
    log them on purpose, and one unencodable character crashed the worker that ran the test."""
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
                       for title, text in report.sections]
