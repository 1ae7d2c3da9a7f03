#!/usr/bin/env python3
"""The local stack: real Apache Kafka (KRaft) and Redis, for the demo, the tests and CI.

    python scripts/localstack.py up       # install what is missing, start both, wait until they serve
    python scripts/localstack.py up --redis-cluster   # and a Redis Cluster (3 masters, 3 replicas)
    python scripts/localstack.py status   # what runs, and the connection settings
    python scripts/localstack.py env      # the settings as shell exports (eval "$(... env)")
    python scripts/localstack.py down     # stop what `up` started (by pid) and delete its data
    python scripts/localstack.py install  # only install what is missing (Kafka, redis-server, prometheus)
    python scripts/localstack.py run -- CMD...   # run CMD with the connection settings set

Kafka comes from Maven Central as `org.apache.kafka` artifacts fetched with `mvn` into a cache
outside the repository (~/.cache/pisano-sms), and runs with the machine's Java as one combined
broker+controller. Redis is Debian's `redis-server` (installed with apt when missing), and so is
Prometheus with `promtool` (`ensure_prometheus`, for the tests of the alerts and the dashboard). Runtime
files (data, logs, pids) live in `.stack/` at the top of the checkout.

Besides the plaintext listener, Kafka has a SASL_SSL listener with SCRAM-SHA-512 (user
`pisano`, a self-signed CA in `.stack/tls/`), and Redis has an ACL user with a password and a TLS
port, so the secured settings of a production deployment can be exercised locally.

With `--redis-cluster`, six more `redis-server` nodes in cluster mode (three masters, three
replicas, a 2 s node timeout so a killed master fails over in seconds) run beside the single
Redis, on ports REDIS_PORT+100..+105; `env` then prints PISANO_STACK_REDIS_CLUSTER_URL.

Tests import this module to restart Redis and Kafka in the middle of a scenario, and to freeze or
kill a cluster master, wait for its replica's promotion and restart the node (`freeze_cluster_node`,
`thaw_cluster_node`, `kill_cluster_node`, `wait_failover`, `restart_cluster_node`), or restart the
single Redis without its data (`restart_redis_without_data`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.17"

ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = Path(os.environ.get("PISANO_STACK_DIR", ROOT / ".stack"))
CACHE_DIR = Path(os.environ.get("PISANO_SMS_CACHE", Path.home() / ".cache" / "pisano-sms"))
KAFKA_LIBS = CACHE_DIR / f"kafka-{KAFKA_VERSION}" / "libs"

HOST = "127.0.0.1"
KAFKA_PORT = int(os.environ.get("PISANO_STACK_KAFKA_PORT", "19092"))
CONTROLLER_PORT = KAFKA_PORT + 1
KAFKA_SASL_PORT = KAFKA_PORT + 2
REDIS_PORT = int(os.environ.get("PISANO_STACK_REDIS_PORT", "16379"))
REDIS_TLS_PORT = REDIS_PORT + 1
# The tests' Prometheus (tests/support/prometheus.py), beside Kafka's three ports.
PROMETHEUS_PORT = int(os.environ.get("PISANO_STACK_PROMETHEUS_PORT", str(KAFKA_PORT + 5)))

# Local-only credentials for the secured listeners; they protect nothing but a throwaway stack.
SASL_USER, SASL_PASSWORD = "pisano", "pisano-local-scram"
REDIS_ACL_USER, REDIS_ACL_PASSWORD = "pisano", "pisano-local-acl"

KAFKA_DIR = STACK_DIR / "kafka"
REDIS_DIR = STACK_DIR / "redis"
TLS_DIR = STACK_DIR / "tls"


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


@contextlib.contextmanager
def _installing() -> Iterator[None]:
    """One install at a time on this machine: the test suite runs one stack per pytest-xdist
    worker (tests/conftest.py), and two workers on a fresh machine would otherwise fetch Kafka
    into the same cache, or run apt-get together (the second fails on dpkg's lock). Whoever
    waits looks again once it holds the lock: the first one may have installed it meanwhile."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / "install.lock"
    with open(path, "w", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process's install to finish (it holds {path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class StackError(RuntimeError):
    pass


# --------------------------------------------------------------------------- installation


def ensure_java() -> str:
    java = shutil.which("java")
    if not java:
        raise StackError("java not found: install a JDK 17 or newer "
                         "(e.g. apt-get install openjdk-17-jre-headless)")
    return java


def _kafka_fetched() -> bool:
    return KAFKA_LIBS.is_dir() and any(KAFKA_LIBS.glob(f"kafka_2.13-{KAFKA_VERSION}.jar"))


def ensure_kafka_libs() -> Path:
    if _kafka_fetched():
        return KAFKA_LIBS
    with _installing():
        if not _kafka_fetched():
            _fetch_kafka_libs()
    return KAFKA_LIBS


def _fetch_kafka_libs() -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("mvn not found: install Maven (apt-get install maven) to fetch Kafka from Maven Central")
    project = KAFKA_LIBS.parent
    project.mkdir(parents=True, exist_ok=True)
    (project / "pom.xml").write_text(_kafka_pom(), encoding="utf-8")
    say(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {KAFKA_LIBS} (once, ~45 MB)")
    staging = project / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "-Dstyle.color=never", "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}"],
        cwd=project,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"mvn could not fetch Kafka (exit {result.returncode}); "
                         "check the connection to Maven Central and rerun")
    staging.rename(KAFKA_LIBS)  # only a complete download counts as installed


def _kafka_pom() -> str:
    deps = [
        ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
        # Kafka 4 logs through log4j2; without a binding it would print nothing useful.
        ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        # Pin the slf4j 2 API: a transitive 1.7 would silently drop the log4j2 binding.
        ("org.slf4j", "slf4j-api", SLF4J_VERSION),
    ]
    items = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.pisano-sms</groupId><artifactId>kafka-runtime</artifactId><version>1</version>"
        f"<dependencies>{items}</dependencies></project>\n"
    )


