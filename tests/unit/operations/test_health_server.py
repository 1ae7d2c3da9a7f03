"""The health server's bind address and its bounds on connections (issue 15, point 6).

A client that opens connections and sends nothing, or trickles a byte now and then, must not
hold the server: past HTTP_MAX_CONNECTIONS a newcomer closes the oldest connection that has not
sent its request (503 only when every slot is answering one), and each connection is closed when
its request has not arrived (or its answer not been taken) within HTTP_REQUEST_TIMEOUT_MS in
total. Real sockets on the loopback interface; no stack needed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress

import pytest
from prometheus_client import Gauge

from consumer.config.loading import load_settings
from consumer.errors import ConfigError
from consumer.operations.health import Health, HealthServer, _BoundedHTTPServer
from consumer.operations.metrics import Metrics
from tests.support.consumers import wait_until


@contextmanager
def serving(host: str = "127.0.0.1", metrics: Metrics | None = None, **bounds: float) -> Iterator[HealthServer]:
    health = Health(joined=True)
    server = HealthServer(0, health, metrics or Metrics(), host, **bounds)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def connect(server: HealthServer) -> socket.socket:
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def get(server: HealthServer, path: str) -> tuple[int, bytes]:
    with closing(connect(server)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: pod\r\n\r\n".encode())
        raw = read_all(sock)  # ends: the server closes after one answer, keep-alive or not
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_endpoints_answer_and_close_the_connection() -> None:
    with serving() as server:
        assert get(server, "/healthz") == (200, b'{"alive": true}')
        status, body = get(server, "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True
        status, body = get(server, "/metrics")
        assert status == 200 and b"pisano_sms_" in body
        assert get(server, "/nope")[0] == 404


def test_binds_only_the_configured_address() -> None:
    with serving("127.0.0.1") as server:
        listening = server.server.socket.getsockname()
        assert listening[0] == "127.0.0.1" and server.server.socket.family == socket.AF_INET


def test_ipv6_address_listens_on_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    try:
        server_cm = serving("::1")
        server = server_cm.__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        assert server.server.socket.family == socket.AF_INET6
        assert get(server, "/healthz")[0] == 200
    finally:
        server_cm.__exit__(None, None, None)


def test_idle_connections_beyond_the_cap_make_room_for_a_probe() -> None:
    """Connections that send nothing fill every slot: a probe still gets its answer at once (the
    oldest idle connection is closed for it), long before the idle ones' deadline. A 503 there
    fails the kubelet's probes, and failed liveness probes restart the pod."""
    with serving(max_connections=3, request_timeout_s=30.0) as server:
        idle = [connect(server) for _ in range(3)]
        try:
            time.sleep(0.2)
            started = time.monotonic()
            assert get(server, "/healthz") == (200, b'{"alive": true}')
            assert time.monotonic() - started < 5.0  # not the idle ones' deadline (30 s)
            assert server.server.evicted == 1 and server.server.refused == 0
            assert read_all(idle[0]) == b""  # the oldest was closed for it
        finally:
            for sock in idle:
                sock.close()


@contextmanager
def threads_held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The connections' threads do not run until the event is set: a loaded machine, where the
    accept loop goes on while the threads it started wait for a core."""
    go = threading.Event()
    real = _BoundedHTTPServer.process_request_thread

    def held(self, request, client_address):  # type: ignore[no-untyped-def]
        go.wait(10)
        real(self, request, client_address)

    monkeypatch.setattr(_BoundedHTTPServer, "process_request_thread", held)
    try:
        yield go
    finally:
        go.set()



def test_a_connection_whose_request_arrived_is_not_closed_as_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe that sent its whole request before its thread read it is not an idle connection:
    a newcomer must not close it (the probe would read nothing and fail). Under load, the accept
    loop takes newcomers while the threads it started wait for a core."""
    with threads_held(monkeypatch) as go, serving(max_connections=1, request_timeout_s=30.0) as server:
        probe = connect(server)
        try:
            probe.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            # Its thread has not read the request yet; every slot is taken by it.
            with closing(connect(server)) as newcomer:
                wait_until(lambda: server.server.refused + server.server.evicted == 1, 10.0,
                           "the newcomer was handled", interval=0.005)
                go.set()
                raw = read_all(probe)
                assert raw.startswith(b"HTTP/1.0 200"), raw
                assert server.server.evicted == 0 and server.server.refused == 1
                assert read_all(newcomer).startswith(b"HTTP/1.0 503")
        finally:
            probe.close()


class WatchedSemaphore:
    """The spare pool, saying when the accept loop waits on it."""

    def __init__(self, pool: threading.BoundedSemaphore) -> None:
        self.pool = pool
        self.waited = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if self.pool.acquire(blocking=False):
            return True
        if not blocking:
            return False
        self.waited.set()
        return self.pool.acquire(timeout=timeout)

    def release(self) -> None:
        self.pool.release()


