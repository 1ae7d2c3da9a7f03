"""Name resolution keeps to a request's deadline too.

getaddrinfo takes no timeout and runs inside httpcore's connect: a resolver that does not answer
would keep a sender thread past its request's deadline, and past the claims' lease sized from it
(README, "DEDUP_CLAIM_LEASE_MS"). The resolver is replaced here (socket.getaddrinfo, for one name
only), so no network is needed.
"""

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.delivery import resolution
from consumer.delivery.pisano import PisanoClient
from consumer.delivery.resolution import literal
from consumer.errors import PisanoTransportError
from tests.unit.delivery.test_pisano_deadline import (
    BODY,
    CAMPAIGN,
    OK,
    SLACK_S,
    TOKEN,
    read_request,
    send_timed,
    server,
)

NAME = "pisano.test"  # a reserved name (RFC 2606): no resolver knows it, only the one put in here
HANG_S = 5.0  # how long the hanging resolver takes: far past the deadlines below


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[float]]]:
    """socket.getaddrinfo resolving NAME to 127.0.0.1 once `answer` is set (at most HANG_S later);
    yields `answer` and a list of the lookups of NAME asked. Other names resolve as usual."""
    system = socket.getaddrinfo
    answer = threading.Event()
    asked: list[float] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != NAME:
            return system(host, port, *args, **kwargs)
        asked.append(1.0)
        answer.wait(HANG_S)
        return system("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield answer, asked
    finally:
        answer.set()  # no lookup thread left waiting after the test


def answer_ok(connection: socket.socket, stop: threading.Event) -> None:
    while read_request(connection):
        connection.sendall(OK)


def test_a_resolver_that_does_not_answer_is_cut_within_the_deadline_as_not_sent(
        resolver: tuple[threading.Event, list[float]]) -> None:
    with server(answer_ok) as (port, accepted):
        client = PisanoClient(f"http://{NAME}:{port}", TOKEN, timeout_s=0.5, connect_timeout_s=0.5,
                              max_connections=1)
        elapsed, error = send_timed(client)
    assert elapsed < client.deadline_s + SLACK_S, f"the request ran {elapsed:.1f} s, deadline {client.deadline_s} s"
    # Nothing left: retried or dead-lettered as transport_error, never ambiguous.
    assert error is not None and not error.ambiguous, error
    assert str(error).startswith("ConnectTimeout: request not sent"), error
    assert f"resolving {NAME}" in str(error) and "check DNS" in str(error), error
    assert accepted == []


def test_a_hanging_lookup_is_shared_by_the_requests_meanwhile(
        resolver: tuple[threading.Event, list[float]]) -> None:
    """A lookup thread cannot be stopped: while the resolver hangs, one thread per name, not one per
    request (a sender retrying every second would otherwise pile them up)."""
    answer, asked = resolver
    with server(answer_ok) as (port, accepted):
        client = PisanoClient(f"http://{NAME}:{port}", TOKEN, timeout_s=0.2, connect_timeout_s=0.2,
                              max_connections=2)
        try:
            for _ in range(3):
                with pytest.raises(PisanoTransportError, match="check DNS"):
                    client.send(CAMPAIGN, BODY)
            assert len(asked) == 1 and accepted == []
            answer.set()  # the resolver answers: the next request goes
            assert client.send(CAMPAIGN, BODY).http_status == 200
        finally:
            client.close()
    assert len(accepted) == 1


def test_a_name_that_does_not_resolve_says_which_host_and_to_check_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not sent, with the resolver's reason; and PISANO_URL's host, a destination's or the proxy's:
    the OS's reason alone does not say which, nor what to do."""
    def unknown(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    client = PisanoClient(f"http://{NAME}", TOKEN, timeout_s=0.5, connect_timeout_s=0.5, max_connections=1)
    _, error = send_timed(client)
    assert error is not None and not error.ambiguous, error
    assert str(error) == (f"ConnectError: request not sent (cannot resolve {NAME}: Name or service not known; "
                          "check DNS for that host (PISANO_URL's, a destination's url or the proxy's))"), error


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """The server's context, and the CA file trusting its certificate, made out to NAME."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not found: it makes the test server's certificate")
    tls_dir: Path = tmp_path_factory.mktemp("tls-name")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}", "-days", "1",
                    "-keyout", "key.pem", "-out", "cert.pem"], cwd=tls_dir, check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
    return context, tls_dir / "cert.pem"


def test_over_tls_the_certificate_is_checked_against_the_name_and_the_connection_is_reused(
        resolver: tuple[threading.Event, list[float]], tls_files: tuple[ssl.SSLContext, Path]) -> None:
    """Connected to the address the name resolved to, the handshake still checks the name (not the
    address); a kept-alive connection asks the resolver nothing more."""
    answer, asked = resolver
    answer.set()
    context, ca_file = tls_files

    def answer_ok_over_tls(connection: socket.socket, stop: threading.Event) -> None:
        with context.wrap_socket(connection, server_side=True) as secured:
            answer_ok(secured, stop)

    with server(answer_ok_over_tls) as (port, accepted):
        client = PisanoClient(f"https://{NAME}:{port}", TOKEN, timeout_s=2.0, connect_timeout_s=2.0,
                              max_connections=1, ca_file=ca_file)
        try:
            for _ in range(3):
                assert client.send(CAMPAIGN, BODY).http_status == 200
        finally:
            client.close()
    assert len(asked) == 1 and len(accepted) == 1


def link_local_address() -> tuple[str, str]:
    """A link-local IPv6 address of this machine and its interface (skips when there is none)."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hex_address, _, _, scope, _, interface = line.split()
        if scope == "20":  # link scope
            address = ":".join(hex_address[i:i + 4] for i in range(0, 32, 4))
            return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, address)), interface
    pytest.skip("no link-local IPv6 address on this machine")


