"""The simulator's admin endpoints show full phone numbers: loopback only, unless an admin token
guards them."""

import pytest

from consumer.errors import ConfigError
from consumer.simulator import SimulatorConfig, SimulatorServer, create_app
from consumer.simulator.server import require_admin_token
from tests.unit.simulator.test_simulator_app import PHONE, AppClient

ADMIN = "admin-token-123"


def make_client(admin_token: str | None) -> AppClient:
    config = SimulatorConfig.from_options(tokens=["tok-1"], campaigns=["c1"], rate_limits="off")
    return AppClient(create_app(config, admin_token=admin_token))


@pytest.mark.parametrize("path", ["/_sim/deliveries", "/_sim/requests", "/_sim/stats", "/_sim/healthz"])
def test_admin_token_guards_every_admin_endpoint(path: str) -> None:
    client = make_client(ADMIN)
    assert client.share([PHONE]).status_code == 200  # the API itself is unchanged
    assert client.request("GET", path).status_code == 401
    assert client.request("GET", path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.request("GET", path, headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200


def test_admin_posts_are_guarded_too() -> None:
    client = make_client(ADMIN)
    assert client.request("POST", "/_sim/reset").status_code == 401
    assert client.request("POST", "/_sim/faults", json={"latency_ms": 1}).status_code == 401
    assert client.request("POST", "/_sim/reset", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200


def test_no_token_on_loopback_keeps_admin_open() -> None:
    assert make_client(None).request("GET", "/_sim/stats").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_admin_token(host: str) -> None:
    require_admin_token(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "sim.staging.example"])
def test_any_other_address_needs_an_admin_token(host: str) -> None:
    with pytest.raises(ConfigError, match="--admin-token"):
        require_admin_token(host, None)
    require_admin_token(host, ADMIN)
    with pytest.raises(ConfigError, match="shorter than 8"):
        require_admin_token(host, "short")


def test_server_refuses_to_bind_everywhere_without_a_token() -> None:
    with pytest.raises(ConfigError):
        SimulatorServer(SimulatorConfig(tokens=frozenset({"t"})), host="0.0.0.0")


def test_simulate_command_refuses_an_open_admin_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from consumer.cli import main

    monkeypatch.delenv("PISANO_SIM_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("PISANO_URL", raising=False)
    result = CliRunner().invoke(main, ["simulate", "--host", "0.0.0.0", "--token", "tok-1", "--port", "0"])
    assert result.exit_code == 2
    assert "--admin-token" in result.output and "Traceback" not in result.output

