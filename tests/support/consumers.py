"""Consumer replicas as real OS processes (`python -m consumer run`), for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
# The source tree the replicas run (`python -m consumer` from there): this one, or an older
# checkout, to show that an end-to-end test fails on the code before a fix.
CONSUMER_ROOT = Path(os.environ.get("PISANO_TEST_CONSUMER_ROOT", ROOT))
# The fleet's replay signing key in tests: replays of ambiguous events must be signed with it.
REPLAY_KEY = "test-replay-signing-key-4f1c0e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def consumer_env(*, bootstrap: str, redis_url: str, topic: str, dlq: str, group: str, pisano_url: str,
                 token: str, **overrides: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "PISANO_", "REDIS_", "BATCH_", "DLQ_", "HTTP_PORT", "MAPPING_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": topic,
        "KAFKA_GROUP_ID": group,
        "DLQ_TOPIC": dlq,
        "REDIS_URL": redis_url,
        "PISANO_URL": pisano_url,
        "PISANO_API_TOKEN": token,
        "PISANO_ALLOW_INSECURE": "true",  # the simulator serves plain http
        "PISANO_RATE_LIMITS": "off",
        "BATCH_MAX_WAIT_MS": "200",
        "LOG_FORMAT": "json",
        "KAFKA_CONFIG_SESSION_TIMEOUT_MS": "10000",
        "KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS": "1000",
        "PYTHONUNBUFFERED": "1",
        "REPLAY_SIGNING_KEY": REPLAY_KEY,
    })
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class ConsumerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**env, "HTTP_PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen([sys.executable, "-m", "consumer", "run"], env=self.env, cwd=CONSUMER_ROOT,
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> dict[str, float]:
        """Sample values by `name{label=value,...}` (labels sorted), counters without `_total`."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def metric(self, name: str) -> float:
        """Sum of every sample of `name` (all label values)."""
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"consumer exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"consumer not ready in {timeout}s:\n{self.log_tail()}")

    def terminate(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(condition: Any, timeout: float, message: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message}")