def ensure_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    with _installing():
        return shutil.which("redis-server") or _install_redis_server()


def _install_redis_server() -> str:
    if os.geteuid() != 0:
        raise StackError("redis-server not found: run `sudo apt-get install -y redis-server` and retry")
    say("installing Debian's redis-server with apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise StackError(f"`{' '.join(command)}` failed; install redis-server by hand and retry")
    # Debian's package starts a system-wide Redis on 6379; ours runs on its own port regardless.
    found = shutil.which("redis-server")
    if not found:
        raise StackError("redis-server still not found after apt-get install")
    return found


PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")


def ensure_prometheus() -> tuple[str, str]:
    """Debian's `prometheus` package (it ships `promtool`), for the tests of the alert rules and
    the dashboard. Only its binaries are used: tests start their own Prometheus on a port of the
    stack; the package's own service must not start and take port 9090."""
    if not (PROMETHEUS.is_file() and PROMTOOL.is_file()):
        with _installing():
            if not (PROMETHEUS.is_file() and PROMTOOL.is_file()):
                _install_prometheus()
    return str(PROMETHEUS), str(PROMTOOL)


def _install_prometheus() -> None:
    if os.geteuid() != 0:
        raise StackError("prometheus not found: run `sudo apt-get install -y --no-install-recommends "
                         "prometheus` and retry")
    say("installing Debian's prometheus (with promtool) with apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Debian's invoke-rc.d and deb-systemd-invoke ask /usr/sbin/policy-rc.d whether a package may
    # start its service; exit 101 says no. Put one in place only for this install if the machine
    # has none (Docker images ship one), and remove it afterwards.
    policy = Path("/usr/sbin/policy-rc.d")
    placed = not policy.exists()
    if placed:
        policy.write_text("#!/bin/sh\n# placed by pisano-sms localstack.py while installing prometheus\nexit 101\n",
                          encoding="utf-8")
        policy.chmod(0o755)
    try:
        # No recommends: prometheus-node-exporter would be one more service the tests do not use.
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]):
            if subprocess.run(command, env=env, check=False).returncode != 0:
                raise StackError(f"`{' '.join(command)}` failed; install prometheus by hand and retry")
    finally:
        if placed:
            policy.unlink(missing_ok=True)
    if not (PROMETHEUS.is_file() and PROMTOOL.is_file()):
        raise StackError(f"{PROMETHEUS} or {PROMTOOL} still missing after apt-get install prometheus")


