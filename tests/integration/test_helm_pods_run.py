"""The chart's replay Job and `helm test` pod, run as the kubelet would run them, against the
local stack (issue 15, point 4).

The rendered manifests are the input: the container's args, its env resolved from the rendered
ConfigMap and Secret, and the Secret's and ConfigMap's files written where the pod mounts them
(each mount path mapped to a directory of the test). So a Job whose env misses a setting, whose
signing key is not wired, or whose args the CLI refuses fails here, not in a cluster at 3 am.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.outcomes.deadletter import Failure, dead_letter_headers
from consumer.simulator import SimulatorConfig, SimulatorServer
from consumer.sre.replay_signature import verified_replay
from tests.conftest import Stack, unique
from tests.integration.test_helm_chart import FULLNAME, helm, merged, one, render  # noqa: F401 (fixture)
from tests.support.kafka import headers_of, produce, read_all

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "chart-e2e-token-7d1c"
REPLAY_KEY = "chart-e2e-replay-key-3a9f0e"
# What the environment of the test process must not lend the pod: settings come from the chart only.
SETTING_PREFIXES = ("KAFKA_", "DLQ_", "REDIS_", "PISANO_", "REPLAY_", "SCHEMA_", "HTTP_", "MAPPING_", "AVRO_")


def values_for(stack: Stack, topic: str, dlq: str, pisano_url: str, **extra: Any) -> dict[str, Any]:
    return merged({
        "config": {"KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "KAFKA_TOPICS": topic, "DLQ_TOPIC": dlq,
                   "PISANO_URL": pisano_url, "PISANO_ALLOW_INSECURE": True, "LOG_FORMAT": "text"},
        "secrets": {"pisanoApiToken": TOKEN, "redisUrl": stack.redis_url, "replaySigningKey": REPLAY_KEY},
    }, extra)


def as_the_kubelet_runs(docs: list[dict[str, Any]], pod: dict[str, Any],
                        root: Path) -> tuple[list[str], dict[str, str]]:
    """The pod's one container as a command line and an environment, with its volumes as directories."""
    config = next(d["data"] for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == FULLNAME)
    secret = {k: base64.b64decode(v) for k, v in one(docs, "Secret")["data"].items()}
    [container] = pod["containers"]
    directories: dict[str, Path] = {}
    for volume in pod["volumes"]:
        directory = directories[volume["name"]] = root / volume["name"]
        directory.mkdir(parents=True)
        if "secret" in volume:
            assert volume["secret"]["secretName"] == FULLNAME
            for item in volume["secret"]["items"]:
                (directory / item["path"]).write_bytes(secret[item["key"]])
        elif "configMap" in volume:
            for item in volume["configMap"]["items"]:
                (directory / item["path"]).write_text(config[item["key"]])
    mounts = {m["mountPath"]: directories[m["name"]] for m in container["volumeMounts"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    for entry in container["env"]:
        source = entry.get("valueFrom", {})
        if "configMapKeyRef" in source:
            assert source["configMapKeyRef"]["name"] == FULLNAME
            value = config[source["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in source:
            assert source["secretKeyRef"]["name"] == FULLNAME
            value = secret[source["secretKeyRef"]["key"]].decode()
        else:
            value = entry["value"]
        for mount_path, directory in mounts.items():
            if value.startswith(mount_path + "/"):
                value = str(directory) + value[len(mount_path):]
        env[entry["name"]] = value
    return list(container["args"]), env


def run_pod(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The image's entry point is `pisano-sms` (Dockerfile); `python -m consumer` is the same CLI.
    return subprocess.run([sys.executable, "-m", "consumer", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_rendered_replay_job_replays_a_dead_letter_signed(
        stack: Stack, new_topic: Callable[..., str], helm: str, tmp_path: Path) -> None:  # noqa: F811
    topic, dlq = new_topic(), new_topic("dlq")
    produce(stack.bootstrap, topic, [(b"evt-1", b"an event the consumer dead-lettered")])
    [original] = read_all(stack.bootstrap, topic, expected=1)
    headers = dead_letter_headers(original, Failure("pisano_error", "wrong token", code=13001, http_status=401))
    produce(stack.bootstrap, dlq, [(original.key(), original.value())], headers=headers)

    values = values_for(stack, topic, dlq, "http://127.0.0.1:9", replay={
        "enabled": True, "runId": "e2e", "dryRun": False, "errorCodes": [13001], "group": unique("replay")})
    docs = render(helm, values)
    args, env = as_the_kubelet_runs(docs, one(docs, "Job")["spec"]["template"]["spec"], tmp_path)
    result = run_pod(args, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "replayed" in result.stdout and "REPLAY_SIGNING_KEY is not set" not in result.stdout

    records = read_all(stack.bootstrap, topic, expected=2)
    assert len(records) == 2
    replayed = records[1]
    assert (replayed.key(), replayed.value()) == (original.key(), original.value())
    assert headers_of(replayed)["dlq.replays"] == "1"
    # Signed with the key from the chart's Secret, as the consumers (same Secret) verify it.
    verdict = verified_replay(REPLAY_KEY.encode(), topic, replayed.key(), replayed.value(), replayed.headers(),
                              now_ms=int(time.time() * 1000), max_age_ms=3_600_000)
    assert verdict.count == 1

    # Run again (a Kubernetes retry, or an SRE creating the Job twice): it resumes after what it
    # committed, and publishes nothing more.
    again = run_pod(args, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(read_all(stack.bootstrap, topic, timeout=10)) == 2


def test_the_rendered_helm_test_pod_checks_every_dependency(
        stack: Stack, new_topic: Callable[..., str], helm: str, tmp_path: Path) -> None:  # noqa: F811
    topic, dlq = new_topic(), new_topic("dlq")
    config = SimulatorConfig(tokens=frozenset({TOKEN}), any_campaign=True, rate_limits=())
    with SimulatorServer(config) as simulator:
        docs = render(helm, values_for(stack, topic, dlq, simulator.url))
        args, env = as_the_kubelet_runs(docs, one(docs, "Pod")["spec"], tmp_path / "right")
        assert args == ["check"]
        result = run_pod(args, env)
        assert result.returncode == 0, result.stdout + result.stderr
        # Pisano ok: the simulator takes only TOKEN, so the token file from the chart's Secret was read.
        for dependency in ("config", "kafka", "redis", "pisano"):
            assert re.search(rf"^{dependency}\s+ok\b", result.stdout, re.MULTILINE), result.stdout
