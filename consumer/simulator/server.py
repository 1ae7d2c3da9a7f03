"""Running the simulator: `serve` in the foreground, `SimulatorServer` in a background thread.

Both bind the listening socket themselves before uvicorn starts, so the URL is known (port 0
picks a free port) and connections made right after are queued rather than refused. uvicorn is
told not to configure logging (the CLI does) and not to write access logs (sharing.py logs one
DEBUG line per request, without tokens or phone numbers).

Stopping (SIGTERM or SIGINT for `serve`, `stop()` for `SimulatorServer`) is graceful: no new
connections, requests in flight are answered. A request held by a hang fault ends when its
client gives up; clients still waiting after GRACEFUL_SHUTDOWN_S get uvicorn's 500 as the
server goes.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from consumer.config.windows import format_rate_limits
from consumer.errors import ConfigError
from consumer.simulator.app import create_app
from consumer.simulator.clock import Clock
from consumer.simulator.config import SimulatorConfig
from consumer.simulator.state import SimulatorState, simulator_state

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5
STARTUP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Tls:
    """HTTPS for the simulator: a certificate chain and its key (PEM files)."""

    cert_file: Path
    key_file: Path


def serve(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 8080, tls: Tls | None = None,
          admin_token: str | None = None) -> None:
    """Run the simulator until SIGTERM or SIGINT; prints the URL it listens on once bound."""
    require_admin_token(host, admin_token)
    app = create_app(config, admin_token=admin_token)
    sock = _listen(host, port)
    url = _url(host, sock, tls)
    _log_start(config, url)
    print(f"Pisano simulator listening on {url}", flush=True)
    _uvicorn(app, tls).run(sockets=[sock])


class SimulatorServer:
    """The simulator on a background thread, for tests and benchmarks.

        with SimulatorServer(SimulatorConfig(tokens=frozenset({"t"}), any_campaign=True)) as sim:
            httpx.post(f"{sim.url}/v1/sms_campaigns/c/sms_sharings", ...)

    `state` is the live SimulatorState; read it only while no request is in flight (or use the
    admin endpoints, which run between two decisions on the state's worker thread).
    """

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        tls: Tls | None = None,
        admin_token: str | None = None,
    ) -> None:
        require_admin_token(host, admin_token)
        self.app: Starlette = create_app(config, clock, admin_token)
        self._tls = tls
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def state(self) -> SimulatorState:
        return simulator_state(self.app)

    def start(self) -> None:
        sock = _listen(self._host, self._port)
        self.url = _url(self._host, sock, self._tls)
        server = _uvicorn(self.app, self._tls)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="pisano-simulator", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"the simulator did not start on {self.url}")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        _log_start(self.state.config, self.url)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(GRACEFUL_SHUTDOWN_S + 5)
        if self._thread.is_alive():
            raise RuntimeError("the simulator did not stop")
        self._server = self._thread = None
        self.state.close()

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def require_admin_token(host: str, admin_token: str | None) -> None:
    """Refuse to expose the admin endpoints (full phone numbers, fault switches) beyond this
    machine without a token."""
    if admin_token is not None and len(admin_token) < 8:
        raise ConfigError("--admin-token: shorter than 8 characters; use a random one, e.g. `openssl rand -hex 16`")
    if not is_loopback(host) and admin_token is None:
        raise ConfigError(f"--host {host} exposes /_sim/ (every recipient's phone number) beyond this machine; "
                          "pass --admin-token (or PISANO_SIM_ADMIN_TOKEN), or bind 127.0.0.1")


KEEP_ALIVE_S = 75


def _uvicorn(app: Starlette, tls: Tls | None = None) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            ssl_certfile=str(tls.cert_file) if tls else None,
            ssl_keyfile=str(tls.key_file) if tls else None,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            # Idle connections are kept as a load balancer in front of an API keeps them (nginx's
            # default, 75 s), longer than a client's own keep-alive (httpx: 5 s). With uvicorn's
            # 5 s, both ends closed an idle connection at the same moment: a request the client
            # wrote just then was reset, an ambiguous dead letter of a whole batch in a test.
            timeout_keep_alive=KEEP_ALIVE_S,
        )
    )


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def _url(host: str, sock: socket.socket, tls: Tls | None = None) -> str:
    port = sock.getsockname()[1]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _log_start(config: SimulatorConfig, url: str) -> None:
    logger.info(
        "Pisano simulator on %s: %d tokens, %s, throttle %s, delivery log %s",
        url,
        len(config.tokens),
        "any campaign" if config.any_campaign else f"{len(config.campaigns)} campaigns",
        format_rate_limits(config.rate_limits),
        config.delivery_log_path or "in memory only",
    )
    if not config.tokens:
        logger.warning("no tokens configured: every request gets 401 until POST /_sim/config")