def ensure_tls() -> None:
    """A throwaway CA and a server certificate for localhost, for the SASL_SSL listener."""
    if (TLS_DIR / "server.pem").exists():
        return
    openssl = shutil.which("openssl")
    if not openssl:
        raise StackError("openssl not found: apt-get install -y openssl")
    TLS_DIR.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=TLS_DIR, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "3650", "-subj", "/CN=pisano-sms local CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (TLS_DIR / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "3650", "-extfile", "san.ext")
    # Kafka's PEM keystore wants the PKCS#8 key followed by the certificate in one file.
    run("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8")
    (TLS_DIR / "server.pem").write_text(
        (TLS_DIR / "server.pk8").read_text() + (TLS_DIR / "server.crt").read_text(), encoding="utf-8"
    )


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is not running.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def _read_pid(name: str) -> int | None:
    path = STACK_DIR / f"{name}.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


# Popen objects of what this process started: kept so they are reaped, not garbage collected
# while running (Python warns about that).
_children: dict[str, subprocess.Popen[bytes]] = {}


def _spawn(name: str, argv: list[str], log: Path, cwd: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `up`, and a Ctrl-C in the terminal does not reach it
        )
    (STACK_DIR / f"{name}.pid").write_text(str(process.pid))
    _children[name] = process
    return process.pid


def _stop(name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    pid = _read_pid(name)
    if pid is None:
        (STACK_DIR / f"{name}.pid").unlink(missing_ok=True)
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    (STACK_DIR / f"{name}.pid").unlink(missing_ok=True)
    child = _children.pop(name, None)
    if child is not None:
        child.wait()
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: nothing to reap
        os.waitpid(pid, os.WNOHANG)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


# --------------------------------------------------------------------------- Redis


def _redis_conf() -> str:
    return "\n".join([
        f"bind {HOST}",
        f"port {REDIS_PORT}",
        f"dir {REDIS_DIR}",
        "daemonize no",
        "protected-mode yes",
        # AOF so a restart in a test keeps the dedup and limiter state, as a production Redis would.
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "maxmemory-policy noeviction",
        # As README recommends: an expiring slice hash of dedup marks is freed in the background.
        "lazyfree-lazy-expire yes",
        "user default on nopass ~* &* +@all",
        f"user {REDIS_ACL_USER} on >{REDIS_ACL_PASSWORD} ~* &* +@all",
        # A TLS port too (server certificate from the local CA), for rediss:// settings.
        f"tls-port {REDIS_TLS_PORT}",
        f"tls-cert-file {TLS_DIR / 'server.crt'}",
        f"tls-key-file {TLS_DIR / 'server.key'}",
        f"tls-ca-cert-file {TLS_DIR / 'ca.pem'}",
        "tls-auth-clients optional",
        "",
    ])


def start_redis() -> None:
    if _read_pid("redis") is not None:
        return
    server = ensure_redis_server()
    ensure_tls()
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    conf = REDIS_DIR / "redis.conf"
    conf.write_text(_redis_conf(), encoding="utf-8")
    _spawn("redis", [server, str(conf)], REDIS_DIR / "redis.log", REDIS_DIR)
    wait_redis()


def stop_redis(kill: bool = False) -> None:
    _stop("redis", signal.SIGKILL if kill else signal.SIGTERM)


def restart_redis_without_data() -> None:
    """Kill Redis and start it again with its files gone, as a Redis without persistence comes back."""
    stop_redis(kill=True)
    shutil.rmtree(REDIS_DIR / "appendonlydir", ignore_errors=True)
    (REDIS_DIR / "dump.rdb").unlink(missing_ok=True)
    start_redis()


def wait_redis(timeout: float = 30.0) -> None:
    import redis

    client = redis.Redis(host=HOST, port=REDIS_PORT, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.ping():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise StackError(f"Redis did not answer PING within {timeout:.0f}s; see {REDIS_DIR / 'redis.log'}")
        time.sleep(0.1)


# --------------------------------------------------------------------------- Kafka


def _kafka_properties() -> str:
    tls = TLS_DIR
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{HOST}:{CONTROLLER_PORT}",
        f"listeners=PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{CONTROLLER_PORT},"
        f"SASL_SSL://localhost:{KAFKA_SASL_PORT}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{KAFKA_PORT},SASL_SSL://localhost:{KAFKA_SASL_PORT}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={tls / 'server.pem'}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={tls / 'ca.pem'}",
        f"log.dirs={KAFKA_DIR / 'data'}",
        "num.partitions=1",
        # A single broker: every internal topic has one replica; few partitions start fast.
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Tests send a 10 MB value to prove oversize records are dead-lettered, not stuck.
        "message.max.bytes=16777216",
        "replica.fetch.max.bytes=16777216",
        "auto.create.topics.enable=true",
        "",
    ])


