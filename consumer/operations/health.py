"""Health and metrics over HTTP on HTTP_PORT, and the probe that keeps them current.

    /healthz  alive: the poll loop went round within the last LIVENESS_S seconds, and every
              thread its progress depends on (`Health.watch`: the senders, this probe, the
              limiter heartbeat, the token watchers, the send-window clock) still runs (a stuck
              loop or a dead thread gets the pod restarted; a slow Pisano or a Redis outage does
              not)
    /readyz   ready: joined the consumer group (an assignment arrived, possibly empty: a replica
              beyond the partition count is healthy and must not block a rollout), Kafka and
              Redis reachable (on a cluster, every master: `_check_masters`), the schema
              registry answering, the Pisano circuit closed, no record waiting for an outcome
              longer than STUCK_RECORD_MS, not shutting down
    /metrics  Prometheus text format
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.config.secrets import mask_urls_in_text
from consumer.delivery.destination import Destination
from consumer.errors import StateStoreError
from consumer.operations.logs import cut, redact_text
from consumer.operations.metrics import THREAD_ROLES, Metrics
from consumer.operations.threads import LongLivedThread, long_lived
from consumer.state.eviction import RedisInfoDenied, eviction_problem, read_memory
from consumer.state.limiter import LimiterHeartbeat
from consumer.state.origins import ORIGIN_CHECK_INTERVAL_S, OriginWatch
from consumer.state.redis import REDIS_ERRORS
from consumer.state.redis_errors import describe

log = logging.getLogger(__name__)
CIRCUIT_VALUES = {"closed": 0, "open": 1, "half_open": 2}

LIVENESS_S = 60.0
PROBE_INTERVAL_S = 2.0
UTILISATION_INTERVAL_S = 5.0
MEMORY_INTERVAL_S = 15.0


@dataclass
class Health:
    """Written by the poll loop and the probe, read by the HTTP server."""

    joined: bool = False
    kafka_ok: bool = True
    redis_ok: bool = True
    circuit_open: bool = False
    registry_ok: bool = True
    stuck: bool = False  # a record has had no outcome for STUCK_RECORD_MS
    stopping: bool = False
    loop_at: float = field(default_factory=time.monotonic)
    # The threads the pipeline's progress depends on (`watch`), their roles, and what ended those that ended.
    _watched: dict[LongLivedThread, str] = field(default_factory=dict, init=False, repr=False)
    _ended: dict[LongLivedThread, str] = field(default_factory=dict, init=False, repr=False)
    _threads_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def alive(self) -> bool:
        """The poll loop went round lately and no watched thread has ended (while stopping, they
        end on purpose). Asked by the kubelet every few seconds, never on an event's path."""
        return time.monotonic() - self.loop_at < LIVENESS_S and (self.stopping or not self.ended_threads())

    def watch(self, *threads: LongLivedThread) -> None:
        """Threads the pipeline's progress depends on: once one has ended, however (an exception
        that is not an `Exception`: a SystemExit from a library, a plug-in's own BaseException, a
        leaked GeneratorExit or CancelledError), the replica is not alive, and Kubernetes restarts
        it. A dead sender leaves the batch it was sending without an outcome, its records
        uncommitted for good, so only a restart (they are read again) gets the partitions moving;
        a replaced thread would not. A dead token watcher keeps a rotated-away token, a dead
        send-window clock freezes quiet hours: the same.

        Only a `LongLivedThread` (consumer/operations/threads.py `long_lived`, the one way the
        consumer makes a thread that lives as long as the process): it carries its role (a
        bounded label of `pisano_sms_threads_ended`, metrics.THREAD_ROLES) and says what ended
        it, so it may be watched before or after it started, even once it ended. What ended it is
        logged in one error line naming the thread and the exception (redacted: a plug-in's
        exception may quote a record), instead of the bare traceback threading prints on stderr
        (none at all for a SystemExit). Watching a thread again changes nothing. Costs nothing
        per event: `alive` looks at the list."""
        for thread in threads:
            if not isinstance(thread, LongLivedThread):
                raise TypeError(f"thread {thread.name} is a plain thread: make it with "
                                "consumer.operations.threads.long_lived to watch it")
            if thread.role not in THREAD_ROLES:
                raise ValueError(f"thread {thread.name}: role {thread.role!r} is not one of {THREAD_ROLES}")
            with self._threads_lock:
                if thread in self._watched:
                    continue
                self._watched[thread] = thread.role
            thread.when_ended(self._thread_ended)

    def watched_threads(self) -> list[str]:
        """The names of the watched threads."""
        with self._threads_lock:
            return [t.name for t in self._watched]

    def ended_threads(self) -> dict[str, str]:
        """Watched threads that have ended, by name: what ended each (an exception's type, or
        `returned`: its loop was asked to stop)."""
        return {t.name: kind for t, (_, kind) in self._ended_watched().items()}

    def ended_roles(self) -> dict[str, int]:
        """How many watched threads of each role (every one of THREAD_ROLES) have ended while that
        fails liveness: none while stopping, when they end on purpose (`pisano_sms_threads_ended`)."""
        counts = dict.fromkeys(THREAD_ROLES, 0)
        if not self.stopping:
            for role, _ in self._ended_watched().values():
                counts[role] += 1
        return counts

    def _ended_watched(self) -> dict[LongLivedThread, tuple[str, str]]:
        with self._threads_lock:
            watched, ended = dict(self._watched), dict(self._ended)
        return {t: (role, ended.get(t, "returned")) for t, role in watched.items()
                if t in ended or (t.ident is not None and not t.is_alive())}

    def _thread_ended(self, thread: LongLivedThread, exc: BaseException) -> None:
        kind = type(exc).__name__
        with self._threads_lock:
            self._ended[thread] = kind
        text = redact_text(str(exc))[:300]
        log.error("thread %s ended by %s; this replica is no longer alive: /healthz answers 503 and Kubernetes "
                  "restarts it (what it did not commit is read again)", thread.name,
                  f"{kind}: {text}" if text else kind, exc_info=exc, extra={"reason": "thread_ended"})

    def observe_oldest_record(self, age_s: float, limit_s: float) -> None:
        """The age of the oldest record without an outcome; past `limit_s` (STUCK_RECORD_MS) the
        replica is not ready."""
        stuck = age_s >= limit_s
        if stuck and not self.stuck:
            log.error("a record has had no outcome for %.0fs (STUCK_RECORD_MS=%.0f): not ready; look in this log "
                      "for dead-letter failures (DLQ_TOPIC), Redis or schema registry errors", age_s, limit_s * 1000)
        elif self.stuck and not stuck:
            log.info("the oldest record without an outcome is %.0fs old: ready again", age_s)
        self.stuck = stuck

    def ready(self) -> bool:
        return (self.joined and self.kafka_ok and self.redis_ok and self.registry_ok and not self.circuit_open
                and not self.stuck and not self.stopping)

    def report(self) -> dict[str, Any]:
        return {"ready": self.ready(), "alive": self.alive(), "joined_group": self.joined, "kafka": self.kafka_ok,
                "redis": self.redis_ok, "schema_registry": self.registry_ok, "circuit_open": self.circuit_open,
                "stuck_record": self.stuck, "stopping": self.stopping, "ended_threads": self.ended_threads()}