def test_a_scoped_ipv6_literal_is_connected_to_on_its_interface() -> None:
    """A link-local address means nothing without its interface (`%eth0`): connecting to it
    unscoped fails (EINVAL), so the scope the resolver gave must reach the connect."""
    address, interface = link_local_address()
    with server(answer_ok, bind=(address, 0, 0, socket.if_nametoindex(interface))) as (port, accepted):
        client = PisanoClient(f"http://[{address}%{interface}]:{port}", TOKEN, timeout_s=2.0, connect_timeout_s=2.0,
                              max_connections=1)
        _, error = send_timed(client)
    assert error is None and len(accepted) == 1, error


def test_a_name_resolving_to_a_scoped_address_is_connected_to_on_its_interface(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As from /etc/hosts or mDNS (a `.local` name): the address comes with its scope id."""
    address, interface = link_local_address()
    system = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return system(f"{address}%{interface}" if host == NAME else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with server(answer_ok, bind=(address, 0, 0, socket.if_nametoindex(interface))) as (port, accepted):
        client = PisanoClient(f"http://{NAME}:{port}", TOKEN, timeout_s=2.0, connect_timeout_s=2.0,
                              max_connections=1)
        _, error = send_timed(client)
    assert error is None and len(accepted) == 1, error


def test_an_address_keeps_its_scope_id_as_a_literal() -> None:
    """What the connect is given, on machines without a link-local address to test against."""
    assert literal(("fe80::1", 443, 0, 7)) == "fe80::1%7"
    assert socket.getaddrinfo(literal(("fe80::1", 443, 0, 1)), 443, type=socket.SOCK_STREAM)[0][4][3] == 1
    assert literal(("2001:db8::1", 443, 0, 0)) == "2001:db8::1"
    assert literal(("192.0.2.1", 443)) == "192.0.2.1"


def test_a_lookup_that_never_returns_is_superseded_so_a_recovered_resolver_is_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A wedged lookup (a deadlocked NSS module) must not lock its name out for the process's life:
    past SUPERSEDE_AFTER_S the next request starts a fresh lookup, and at most
    MAX_LOOKUPS_PER_NAME of them hang at once, so a resolver that stays wedged holds a few threads."""
    system = socket.getaddrinfo
    wedged = threading.Event()
    calls: list[int] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= resolution.MAX_LOOKUPS_PER_NAME:
            wedged.wait(HANG_S)  # the first lookups never come back (within the test)
        return system("127.0.0.1", port, *args, **kwargs)

    now = [1000.0]
    monkeypatch.setattr(resolution, "_clock", lambda: now[0])
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        with pytest.raises(resolution.ResolutionTimeout):
            resolution.resolve(NAME, 80, 0.05)
        with pytest.raises(resolution.ResolutionTimeout):
            resolution.resolve(NAME, 80, 0.05)  # shared: no second lookup yet
        assert len(calls) == 1
        for _ in range(resolution.MAX_LOOKUPS_PER_NAME + 2):
            now[0] += resolution.SUPERSEDE_AFTER_S + 1
            try:
                resolution.resolve(NAME, 80, 0.05)
                break
            except resolution.ResolutionTimeout:
                pass
        # Superseded until the cap: every wedged lookup still runs, none more is started.
        assert len(calls) == resolution.MAX_LOOKUPS_PER_NAME
        wedged.set()  # the wedged lookups return: the name resolves again, with a fresh answer
        now[0] += resolution.SUPERSEDE_AFTER_S + 1
        deadline = 50
        while deadline:
            try:
                assert resolution.resolve(NAME, 80, 0.5) == ["127.0.0.1"]
                break
            except resolution.ResolutionTimeout:
                deadline -= 1
        assert deadline
    finally:
        wedged.set()


def test_an_ip_literal_is_not_looked_up_on_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A literal resolves at once: no thread (a process out of threads still connects to it)."""
    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a thread started for an IP literal")

    monkeypatch.setattr(resolution.threading, "Thread", no_thread)
    assert resolution.resolve("127.0.0.1", 80, 0.5) == ["127.0.0.1"]
    assert resolution.resolve("::1", 80, 0.5) == ["::1"]


def test_a_name_whose_lookups_all_hang_says_to_restart_not_to_check_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once MAX_LOOKUPS_PER_NAME lookups of a name hang past SUPERSEDE_AFTER_S, none more is
    started: the name fails until the process restarts, however well DNS answers meanwhile (a
    resolver that wedges now and then gets there in the end). "Check DNS" would send the operator
    to a DNS that answers; the message says what is wrong and that a restart clears it."""
    system = socket.getaddrinfo
    wedged = threading.Event()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        wedged.wait(HANG_S)
        return system("127.0.0.1", port, *args, **kwargs)

    now = [1000.0]
    monkeypatch.setattr(resolution, "_clock", lambda: now[0])
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        for _ in range(resolution.MAX_LOOKUPS_PER_NAME):
            with pytest.raises(resolution.ResolutionTimeout) as slow:
                resolution.resolve(NAME, 81, 0.05)
            assert "check DNS" in str(slow.value)  # one lookup hanging a while: DNS may be slow
            now[0] += resolution.SUPERSEDE_AFTER_S + 1
        with pytest.raises(resolution.ResolutionTimeout) as capped:
            resolution.resolve(NAME, 81, 0.05)
        text = str(capped.value)
        assert NAME in text and f"{resolution.MAX_LOOKUPS_PER_NAME} lookups" in text and "restart" in text, text
    finally:
        wedged.set()