def _log4j2_properties() -> str:
    log = KAFKA_DIR / "server.log"
    return "\n".join([
        "status = warn",
        "appender.file.type = File",
        "appender.file.name = FILE",
        f"appender.file.fileName = {log}",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = INFO",
        "rootLogger.appenderRef.file.ref = FILE",
        "logger.kafka.name = kafka",
        "logger.kafka.level = WARN",
        "logger.apache.name = org.apache.kafka",
        "logger.apache.level = WARN",
        "",
    ])


def _java_cmd(main_class: str, *args: str, heap: str = "-Xmx768m") -> list[str]:
    libs = ensure_kafka_libs()
    return [
        ensure_java(), "-Xms256m", heap, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
        "-cp", f"{libs}/*", main_class, *args,
    ]


def start_kafka() -> None:
    if _read_pid("kafka") is not None:
        return
    ensure_kafka_libs()
    ensure_tls()
    KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    props = KAFKA_DIR / "server.properties"
    props.write_text(_kafka_properties(), encoding="utf-8")
    (KAFKA_DIR / "log4j2.properties").write_text(_log4j2_properties(), encoding="utf-8")
    if not (KAFKA_DIR / "data" / "meta.properties").exists():
        say("formatting Kafka storage (KRaft) with a SCRAM user for the SASL_SSL listener")
        result = subprocess.run(
            _java_cmd("kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props),
                      "--add-scram", f"SCRAM-SHA-512=[name={SASL_USER},password={SASL_PASSWORD}]",
                      heap="-Xmx256m"),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")
    say(f"starting Kafka {KAFKA_VERSION} on {HOST}:{KAFKA_PORT}")
    _spawn("kafka", _java_cmd("kafka.Kafka", str(props)), KAFKA_DIR / "stdout.log", KAFKA_DIR)
    wait_kafka()


def _cluster_id() -> str:
    # A KRaft cluster id is 16 random bytes in URL-safe base64 without padding. One in 64 starts
    # with "-", which the storage tool's argument parser takes for an option: draw another.
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def stop_kafka(kill: bool = False) -> None:
    _stop("kafka", signal.SIGKILL if kill else signal.SIGTERM, timeout=60)


def wait_kafka(timeout: float = 180.0) -> None:
    """Wait until a produce/consume round trip works: an open port is not a working broker."""
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    deadline = time.monotonic() + timeout
    bootstrap = f"{HOST}:{KAFKA_PORT}"
    topic = "__stack_check"
    last_error = "no answer yet"
    dots = 0
    while time.monotonic() < deadline:
        pid = _read_pid("kafka")
        if pid is None:
            raise StackError(f"Kafka exited while starting; see {KAFKA_DIR / 'server.log'} "
                             f"and {KAFKA_DIR / 'stdout.log'}")
        if not _port_open(KAFKA_PORT):
            time.sleep(0.5)
            continue
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            futures = admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=10)
            for future in futures.values():
                try:
                    future.result(timeout=15)
                except KafkaException as exc:
                    if "TOPIC_ALREADY_EXISTS" not in str(exc):
                        raise
            marker = uuid.uuid4().hex.encode()
            producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 10000})
            producer.produce(topic, marker)
            if producer.flush(15) != 0:
                raise StackError("produce not acknowledged")
            consumer = Consumer({
                "bootstrap.servers": bootstrap, "group.id": f"stack-check-{marker.decode()}",
                "auto.offset.reset": "earliest", "enable.auto.commit": False,
            })
            try:
                consumer.subscribe([topic])
                until = time.monotonic() + 30
                while time.monotonic() < until:
                    message = consumer.poll(0.5)
                    if message is not None and not message.error() and message.value() == marker:
                        return
            finally:
                consumer.close()
            last_error = "produced a record but could not consume it back"
        except (KafkaException, StackError) as exc:
            last_error = str(exc)
        dots += 1
        if dots % 5 == 0:
            say(f"still waiting for Kafka ({last_error})")
        time.sleep(1)
    raise StackError(f"Kafka did not serve within {timeout:.0f}s ({last_error}); see {KAFKA_DIR / 'server.log'}")