class HealthProbe:
    """Checks Redis and Kafka reachability in the background, and the throttle's utilisation."""

    def __init__(self, health: Health, metrics: Metrics, *, redis_client: Any, producer: Any, dlq_topic: str,
                 destinations: list[Destination], heartbeat: LimiterHeartbeat | None = None,
                 allow_eviction: bool = False, origins: OriginWatch | None = None) -> None:
        self.health = health
        self.metrics = metrics
        self.redis = redis_client
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.destinations = destinations
        # Its own thread: this probe's round can take seconds (Kafka, a circuit probe), and a
        # heartbeat must reach the limiter within its grace.
        self.heartbeat = heartbeat
        self.allow_eviction = allow_eviction
        # Whether Redis lost the dedup or contact state (consumer/state/origins.py)
        self.origins = origins
        self._memory_at = 0.0
        self._origins_at = 0.0
        self._origins_thread: threading.Thread | None = None  # the check running, one at a time
        self._origins_unread: str | None = None  # why the origins could not be read, as last said
        self._eviction_problem: str | None = None
        # Redis Cluster masters that did not answer, and whether the cluster was down, as last said
        self._masters_failed: tuple[list[str], bool] = ([], False)
        self._stop = threading.Event()
        self._thread = long_lived(self._run, name="health-probe", role="health_probe")

    def start(self) -> None:
        # Both matter for progress: without this probe an open circuit is never probed from here
        # and readiness freezes; without the heartbeat a lost throttle state is not proven
        # within its grace. Either ending makes the replica not alive (`Health.watch`). A build
        # watches both already (they are long-lived threads made while building); a probe made
        # elsewhere is watched here (watching again changes nothing; a heartbeat without
        # limiters never starts, and a thread never started never ends).
        self.health.watch(self._thread, *([self.heartbeat.thread] if self.heartbeat else []))
        self._thread.start()
        if self.heartbeat:
            self.heartbeat.start()

    def stop(self) -> None:
        self._stop.set()
        if self.heartbeat:
            self.heartbeat.stop()

    def _run(self) -> None:
        last_utilisation = 0.0
        while not self._stop.wait(PROBE_INTERVAL_S):
            try:
                last_utilisation = self._round(last_utilisation)
            except Exception:  # the probe must outlive any surprise, or readiness freezes
                log.exception("health probe error; continuing")

    def _round(self, last_utilisation: float) -> float:
        """One round of checks; returns when the throttle utilisation was last read."""
        self._check_redis()
        self._check_kafka()
        self._check_circuit()
        now = time.monotonic()
        if self.health.redis_ok and now - self._memory_at >= MEMORY_INTERVAL_S:
            self._memory_at = now
            self._check_memory()
        if self.origins and self.health.redis_ok and not self._origins_running() \
                and now - self._origins_at >= ORIGIN_CHECK_INTERVAL_S:
            # On a thread of its own: on a cluster a master that hangs costs one timeout per
            # command of its buckets (redis-py's cluster pipeline retries them one by one), minutes
            # in which this round's other checks (reachability, the circuit's probe) must go on.
            self._origins_thread = threading.Thread(target=self._origins_round, args=(self.origins,),
                                                    name="origin-check", daemon=True)
            self._origins_thread.start()
        if not self.health.redis_ok or now - last_utilisation < UTILISATION_INTERVAL_S:
            return last_utilisation
        with contextlib.suppress(StateStoreError):
            for destination in self.destinations:
                for window, share in destination.limiter.utilisation().items():
                    self.metrics.throttle_utilisation.labels(str(window), destination.name).set(share)
        return now

    def _check_redis(self) -> None:
        if isinstance(self.redis, redis.RedisCluster):
            cluster: Any = self.redis  # redis-py's cluster methods are untyped
            masters = list(cluster.get_primaries())
            if masters:  # none known: the client has no slot map yet, the ping below says why
                self._check_masters(masters)
                return
        cause = ""
        try:
            self.redis.ping()
            ok = True
        except REDIS_ERRORS as exc:
            # "Unreachable" only when Redis gave no answer: a refusal (a wrong password, a replica,
            # a full Redis) names itself and what to fix (consumer/state/redis_errors.py).
            ok, cause = False, describe(exc, "the health check")
        if ok != self.health.redis_ok:
            if ok:
                log.info("Redis answers again")
            else:
                log.error("%s; nothing is sent or committed until it answers", cause)
        self.health.redis_ok = ok

    def _check_masters(self, masters: list[Any]) -> None:
        """Redis Cluster: every master pinged. A keyless PING goes to one node the client picks at
        random, so with one master not answering the verdict flipped from round to round, and a
        round that picked it said nothing could be sent, though the other masters serve their
        slots. Not ready while any master does not answer: a batch's claim (its ids' and phones'
        buckets, spread over every master) and the partitions whose marks are there wait for it,
        so this replica cannot do its work (README "Health": Redis reachable). Said once per
        change of which masters do not answer. Pinged through the cluster client: a failed ping
        has it read the slot map again, so once a replica took over, the next round pings it."""
        cluster: Any = self.redis  # redis-py's cluster methods are untyped
        failed: dict[str, BaseException] = {}
        for node in masters:
            try:
                cluster.execute_command("PING", target_nodes=node)
            except REDIS_ERRORS as exc:
                failed[node.name] = exc
        names = sorted(failed)
        answering = [n for n in masters if n.name not in failed]
        # Whether the others still serve their keys: once the cluster has marked the silent master
        # failed (cluster-node-timeout), a cluster that requires full coverage (Redis's default)
        # refuses every key (CLUSTERDOWN) until its replica takes over, though PING still answers.
        down = bool(failed and answering) and self._cluster_down(answering[0])
        said = (names, down)
        if said != self._masters_failed:
            self._say_masters(failed, names, answering, down)
        self._masters_failed = said
        self.health.redis_ok = not failed

    def _cluster_down(self, node: Any) -> bool:
        """Whether a master that answers says the cluster is down (CLUSTER INFO cluster_state:fail);
        False when it cannot say (the pings' verdict stands)."""
        cluster: Any = self.redis
        try:
            info = cluster.execute_command("CLUSTER INFO", target_nodes=node)
        except REDIS_ERRORS:
            return False
        return isinstance(info, dict) and str(info.get("cluster_state", "ok")) == "fail"

    def _say_masters(self, failed: dict[str, BaseException], names: list[str], answering: list[Any],
                     down: bool) -> None:
        """One line when the masters that do not answer change (or the cluster goes down or up)."""
        listed = ", ".join(names)
        if not failed:
            log.info("every Redis Cluster master answers again")
            return
        if not answering:
            log.error("%s; nothing is sent or committed until they answer",
                      describe(failed[names[0]], f"the health check of every Redis Cluster master ({listed})"))
            return
        one = len(names) == 1
        which = f"master {listed}" if one else f"masters {listed}"
        until = "it answers or its replica takes over" if one else "they answer or their replicas take over"
        others = ("the other master answers" if len(answering) == 1
                  else f"the other {len(answering)} masters answer") + f" ({', '.join(n.name for n in answering)})"
        cause = describe(failed[names[0]], f"the health check of Redis Cluster {which}")
        if down:
            log.error("%s; %s, but the cluster has marked it failed and refuses every key (CLUSTERDOWN: "
                      "cluster_state:fail, its slots have no master): nothing is sent or committed until %s; not "
                      "ready meanwhile. Check that node and its replica: CLUSTER NODES on a master that answers "
                      "shows them (a master without a replica is not replaced: restart it)", cause, others, until)
            return
        log.error("%s; %s and the keys in their slots still serve, but whatever needs the slots of %s waits (a "
                  "batch with an event or phone whose bucket is there, the dead-letter and receipt marks of "
                  "partitions whose keys are there, a throttle or circuit kept there) until %s (after the "
                  "cluster's cluster-node-timeout); not ready meanwhile. Check that node and its replica: CLUSTER "
                  "NODES on a master that answers shows whether it is marked fail and who took over",
                  cause, others, which, until)

    def _check_memory(self) -> None:
        """Redis memory use for the alert, and the eviction policy again: it can change at run time."""
        try:
            memory = read_memory(self.redis)
        except RedisInfoDenied:
            return  # not allowed to read it: the start said so
        except REDIS_ERRORS:
            return  # Redis down: reported on its own
        self.metrics.redis_memory_used_ratio.set(memory.used_ratio)
        problem = eviction_problem(memory)
        if problem != self._eviction_problem and problem:
            log.error("%s%s", "REDIS_ALLOW_EVICTION=true, but " if self.allow_eviction else "", problem,
                      extra={"reason": "redis_eviction"})
        self._eviction_problem = problem

    def _origins_running(self) -> bool:
        return self._origins_thread is not None and self._origins_thread.is_alive()

    def _origins_round(self, origins: OriginWatch) -> None:
        try:
            self._check_origins(origins)
        except Exception:  # asked again at the next interval
            log.exception("origins check error; continuing")
        finally:
            # The interval counts from the end of a check: a slow check's counts landing close to
            # the next one's would let the last second an AOF loses take both (origins.py compares
            # with the check before the last).
            self._origins_at = time.monotonic()

    def _check_origins(self, origins: OriginWatch) -> None:
        try:
            losses = origins.check()
        except StateStoreError as exc:
            # Asked again next time. Said, once: Redis may answer the ping and still refuse these
            # calls, and a watch that cannot read must not pass for one that found nothing lost.
            self._say_origins_unread(str(exc))
            return
        self._say_origins_unread(origins.unread)
        for loss in losses:
            self.metrics.redis_state_lost.labels(loss.state).inc(loss.lost)
            log.error("%s", loss.message(), extra={"reason": "redis_state_lost"})

    def _say_origins_unread(self, unread: str | None) -> None:
        if unread and not self._origins_unread:
            log.warning("the buckets' origins cannot be read (%s): Redis losing the dedup or contact state there "
                        "goes unsaid until they can (README, \"When Redis loses its data\")", unread,
                        extra={"reason": "redis_state_unchecked"})
        elif self._origins_unread and not unread:
            log.info("the buckets' origins are read again", extra={"reason": "redis_state_unchecked"})
        self._origins_unread = unread

    def _check_circuit(self) -> None:
        states = []
        for destination in self.destinations:
            try:
                # A slot the probe gives up counts as a sender's does (throttle_slots_wasted_total).
                wasted = self.metrics.throttle_wasted.labels(destination.name).inc
                destination.circuit.probe_if_due(destination.probe(wasted))
                state, _ = destination.circuit.state()
            except StateStoreError:
                return  # Redis down is reported on its own
            states.append(state)
            self.metrics.circuit_state.labels(destination.name).set(CIRCUIT_VALUES[state])
            # One broken campaign does not make the replica unready: the others still deliver.
            self.metrics.campaign_circuits_open.labels(destination.name).set(destination.campaigns.open_count())
        # Not ready only when no destination can take traffic: one account's wrong token must
        # not take the replicas serving the others out of the load balancer.
        self.health.circuit_open = bool(states) and "closed" not in states

    def _check_kafka(self) -> None:
        cause = ""
        try:
            self.producer.list_topics(self.dlq_topic, timeout=5)
            ok = True
        except Exception as exc:  # KafkaException; any failure here only means "not reachable now"
            ok, cause = False, _cause(exc)
        if ok != self.health.kafka_ok:
            if ok:
                log.info("Kafka is reachable again")
            else:
                log.error("Kafka is unreachable (%s); check that the brokers are up, KAFKA_BOOTSTRAP_SERVERS and "
                          "the security settings", cause)
        self.health.kafka_ok = ok