def test_a_newcomer_waits_for_closed_connections_to_end_rather_than_be_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every idle connection closed for a newcomer lends its slot until its thread ends. Under
    load those threads wait for a core, and once `max_connections` of them have not ended yet, a
    probe was answered 503 while every slot was held by idle connections: the probe waits for
    one of them to end instead (it ends without the client: its socket was shut down)."""
    with threads_held(monkeypatch) as go, serving(max_connections=1, request_timeout_s=30.0) as server:
        spare = WatchedSemaphore(server.server._spare)
        server.server._spare = spare  # type: ignore[assignment]
        idle = [connect(server)]
        try:
            idle.append(connect(server))  # closes the first, whose thread does not end yet
            wait_until(lambda: server.server.evicted == 1, 10.0, "the first idle connection was closed", interval=0.005)
            releaser = threading.Thread(target=lambda: spare.waited.wait(10) and go.set(), daemon=True)
            releaser.start()
            assert get(server, "/healthz") == (200, b'{"alive": true}')
            assert spare.waited.is_set(), "the probe never had to wait: the race was not set up"
            assert server.server.evicted == 2 and server.server.refused == 0
        finally:
            go.set()
            for sock in idle:
                sock.close()


def test_a_flood_of_idle_connections_does_not_fail_the_probes() -> None:
    """A neighbour opening idle connections as fast as it can, for as long as the probes run."""
    with serving(max_connections=4, request_timeout_s=30.0) as server:
        stop, opened = threading.Event(), []

        def flood() -> None:
            while not stop.is_set():
                with suppress(OSError):
                    opened.append(connect(server))
                time.sleep(0.002)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        statuses = []
        try:
            for _ in range(20):
                # Each probe comes while the flood holds every slot and is closing its own
                # connections (it has closed a slot's worth since the last probe). Waited for, not
                # assumed from a sleep: on a loaded machine the flood may open few in a while.
                closed = server.server.evicted
                wait_until(lambda closed=closed: server.server.evicted >= closed + 4, 10.0,
                           "the flood filled the slots again", interval=0.005)
                statuses.append(get(server, "/healthz")[0])
        finally:
            stop.set()
            flooder.join()
            for sock in opened:
                sock.close()
        assert statuses == [200] * 20


def test_when_every_slot_is_answering_a_newcomer_is_refused() -> None:
    """Slots held by connections that sent their request (a client that does not read a large
    /metrics) are not closed for a newcomer: it gets 503 at once, and the slots come back at the
    deadline."""
    metrics = Metrics()
    padding = Gauge("test_padding", "fills /metrics", ["name"], registry=metrics.registry)
    for n in range(40_000):
        padding.labels(f"{n:08d}" + "x" * 120).set(n)
    with serving(metrics=metrics, max_connections=2, request_timeout_s=2.0) as server:
        lazy = [connect(server) for _ in range(2)]
        try:
            for sock in lazy:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")  # and never read the answer
            time.sleep(0.5)
            with closing(connect(server)) as extra:
                extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                try:
                    answer = read_all(extra)
                except ConnectionResetError:  # the request was unread when the socket closed
                    answer = b"HTTP/1.0 503"
            assert answer.startswith(b"HTTP/1.0 503")
            assert server.server.refused >= 1 and server.server.evicted == 0
        finally:
            for sock in lazy:
                sock.close()
        for _ in range(50):  # their slots are free again after the deadline
            if get(server, "/healthz")[0] == 200:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the slots were never freed")


def test_a_trickling_request_is_cut_at_the_deadline_not_per_read() -> None:
    """A slowloris: a byte every 0.1 s would satisfy any per-read timeout of 1 s forever."""
    with serving(request_timeout_s=1.0) as server, closing(connect(server)) as sock:
        request = b"GET /healthz HTTP/1.0\r\nX-Padding: " + b"a" * 100 + b"\r\n\r\n"
        sent = 0
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        break  # the server hung up
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < len(request), "the server let a trickling client hold its connection"


def test_a_client_that_never_reads_its_answer_does_not_hold_a_slot() -> None:
    metrics = Metrics()
    # An answer of several MB: more than the socket buffers take, so the write blocks.
    padding = Gauge("test_padding", "fills /metrics", ["name"], registry=metrics.registry)
    for n in range(40_000):
        padding.labels(f"{n:08d}" + "x" * 120).set(n)
    with serving(metrics=metrics, max_connections=1, request_timeout_s=1.0) as server:
        lazy = connect(server)
        lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        try:
            lazy.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")  # and never reads the answer
            # The one slot comes back once the deadline passes.
            for _ in range(50):
                if get(server, "/healthz")[0] == 200:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the slot held by a client that does not read was never freed")
        finally:
            lazy.close()


def test_settings_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_BIND_ADDRESS", "HTTP_MAX_CONNECTIONS", "HTTP_REQUEST_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(None)
    assert str(settings.http_bind_address) == "0.0.0.0"  # as before: every IPv4 interface
    assert (settings.http_max_connections, settings.http_request_timeout_ms) == (16, 5000)
    assert settings.as_dict()["HTTP_BIND_ADDRESS"] == "0.0.0.0"
    monkeypatch.setenv("HTTP_BIND_ADDRESS", "::")
    assert str(load_settings(None).http_bind_address) == "::"
    for name, value in (("HTTP_BIND_ADDRESS", "pod.local"), ("HTTP_MAX_CONNECTIONS", "0"),
                        ("HTTP_REQUEST_TIMEOUT_MS", "10")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):
            load_settings(None)
        monkeypatch.delenv(name)