# --------------------------------------------------------------------------- Redis Cluster
# `up --redis-cluster`: three masters and three replicas of Debian's redis-server in cluster mode,
# beside the single Redis (which stays the default). Ports derive from the single Redis's port:
# the nodes on REDIS_PORT+100..+105, their cluster bus on +110..+115 (set explicitly, so the bus
# never lands on another stack's port as the default port+10000 could).

CLUSTER_BASE_PORT = int(os.environ.get("PISANO_STACK_REDIS_CLUSTER_PORT", str(REDIS_PORT + 100)))
CLUSTER_PORTS = tuple(CLUSTER_BASE_PORT + i for i in range(6))
CLUSTER_DIR = STACK_DIR / "redis-cluster"
# A master silent this long is failed over to its replica: small, for fast failovers in tests.
CLUSTER_NODE_TIMEOUT_MS = 2000


def _cluster_name(port: int) -> str:
    return f"redis-cluster-{port}"


def _cluster_node_conf(port: int) -> str:
    return "\n".join([
        f"bind {HOST}",
        f"port {port}",
        f"cluster-port {port + 10}",
        f"dir {CLUSTER_DIR / str(port)}",
        "daemonize no",
        "protected-mode yes",
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        f"cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}",
        # A replica is promoted however long its link was down: a test kills a master on purpose.
        "cluster-replica-validity-factor 0",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "maxmemory-policy noeviction",
        "lazyfree-lazy-expire yes",
        # Replicas sync straight from memory, at once: a restarted node is a replica again in a second.
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        "",
    ])


def cluster_running() -> bool:
    return all(_read_pid(_cluster_name(port)) is not None for port in CLUSTER_PORTS)


def cluster_url() -> str:
    return f"redis://{HOST}:{CLUSTER_PORTS[0]}/0"


def _node(port: int) -> Any:
    """A client of one node; use it in `with`, so its connection is closed."""
    import redis

    return redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=1)


def node_command(port: int, *command: Any) -> Any:
    """One command to one node (e.g. `CLUSTER FAILOVER` to a replica)."""
    with _node(port) as client:
        return client.execute_command(*command)


def _replication(port: int) -> dict[str, Any]:
    with _node(port) as client:
        return dict(client.info("replication"))


def start_cluster_node(port: int) -> None:
    """Start one node (again): a node that was in the cluster rejoins it from its nodes.conf."""
    if _read_pid(_cluster_name(port)) is not None:
        return
    server = ensure_redis_server()
    directory = CLUSTER_DIR / str(port)
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "redis.conf"
    conf.write_text(_cluster_node_conf(port), encoding="utf-8")
    _spawn(_cluster_name(port), [server, str(conf)], directory / "redis.log", directory)
    _wait_ping(port)