def _cause(exc: BaseException) -> str:
    """The client's own words, which may quote a URL with its password: masked, and kept short."""
    return cut(mask_urls_in_text(f"{type(exc).__name__}: {exc}"), 300)  # no part of a number left at the cut


class HealthServer:
    """/healthz, /readyz and /metrics on one port, with bounded connections.

    A thread per connection, so without bounds a client that opens connections and sends
    nothing (or a byte now and then: a slowloris) would pile up threads and starve the kubelet's
    probes. Here at most `max_connections` are served at once; each connection must deliver its
    request and take its answer within `request_timeout_s` in total (not per read), and is closed
    after one answer. A connection beyond the cap makes room by closing the oldest connection that
    has not sent its whole request yet: a client holding idle connections open loses them to the
    newcomers instead of making every kubelet probe fail (a failed liveness probe restarts the
    pod). Only when every slot is answering a request is a newcomer answered 503 and closed.
    The NetworkPolicy (chart) keeps strangers off the port; these bounds keep a misbehaving
    neighbour from taking the pod down with it.

    On a loaded machine the accept loop runs ahead of the threads it starts: a connection whose
    request has arrived but is not read yet is not idle (closing it would fail a probe), and when
    the connections already closed for newcomers have not ended yet, a newcomer waits for one of
    them (up to _CLOSED_END_WAIT_S) rather than being refused while idle ones hold the slots.
    """

    def __init__(self, port: int, health: Health, metrics: Metrics, host: str = "0.0.0.0", *,
                 max_connections: int = 16, request_timeout_s: float = 5.0) -> None:
        handler = _handler(health, metrics, request_timeout_s)
        self.server = _BoundedHTTPServer((host, port), handler, max_connections=max_connections)
        self.host = host
        self.port = self.server.server_address[1]
        self.health = health
        # Watched like the pipeline's threads: once it ended nobody answers the kubelet, which
        # restarts the pod by itself; the watch says why, in the one line (`Health.watch`).
        self._thread = long_lived(self.server.serve_forever, name="health-http", role="other")

    def start(self) -> None:
        self.health.watch(self._thread)
        self._thread.start()
        log.info("health and metrics on %s port %d (/healthz, /readyz, /metrics)", self.host, self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# How long a newcomer beyond the cap waits for a connection closed for an earlier one to end
# (its thread waiting for a core) before it is refused. The accept loop waits meanwhile, for the
# server's own threads, never for a client.
_CLOSED_END_WAIT_S = 1.0


def _request_pending(sock: socket.socket) -> bool:
    """The end of a request head is in the socket, unread: the client sent its request."""
    # Through a duplicate without a timeout: the connection's own object may carry one its
    # thread set, and Python waits out a timeout for data before any recv, MSG_DONTWAIT or not.
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as peek:
            pending = peek.recv(_PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing to read (BlockingIOError), or closed: idle
        return False
    return b"\r\n\r\n" in pending or b"\n\n" in pending


_PEEK_BYTES = 8192


# Sent, without reading anything, to a connection beyond the cap.
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_BUSY_LOG_INTERVAL_S = 60.0


class _BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Connections waiting to be accepted while the accept loop works; a probe that lands here
    # waits microseconds, since accepting (or refusing) never blocks on a client (at most on the
    # end of a connection closed for an earlier newcomer: _CLOSED_END_WAIT_S).
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 max_connections: int) -> None:
        # IPv6 literals ("::" listens on both families where the kernel allows dual stack).
        self.address_family = socket.AF_INET6 if ipaddress.ip_address(address[0]).version == 6 else socket.AF_INET
        self._slots = threading.BoundedSemaphore(max_connections)
        # Borrowed by newcomers that closed an idle connection, until its thread has ended: at
        # most twice the cap of threads, ever.
        self._spare = threading.BoundedSemaphore(max_connections)
        # Served connections whose request has not arrived yet, oldest first (dicts keep order),
        # and the pool each connection's slot came from.
        self._waiting: dict[Any, None] = {}
        self._pools: dict[Any, threading.BoundedSemaphore] = {}
        self._waiting_lock = threading.Lock()
        self.max_connections = max_connections
        self.refused = 0
        self.evicted = 0
        self._refused_logged_at = -_BUSY_LOG_INTERVAL_S
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._slots.acquire(blocking=False):
            pool = self._slots
        elif self._spare.acquire(blocking=False) or (self._idle_waiting() and self._spare.acquire(
                timeout=_CLOSED_END_WAIT_S)):
            # A newcomer beyond the cap takes the slot of the connection it closes; that one's
            # thread ends within milliseconds and gives back the spare slot in its stead. On a
            # loaded machine those threads may all still wait for a core: with an idle
            # connection to close, the newcomer waits for one to end (its socket is shut down:
            # it ends without its client), not a 503 that fails the probe.
            taken = self._evict_oldest_waiting()
            if taken is None:
                self._spare.release()
                self._refuse(request)  # every slot is answering a request
                return
            pool = taken
        else:
            self._refuse(request)
            return
        with self._waiting_lock:
            self._waiting[request] = None
            self._pools[request] = pool
        try:
            super().process_request(request, client_address)  # hands it to a thread
        except BaseException:
            self._done(request)
            raise

    def _idle_waiting(self) -> bool:
        with self._waiting_lock:
            return any(not _request_pending(sock) for sock in self._waiting)

    def _evict_oldest_waiting(self) -> threading.BoundedSemaphore | None:
        """Close the oldest connection without a request; its slot's pool (the caller holds a
        spare one, which the closed connection's thread releases when it ends).

        A connection whose whole request head has arrived but whose thread has not read it yet
        (a loaded machine: the thread waits for a core while the accept loop goes on) is not
        idle: closing it would fail a probe that did nothing wrong."""
        with self._waiting_lock:
            oldest = next((sock for sock in self._waiting if not _request_pending(sock)), None)
            if oldest is None:
                return None
            del self._waiting[oldest]
            taken, self._pools[oldest] = self._pools[oldest], self._spare
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)  # its blocked read returns at once; its thread ends
        self.evicted += 1
        return taken

    def request_received(self, request: Any) -> None:
        """The connection's request has arrived: it is no longer one to close for a newcomer."""
        with self._waiting_lock:
            self._waiting.pop(request, None)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: Any) -> None:
        with self._waiting_lock:
            self._waiting.pop(request, None)
            pool = self._pools.pop(request)
        pool.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up or reset mid-answer: its problem, not a traceback on stderr.
        log.debug("health server: a connection failed", exc_info=True)

    def _refuse(self, request: socket.socket) -> None:
        self.refused += 1
        with contextlib.suppress(OSError):
            request.setblocking(False)  # a fresh socket's buffer takes these bytes; never wait
            request.send(_BUSY)
        self.shutdown_request(request)
        now = time.monotonic()
        if now - self._refused_logged_at >= _BUSY_LOG_INTERVAL_S:
            self._refused_logged_at = now
            log.warning("health server: %d connections open (HTTP_MAX_CONNECTIONS), refusing more with 503 "
                        "(%d so far); a client is holding connections open", self.max_connections, self.refused)


