"""A real Prometheus (Debian's package, installed by scripts/localstack.py) for the tests of the
alert rules and the dashboard: it scrapes given targets and answers PromQL over its HTTP API.

Its port is the stack's (localstack.PROMETHEUS_PORT, beside Kafka's), its data under the stack
directory, one process per use, stopped and deleted afterwards.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import localstack


@dataclass(frozen=True)
class Target:
    """A /metrics endpoint and the labels Kubernetes' ServiceMonitor would give its series."""

    address: str  # host:port
    labels: dict[str, str]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._get("/api/v1/query", params)

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        return self._get("/api/v1/query_range",
                         {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)})

    def label_values(self, label: str, match: str) -> list[str]:
        response = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{label} of {match}: {body}"
        return list(body["data"])

    def targets_up(self) -> bool:
        targets = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return bool(targets) and all(t["health"] == "up" for t in targets)

    def rules(self) -> list[dict[str, Any]]:
        groups = httpx.get(f"{self.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = response.json()
        # A syntax error or an unknown function is an error answer, not an empty result.
        assert body.get("status") == "success", f"{params['query']}: {body.get('error', body)}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def finite_values(series: dict[str, Any]) -> list[float]:
    """The finite numbers of an instant or range result's series (NaN: a quantile of no data)."""
    samples = series.get("values") or [series["value"]]
    return [float(v) for _, v in samples if math.isfinite(float(v))]


def config(targets: list[Target], job: str, scrape_interval: str, rule_files: list[Path]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{
            "job_name": job,
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "static_configs": [{"targets": [t.address], "labels": t.labels} for t in targets],
        }],
    }


@contextmanager
def running_prometheus(targets: list[Target], *, job: str, scrape_interval: str = "1s",
                       rule_files: list[Path] | None = None) -> Iterator[Prometheus]:
    """A Prometheus scraping `targets` as `job` until the block ends."""
    binary, _ = localstack.ensure_prometheus()
    home = localstack.STACK_DIR / "prometheus"
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    config_path = home / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config(targets, job, scrape_interval, rule_files or [])), encoding="utf-8")
    address = f"{localstack.HOST}:{localstack.PROMETHEUS_PORT}"
    log = open(home / "prometheus.log", "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [binary, f"--config.file={config_path}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address={address}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    prometheus = Prometheus(f"http://{address}")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"prometheus exited: {(home / 'prometheus.log').read_text()[-2000:]}"
            try:
                if httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready in 30 s"
            time.sleep(0.2)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(home, ignore_errors=True)