def _wait_ping(port: int, timeout: float = 30.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            if node_command(port, "PING"):
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise StackError(f"Redis Cluster node {port} did not answer PING within {timeout:.0f}s; "
                             f"see {CLUSTER_DIR / str(port) / 'redis.log'}")
        time.sleep(0.1)


def start_redis_cluster() -> None:
    """Start the six nodes, create the cluster the first time, wait until it serves every slot."""
    CLUSTER_DIR.mkdir(parents=True, exist_ok=True)
    for port in CLUSTER_PORTS:
        start_cluster_node(port)
    if int(_cluster_info(CLUSTER_PORTS[0]).get("cluster_slots_assigned", "0")) == 0:
        cli = shutil.which("redis-cli")
        if not cli:
            raise StackError("redis-cli not found (Debian's redis-tools, installed with redis-server)")
        say(f"creating a Redis Cluster: 3 masters, 3 replicas on {HOST}:{CLUSTER_PORTS[0]}-{CLUSTER_PORTS[-1]}")
        result = subprocess.run(
            [cli, "--cluster", "create", *(f"{HOST}:{port}" for port in CLUSTER_PORTS),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise StackError(f"redis-cli --cluster create failed: {result.stdout}{result.stderr}")
    wait_cluster()


def _cluster_info(port: int) -> dict[str, str]:
    info = node_command(port, "CLUSTER INFO")  # redis-py answers a dict of strings
    return {str(key): str(value) for key, value in info.items()}


def cluster_topology(ports: tuple[int, ...] = CLUSTER_PORTS) -> dict[int, list[int]]:
    """Each live master's port and the ports of its replicas whose link is up, as the nodes see it."""
    import redis

    masters: dict[int, list[int]] = {}
    for port in ports:
        if _read_pid(_cluster_name(port)) is None:
            continue
        try:
            info = _replication(port)
        except redis.RedisError:
            continue
        if info.get("role") == "master":
            masters.setdefault(port, [])
    for port in ports:
        if _read_pid(_cluster_name(port)) is None:
            continue
        try:
            info = _replication(port)
        except redis.RedisError:
            continue
        if info.get("role") == "slave" and info.get("master_link_status") == "up":
            master = int(info["master_port"])
            if master in masters:
                masters[master].append(port)
    return masters


def wait_cluster(timeout: float = 60.0, replicas: int = 1) -> None:
    """Until every live node says the cluster is ok, three masters serve the slots, and each has
    `replicas` replicas with their link up (a test then knows whom it kills and who takes over)."""
    import redis

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            live = [port for port in CLUSTER_PORTS if _read_pid(_cluster_name(port)) is not None]
            states = {port: _cluster_info(port).get("cluster_state") for port in live}
            topology = cluster_topology()
            if (all(state == "ok" for state in states.values()) and len(topology) == 3
                    and all(len(r) >= replicas for r in topology.values())):
                return
            last = f"states {states}, masters and replicas {topology}"
        except redis.RedisError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise StackError(f"the Redis Cluster did not settle within {timeout:.0f}s ({last}); see {CLUSTER_DIR}/*/redis.log")


def cluster_master_of(key: str) -> int:
    """The port of the master that serves `key` now."""
    slot = int(node_command(CLUSTER_PORTS[0], "CLUSTER KEYSLOT", key))
    for start, end, master, *_ in node_command(CLUSTER_PORTS[0], "CLUSTER SLOTS"):
        if int(start) <= slot <= int(end):
            return int(master[1])
    raise StackError(f"no master serves slot {slot}")


def kill_cluster_node(port: int) -> None:
    """SIGKILL one node, as a crashed machine: no goodbye to the cluster, writes not yet
    replicated are lost."""
    _stop(_cluster_name(port), signal.SIGKILL)


def freeze_cluster_node(port: int) -> None:
    """SIGSTOP one node, as a machine that hangs: unlike a killed node, its port stays open and
    the kernel accepts connections and takes in what clients send, but nothing answers. A client
    then loses its replies (a timeout, with the commands sent to the other masters of a pipeline
    already run), not a refused connection; after the cluster node timeout its replica takes
    over. `kill_cluster_node` ends a frozen node as it is (SIGKILL needs no SIGCONT), so none of
    what was sent to it runs; `thaw_cluster_node` lets it run on."""
    pid = _read_pid(_cluster_name(port))
    if pid is None:
        raise StackError(f"Redis Cluster node {port} is not running")
    os.kill(pid, signal.SIGSTOP)


def thaw_cluster_node(port: int) -> None:
    """SIGCONT a node `freeze_cluster_node` stopped (nothing if it is not running): it runs what it
    was sent meanwhile and rejoins, as a replica if it was failed over. A frozen node left behind
    would hold up `down` (its SIGTERM waits for the SIGCONT), so a test thaws in its cleanup."""
    pid = _read_pid(_cluster_name(port))
    if pid is not None:
        os.kill(pid, signal.SIGCONT)


def cut_replication(replica: int) -> None:
    """Cut a replica off its master (a stalled link): the replica stays up and in the cluster,
    but the master's newest writes exist nowhere else. It drops the link and cannot log in again
    (a password the master does not have) until `restore_replication`."""
    node_command(replica, "CONFIG SET", "masterauth", "link-cut-by-the-test")
    node_command(replica, "CLIENT KILL TYPE master")


def restore_replication(replica: int) -> None:
    node_command(replica, "CONFIG SET", "masterauth", "")


def wait_failover(killed: int, timeout: float = 30.0) -> int:
    """After a master was killed: wait until its replica is promoted and every slot is served
    again; return the new master's port."""
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            live = [p for p in CLUSTER_PORTS if p != killed and _read_pid(_cluster_name(p)) is not None]
            if all(_cluster_info(p).get("cluster_state") == "ok" for p in live):
                masters = cluster_topology()
                if len(masters) == 3 and killed not in masters:
                    # the new master: the one whose replica list is empty (its replica is gone)
                    orphans = [m for m, r in masters.items() if not r]
                    if orphans:
                        return orphans[0]
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise StackError(f"no replica of the killed master {killed} was promoted within {timeout:.0f}s")


def restart_cluster_node(port: int, timeout: float = 60.0) -> None:
    """Start a killed node again: it rejoins as a replica of the master that replaced it; wait
    until every master has a replica again."""
    start_cluster_node(port)
    wait_cluster(timeout)


def stop_redis_cluster() -> list[str]:
    return [_cluster_name(port) for port in CLUSTER_PORTS if _stop(_cluster_name(port))]


# --------------------------------------------------------------------------- commands


def settings() -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{KAFKA_PORT}",
        "REDIS_URL": f"redis://{HOST}:{REDIS_PORT}/0",
        # The local stack's Pisano is the simulator on plain http.
        "PISANO_ALLOW_INSECURE": "true",
        "PISANO_STACK_KAFKA_SASL_BOOTSTRAP": f"localhost:{KAFKA_SASL_PORT}",
        "PISANO_STACK_KAFKA_SASL_USER": SASL_USER,
        "PISANO_STACK_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "PISANO_STACK_KAFKA_CA": str(TLS_DIR / "ca.pem"),
        "PISANO_STACK_REDIS_ACL_USER": REDIS_ACL_USER,
        "PISANO_STACK_REDIS_ACL_PASSWORD": REDIS_ACL_PASSWORD,
        "PISANO_STACK_REDIS_TLS_URL": f"rediss://{HOST}:{REDIS_TLS_PORT}/0",
        "PISANO_STACK_TLS_DIR": str(TLS_DIR),
        **cluster_settings(),
    }


def cluster_settings() -> dict[str, str]:
    """The Redis Cluster's URL, when it runs (a consumer takes it with REDIS_CLUSTER=true)."""
    return {"PISANO_STACK_REDIS_CLUSTER_URL": cluster_url()} if cluster_running() else {}


def running() -> dict[str, bool]:
    return {"kafka": _read_pid("kafka") is not None, "redis": _read_pid("redis") is not None}


def up(redis_cluster: bool = False) -> dict[str, str]:
    """Start whatever is not running yet; safe to call again."""
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    start_redis()
    start_kafka()
    if redis_cluster:
        start_redis_cluster()
    values = settings()
    (STACK_DIR / "env.json").write_text(json.dumps(values, indent=2), encoding="utf-8")
    return values


def install() -> None:
    """Install what the stack and the tests need, without starting anything: `make test` does it
    first, in the open, since its test workers start their stacks with their output captured."""
    say(f"java: {ensure_java()}")
    say(f"Kafka {KAFKA_VERSION}: {ensure_kafka_libs()}")
    say(f"redis-server: {ensure_redis_server()}")
    say(f"prometheus, promtool: {', '.join(ensure_prometheus())}")


def down() -> None:
    """Stop what `up` started and delete its data (the Kafka download cache stays)."""
    stopped = [name for name in ("kafka", "redis") if _stop(name)]
    stopped += stop_redis_cluster()
    for path in (KAFKA_DIR, REDIS_DIR, CLUSTER_DIR, STACK_DIR / "env.json"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    say(f"stopped {', '.join(stopped) if stopped else 'nothing (it was not running)'}; data removed")


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "status"
    try:
        if command == "up":
            values = up(redis_cluster="--redis-cluster" in argv)
            say("Kafka and Redis are serving:")
            for key in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "PISANO_STACK_REDIS_CLUSTER_URL"):
                if key in values:
                    print(f"  {key}={values[key]}")
            say("stop them with: python scripts/localstack.py down")
        elif command == "down":
            down()
        elif command == "install":
            install()
        elif command == "env":
            for key, value in settings().items():
                print(f"export {key}={value}")
        elif command == "run":
            argv_rest = argv[argv.index("--") + 1:] if "--" in argv else argv[2:]
            if not argv_rest:
                print("usage: localstack.py run -- COMMAND [ARGS...]")
                return 2
            os.execvpe(argv_rest[0], argv_rest, {**os.environ, **settings()})
        elif command == "status":
            for name, alive in running().items():
                print(f"{name}: {'running' if alive else 'stopped'}")
            if cluster_running():
                print(f"redis-cluster: running ({cluster_url()}, REDIS_CLUSTER=true)")
            return 0 if all(running().values()) else 3
        else:
            print(__doc__)
            return 2
    except StackError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