class _DeadlineReader(io.RawIOBase):
    """The socket as a raw stream whose reads all end by one deadline (per read, a client
    sending a byte every few seconds would hold the connection forever)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


def _handler(health: Health, metrics: Metrics, request_timeout_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so no idle keep-alive connection holds a slot.
        protocol_version = "HTTP/1.0"

        def setup(self) -> None:
            self.deadline = time.monotonic() + request_timeout_s
            super().setup()
            self.rfile.close()  # the plain socket file: replaced by one that honours the deadline
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self.deadline))

        def parse_request(self) -> bool:
            parsed = super().parse_request()
            if parsed:
                self.server.request_received(self.connection)  # type: ignore[attr-defined]
            return parsed

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                for role, ended in health.ended_roles().items():  # read at the scrape: current even if the probe died
                    metrics.threads_ended.labels(role).set(ended)
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = health.alive()
                self._send(200 if ok else 503, json.dumps({"alive": ok}).encode(), "application/json")
            elif path == "/readyz":
                self._send(200 if health.ready() else 503, json.dumps(health.report()).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            # The answer too must be taken by the deadline: a client that stops reading /metrics
            # would otherwise block this thread on a full send buffer.
            self.connection.settimeout(max(self.deadline - time.monotonic(), 0.001))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not news
            pass

    return Handler
