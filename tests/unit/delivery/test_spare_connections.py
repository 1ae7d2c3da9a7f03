"""A connection to Pisano is set up before a throttle slot, not at it (spare_connections.py).

The wire's check (test_wire_lateness.py) finds a request late that first had to set up its
connection, whenever setting one up takes longer than the lateness allowed (a distant Pisano, TLS):
every paced request of a fleet whose connections expire between its slots would miss its slot.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from consumer.delivery import request_deadline, spare_connections
from consumer.delivery.batching import Batch
from consumer.delivery.pisano import PisanoClient
from consumer.delivery.slots import CONNECT_LEAD_S, PREPARE_LEAD_S, Slot
from consumer.errors import PisanoTransportError
from tests.support.fakes import CAMPAIGN, FakePisano, event, rig, windows_limiter

BODY = b'{"phone_numbers":["+905321200001"]}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@contextmanager
def server(close_at_once: bool = False, tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[socket.socket]]]:
    """A local server answering 200 to each request (or closing each connection it accepts at
    once), over TLS with `tls`; yields its port and the connections it accepted."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def serve(connection: socket.socket) -> None:
        with suppress(OSError):
            if tls is not None:
                connection = tls.wrap_socket(connection, server_side=True)
        with connection, suppress(OSError):
            data = b""
            while chunk := connection.recv(65536):
                data += chunk
                if data.endswith(BODY):
                    connection.sendall(OK)
                    data = b""

    def accept() -> None:
        with suppress(OSError):
            while True:
                connection, _ = listener.accept()
                accepted.append(connection)
                if close_at_once:
                    connection.close()
                    continue
                threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every name lookup, each taking 0.3 s (a slow resolver: setting up outlasts the slot's 0.1 s)."""
    made: list[float] = []
    real_resolve = request_deadline.resolve

    def slow_resolve(host: str, port: int, timeout: float | None) -> list[str]:
        made.append(time.monotonic())
        time.sleep(0.3)
        return real_resolve(host, port, timeout)

    monkeypatch.setattr(request_deadline, "resolve", slow_resolve)
    return made


def until_the_spare_is_readable(client: PisanoClient) -> None:
    """Until the server's bytes (its close, TLS 1.3's session tickets) reach the client's spare."""
    [(_, spare)] = client._transport._backend.spares._kept.values()  # type: ignore[union-attr]
    ends = time.monotonic() + 5
    while not spare.get_extra_info("is_readable"):
        assert time.monotonic() < ends, "nothing reached the spare"
        time.sleep(0.005)


def client_for(port: int) -> PisanoClient:
    return PisanoClient(f"http://127.0.0.1:{port}", "tok-123456789", timeout_s=2, connect_timeout_s=2,
                        max_connections=1)


def test_a_connection_set_up_before_the_slot_carries_the_post_in_time(lookups: list[float]) -> None:
    with server() as (port, accepted):
        client = client_for(port)
        try:
            client.warm(1.0)
            assert client.send(CAMPAIGN, BODY, leave_by=time.monotonic() + 0.1).http_status == 200
            assert len(lookups) == 1 and len(accepted) == 1, "the POST set up a connection of its own"
            client.warm(1.0)  # the pool holds an idle connection now: nothing to set up
            assert len(lookups) == 1
            assert client.send(CAMPAIGN, BODY, leave_by=time.monotonic() + 0.1).http_status == 200
        finally:
            client.close()
    assert len(accepted) == 1


def test_a_spare_the_server_closed_is_not_used(lookups: list[float]) -> None:
    with server(close_at_once=True) as (port, accepted):
        client = client_for(port)
        try:
            client.warm(1.0)
            until_the_spare_is_readable(client)  # the server's close arrives
            with pytest.raises(PisanoTransportError):  # this server closes every connection, the new one too
                client.send(CAMPAIGN, BODY)
        finally:
            client.close()
    assert len(lookups) == 2 and len(accepted) == 2, "the closed spare was handed to the request"


def test_a_stale_spare_is_not_used(lookups: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spare_connections, "SPARE_TTL_S", 0.05)
    with server() as (port, accepted):
        client = client_for(port)
        try:
            client.warm(1.0)
            time.sleep(0.1)
            assert client.send(CAMPAIGN, BODY).http_status == 200
        finally:
            client.close()
    assert len(lookups) == 2 and len(accepted) == 2


def test_a_sender_sets_its_connection_up_a_lead_before_its_slot() -> None:
    warmed_at: list[float] = []

    class Timed(FakePisano):
        def warm(self, within_s: float) -> None:
            warmed_at.append(time.monotonic())
            super().warm(within_s)

    pisano = Timed()
    r = rig(pisano, limiter=windows_limiter("20/1s"))
    slot_at = time.monotonic() + CONNECT_LEAD_S + 0.3
    r.sender.process(Batch(CAMPAIGN, [event(1)]), slot=Slot(slot_at))
    assert r.kinds() == {"e1": {"delivered"}}
    assert len(warmed_at) == 1
    assert slot_at - CONNECT_LEAD_S - 0.01 <= warmed_at[0] < slot_at - PREPARE_LEAD_S
    assert CONNECT_LEAD_S - PREPARE_LEAD_S - 0.1 < pisano.warmed[0] <= CONNECT_LEAD_S - PREPARE_LEAD_S


def test_over_tls_the_spare_is_secured_once_and_carries_the_post(lookups: list[float],
                                                                 tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not found: it makes the test server's certificate")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-subj", "/CN=localhost", "-days", "1", "-keyout", "key.pem", "-out", "cert.pem"],
                   cwd=tmp_path, check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    with server(tls=context) as (port, accepted):
        client = PisanoClient(f"https://127.0.0.1:{port}", "tok-123456789", timeout_s=2, connect_timeout_s=2,
                              max_connections=1, tls_verify=False)
        try:
            client.warm(1.0)
            until_the_spare_is_readable(client)  # TLS 1.3: the server's session tickets, unread
            assert client.send(CAMPAIGN, BODY, leave_by=time.monotonic() + 0.1).http_status == 200
        finally:
            client.close()
    assert len(lookups) == 1 and len(accepted) == 1


def test_setting_up_a_spare_keeps_to_its_time_across_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pisano unreachable (SYNs dropped) behind several addresses (a load balancer's, A and AAAA):
    each address given the whole time would hold the sender past its slot, every slot: the slot
    wasted, a new one taken and missed the same way, the request never sent nor failed."""
    monkeypatch.setattr(request_deadline, "resolve", lambda host, port, timeout: ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    backend = request_deadline._DeadlineBackend(spare_connections.Spares())

    def blackholed(host: str, port: int, timeout: float | None = None, *args: object) -> object:
        time.sleep(timeout or 0)
        raise request_deadline.httpcore.ConnectTimeout("timed out")

    monkeypatch.setattr(backend.backend, "connect_tcp", blackholed)
    started = time.monotonic()
    backend.set_up("pisano.example", 443, 0.3, None)
    assert time.monotonic() - started < 0.4


def test_an_idle_connection_expiring_before_the_slot_is_no_connection_for_it(lookups: list[float]) -> None:
    """httpx keeps an idle connection 5 s: one idle 4.5 s when the sender asks, a second before its
    slot, is gone at the slot. Counted as there, it left the POST to set one up at the slot and miss
    it, and with requests 5 to 6 s apart (a paced sender), every one of them."""
    with server() as (port, accepted):
        client = client_for(port)
        try:
            assert client.send(CAMPAIGN, BODY).http_status == 200
            [connection] = client._transport._pool.connections
            connection._connection._expire_at = time.monotonic() + 0.3  # type: ignore[attr-defined]
            client.warm(1.0)
            time.sleep(0.4)  # the slot: the idle connection has expired
            assert client.send(CAMPAIGN, BODY, leave_by=time.monotonic() + 0.1).http_status == 200
        finally:
            client.close()
    assert len(lookups) == 2 and len(accepted) == 2


def test_a_spare_for_an_internationalised_name_is_the_one_the_pool_asks_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpcore asks for a connection by the name's ASCII form (IDNA): a spare kept under its
    Unicode form was never taken, and every POST set up its connection at its slot."""
    asked: list[str] = []

    def local(host: str, port: int, timeout: float | None) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(request_deadline, "resolve", local)
    with server() as (port, accepted):
        client = PisanoClient(f"http://münchen.example:{port}", "tok-123456789", timeout_s=2, connect_timeout_s=2,
                              max_connections=1)
        try:
            client.warm(1.0)
            assert client.send(CAMPAIGN, BODY).http_status == 200
        finally:
            client.close()
    assert asked == ["xn--mnchen-3ya.example"] and len(accepted) == 1


def test_a_spare_set_up_while_the_client_closes_is_closed_too() -> None:
    """A sender's warm may finish after the transport closed its spares (a shutdown): the spare
    it keeps then would stay open, a connection to Pisano no one closes."""
    spares = spare_connections.Spares()
    spares.close()
    left, right = socket.socketpair()
    with right:
        stream = request_deadline.httpcore._backends.sync.SyncStream(left)
        spares.keep("pisano.example", 443, stream)
        assert left.fileno() == -1, "a spare kept after close stayed open"
        assert spares.take("pisano.example", 443) is None
