"""The Helm chart, rendered by the real helm over a matrix of values.

Every rendered manifest must parse; the core kinds are validated offline against Kubernetes'
own schemas (kubernetes-validate, strict: unknown fields fail), the CRD kinds (ServiceMonitor,
ScaledObject, TriggerAuthentication, PrometheusRule) are checked for the fields their operators
require. On top: the pod is hardened, the probes hit the consumer's endpoints, secrets never
reach a ConfigMap or a literal env value, the grace period outlasts the consumer's own, and the
settings the chart writes are ones the consumer accepts. kube-score scores every scenario's
manifests, with no critical finding or warning (the checks skipped, each with its reason, are in
KUBE_SCORE_SKIPS and the chart README, "kube-score").

Needs helm and kube-score: `make helm kube-score` builds them into ~/.cache/pisano-sms/
(`make test` does).
"""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from consumer.config.loading import load_settings
from consumer.config.settings import Settings
from consumer.operations import tracing
from tests.unit.operations.test_observability_assets import exported_metric_names, metric_names_in

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "pisano-sms-consumer"
HELM_VERSION = "v3.19.0"
HELM_CACHED = Path.home() / ".cache" / "pisano-sms" / f"helm-{HELM_VERSION}" / "helm"
KUBE_SCORE_VERSION = "v1.20.0"
KUBE_SCORE_CACHED = Path.home() / ".cache" / "pisano-sms" / f"kube-score-{KUBE_SCORE_VERSION}" / "kube-score"
RELEASE, NAMESPACE = "sms", "payments"
FULLNAME = f"{RELEASE}-pisano-sms-consumer"

# The oldest Kubernetes the chart supports and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.25", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "ScaledObject", "TriggerAuthentication", "PrometheusRule"}

# Recognisable secret values: none may appear outside the Secret.
TOKEN = "tok-3b1f0c9e7d5a"
REDIS_URL = "redis://pisano:redis-pw-8c2e@redis-master.data:6379/2"
SASL_PASSWORD = "sasl-pw-55d0a1"
REGISTRY_PASSWORD = "sr-pw-90e4b2"
REPLAY_KEY = "replay-key-1c7e5a3f9b"
OTEL_HEADERS = "authorization=Bearer otel-key-7d41c2"
OUTCOME_SALT = "outcome-salt-5d2b7e19c4"
DIGEST = "sha256:" + "5f" * 32
NAMESPACE_LABEL = "kubernetes.io/metadata.name"

BASE: dict[str, Any] = {
    "config": {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-0.kafka:9093,kafka-1.kafka:9093",
        "KAFKA_TOPICS": "transactions,payments",
        "PISANO_URL": "https://api.pisano.example",
        "BATCH_MAX_WAIT_MS": 2000,
    },
    "secrets": {"pisanoApiToken": TOKEN, "redisUrl": REDIS_URL},
}
SASL_SSL = {
    "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_CONFIG_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_CONFIG_SASL_USERNAME": "svc-pisano-sms",
}


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep merge, later layers winning (as helm merges -f files)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "keda": merged(BASE, {
        "config": SASL_SSL,
        "secrets": {"kafkaSaslPassword": SASL_PASSWORD},
        "kafkaTls": {"secretName": "kafka-client-tls", "certKey": "tls.crt", "keyKey": "tls.key"},
        "keda": {"enabled": True, "minReplicas": 0, "lagThreshold": 5000},
    }),
    "hpa": merged(BASE, {"autoscaling": {"enabled": True, "maxReplicas": 4}}),
    "service-monitor": merged(BASE, {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}),
    "existing-secret": merged(BASE, {
        "config": SASL_SSL,
        "secrets": {"existingSecret": "pisano-sms-prod", "pisanoApiToken": "", "redisUrl": "",
                    "keys": {"pisanoApiToken": "token", "redisUrl": "redis", "kafkaSaslPassword": "sasl"}},
    }),
    "dashboards-and-alerts": merged(BASE, {
        "serviceMonitor": {"enabled": True},
        "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Pisano"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kps"},
                           "rules": {"lagGrowing": {"threshold": 2000000}}},
    }),
    "registry-and-replay": merged(BASE, {
        "config": {"SCHEMA_REGISTRY_URL": "https://schema-registry.kafka:8081", "SCHEMA_REGISTRY_USER": "svc-sms",
                   "OUTCOME_TOPIC": "pisano-sms.receipts"},
        "secrets": {"schemaRegistryPassword": REGISTRY_PASSWORD, "replaySigningKey": REPLAY_KEY,
                    "outcomePhoneSalt": OUTCOME_SALT},
        "schemaRegistryTls": {"secretName": "registry-client-tls", "certKey": "tls.crt", "keyKey": "tls.key"},
    }),
    "files-and-spread": merged(BASE, {
        "mapping": {"event_id": "transaction.id", "phone": "customer.mobile", "campaign_id": "campaign"},
        "avroSchema": {"type": "record", "name": "Transaction", "fields": [{"name": "id", "type": "string"}]},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "shutdownGraceMs": 90500,
    }),
    "network-policy": merged(BASE, {
        "config": {"SCHEMA_REGISTRY_URL": "http://schema-registry.kafka:8081"},
        "networkPolicy": {
            "ingress": {"from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "monitoring"}}}]},
            "egress": {
                "kafka": {"to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "kafka"}}}]},
                "redis": {"ports": [6379, 26379]},
                "pisano": {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]},
                "extra": [{"to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "otel"}}}],
                           "ports": [{"protocol": "TCP", "port": 4317}]}],
            },
        },
    }),
    "replay-job": merged(BASE, {
        "config": SASL_SSL,
        "secrets": {"kafkaSaslPassword": SASL_PASSWORD, "replaySigningKey": REPLAY_KEY},
        "replay": {"enabled": True, "runId": "inc4711", "dryRun": False, "errorCodes": [13001, "13034"],
                   "reasons": ["pisano_error", "ambiguous"], "campaigns": ["3f0c2a1e-0000-4000-8000-000000000001"],
                   "since": "2026-11-26T10:00Z", "until": "2026-11-27", "limit": 500, "maxReplays": 2,
                   "toTopic": "transactions", "group": "replay-inc4711", "pastHorizon": True},
        "tests": {"campaign": "3f0c2a1e-0000-4000-8000-000000000001"},
    }),
    "digest-pinned": merged(BASE, {
        "image": {"repository": "registry.example.com/pisano-sms-consumer", "digest": DIGEST,
                  "pullPolicy": "IfNotPresent"},
        "replay": {"enabled": True, "runId": "dry-1"},
    }),
    "no-test-pod": merged(BASE, {"tests": {"enabled": False}}),
    "tracing-and-token-provider": merged(BASE, {
        "tokens": {"provider": "mycompany.secrets:pisano_token", "refreshMs": 5000},
        "secrets": {"pisanoApiToken": "", "replaySigningKey": REPLAY_KEY},
        "tracing": {"endpoint": "http://otel-collector.observability:4318", "serviceName": "sms-prod",
                    "sampler": "parentbased_traceidratio", "samplerArg": "0.25", "linkCountLimit": 5000,
                    "resourceAttributes": "deployment.environment=prod",
                    "headersSecret": {"name": "otel-auth", "key": "headers"},
                    "egress": {"to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "observability"}}}]}},
    }),
    "cpu-limit-hard-spread": merged(BASE, {
        "resources": {"limits": {"cpu": "2"}},
        "podAntiAffinity": "hard",
        "httpBindAddress": "::",
    }),
}

# kube-score checks skipped per scenario, and why (the chart README, "kube-score", says the same).
KUBE_SCORE_SKIPS: dict[str, dict[str, str]] = {
    # KEDA creates the HorizontalPodAutoscaler at run time, so kube-score sees a Deployment with
    # no replica count (Kubernetes' default, 1) and no autoscaler.
    "keda": {"deployment-replicas": "KEDA's HorizontalPodAutoscaler owns the replica count"},
    # A digest is immutable: IfNotPresent cannot run a stale image, and lets pods start while the
    # registry is down; what it gives up is the registry's check of the pull secret on each start.
    "digest-pinned": {"container-image-pull-policy": "the image is pinned by digest"},
    # The tools' NetworkPolicy is for replay Jobs created later, outside the release (chart
    # README, "Replay as a Job"); without the test pod nothing in the render matches it yet.
    "no-test-pod": {"networkpolicy-targets-pod": "the replay Jobs it selects are created later"},
}
# The consumer has no CPU limit unless resources.limits.cpu is set: throttled by a CFS quota, a
# busy replica misses Kafka's poll interval and its probes (values.yaml, `resources`).
CPU_LIMIT_SKIP = "--ignore-container-cpu-limit"


# ------------------------------------------------------------------------------ helm


@pytest.fixture(scope="module")
def helm() -> str:
    if HELM_CACHED.is_file():
        return str(HELM_CACHED)
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    pytest.fail(f"helm not found at {HELM_CACHED} nor on PATH: run `make helm` (it builds helm "
                f"{HELM_VERSION} with go install, about a minute)", pytrace=False)


@pytest.fixture(scope="module")
def kube_score() -> str:
    if KUBE_SCORE_CACHED.is_file():
        return str(KUBE_SCORE_CACHED)
    on_path = shutil.which("kube-score")
    if on_path:
        return on_path
    pytest.fail(f"kube-score not found at {KUBE_SCORE_CACHED} nor on PATH: run `make kube-score` (it builds "
                f"kube-score {KUBE_SCORE_VERSION} with go install, about a minute)", pytrace=False)


def run_helm(helm: str, *args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    command = [helm, *args]
    if values:
        command += ["--values", "-"]
    return subprocess.run(command, input=yaml.safe_dump(values) if values else None, capture_output=True,
                          text=True, timeout=60, check=False)


@functools.cache
def _render(helm: str, values_json: str) -> tuple[dict[str, Any], ...]:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                      values=json.loads(values_json))
    assert result.returncode == 0, result.stderr
    docs = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    assert all(isinstance(doc, dict) and doc.get("kind") for doc in docs)
    return docs


def render(helm: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifests `helm template` produces (cached per values; callers get copies)."""
    docs: list[dict[str, Any]] = json.loads(json.dumps(_render(helm, json.dumps(values, sort_keys=True))))
    return docs


def render_error(helm: str, values: dict[str, Any]) -> str:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values)
    assert result.returncode != 0, "expected the render to fail"
    return result.stderr


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {doc["kind"] for doc in docs}


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(docs)["containers"]
    assert [c["name"] for c in containers] == ["consumer"]
    found: dict[str, Any] = containers[0]
    return found


def config_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == FULLNAME)
    data: dict[str, str] = config_map["data"]
    return data


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(docs)["env"]}


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest, helm: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield request.param, render(helm, SCENARIOS[request.param])


# ------------------------------------------------------------------------------ lint


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("name", ["defaults", "keda", "dashboards-and-alerts", "replay-job", "network-policy",
                                  "tracing-and-token-provider"])
def test_helm_lint(helm: str, name: str, strict: bool) -> None:
    args = ["lint", str(CHART)] + (["--strict"] if strict else [])
    result = run_helm(helm, *args, values=SCENARIOS[name])
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_app_version_is_the_consumer_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["project"]["version"]


# ------------------------------------------------------------------------------ every scenario


def check_crd(doc: dict[str, Any]) -> None:
    """The fields each CRD's operator needs (their schemas are not in kubernetes-validate)."""
    kind, spec = doc["kind"], doc["spec"]
    if kind == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["endpoints"] and all(e["port"] for e in spec["endpoints"])
    elif kind == "ScaledObject":
        assert spec["scaleTargetRef"]["name"]
        assert spec["triggers"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            # KEDA's metadata is map[string]string: a YAML number would be rejected.
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]
            for field in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold"):
                assert trigger["metadata"][field], field
    elif kind == "TriggerAuthentication":
        assert spec.get("secretTargetRef") or spec.get("env")
        for ref in spec.get("secretTargetRef", []):
            assert ref["parameter"] and ref["name"] and ref["key"]
        for ref in spec.get("env", []):
            assert ref["parameter"] and ref["name"]
    elif kind == "PrometheusRule":
        assert spec["groups"]
        for group in spec["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert rule["expr"] and ("alert" in rule) != ("record" in rule)
                assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", rule["for"]), rule["for"]
                assert all(isinstance(v, str) for v in {**rule["labels"], **rule["annotations"]}.values())
    else:
        raise AssertionError(f"no check for {kind}")


def test_manifests_are_valid_kubernetes(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = scenario
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount", "PodDisruptionBudget"} <= kinds(docs)
    for doc in docs:
        assert doc["metadata"]["name"]
        if doc["kind"] in CRD_KINDS:
            check_crd(doc)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version} at {path}: "
                            f"{exc.message}")


def test_pod_is_hardened(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = scenario
    spec = pod_spec(docs)
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container(docs)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    tmp = next(m for m in container(docs)["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    service_account = one(docs, "ServiceAccount")
    assert service_account["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == service_account["metadata"]["name"]


def test_probes_hit_the_health_endpoints(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = scenario
    consumer = container(docs)
    ports = {p["name"]: p["containerPort"] for p in consumer["ports"]}
    assert ports == {"http": int(config_data(docs)["HTTP_PORT"])}
    assert consumer["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert consumer["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert consumer["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = consumer["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_termination_grace_outlasts_the_consumers_shutdown(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = scenario
    grace_ms = int(config_data(docs)["SHUTDOWN_GRACE_MS"])
    assert grace_ms == SCENARIOS[name].get("shutdownGraceMs", 30000)
    assert pod_spec(docs)["terminationGracePeriodSeconds"] >= grace_ms / 1000 + 15


def test_secrets_stay_in_the_secret(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = scenario
    for doc in docs:
        if doc["kind"] != "Secret":
            text = yaml.safe_dump(doc)
            for secret in (TOKEN, REDIS_URL, "redis-pw-8c2e", SASL_PASSWORD, REGISTRY_PASSWORD, REPLAY_KEY):
                assert secret not in text, f"{doc['kind']}/{doc['metadata']['name']} contains a secret"
    data = config_data(docs)
    assert not {"REDIS_URL", "PISANO_API_TOKEN", "KAFKA_CONFIG_SASL_PASSWORD"} & set(data)
    env = env_of(docs)
    # Settings about where the token comes from, not the token: plain ConfigMap entries.
    token_settings = {"PISANO_TOKEN_PROVIDER", "PISANO_TOKEN_REFRESH_MS"}
    for name, entry in env.items():
        if re.search("PASSWORD|SECRET|TOKEN|REDIS_URL|OTEL_EXPORTER_OTLP_HEADERS", name) \
                and not name.endswith("_FILE") and name not in token_settings:  # a file path
            assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name} must come from a Secret"
        assert "value" not in entry or not re.search("PASSWORD|SECRET|TOKEN|URL", name), name
    assert "PISANO_API_TOKEN" not in env  # the token is a file, not an env var


def test_token_is_mounted_as_a_file(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = scenario
    if SCENARIOS[name].get("tokens", {}).get("provider"):
        pytest.skip("a token provider gives the token (test_token_provider_replaces_the_token_file)")
    secrets = merged({"existingSecret": "", "keys": {"pisanoApiToken": "pisano-api-token"}},
                     SCENARIOS[name].get("secrets", {}))
    token_file = Path(config_data(docs)["PISANO_API_TOKEN_FILE"])
    assert token_file == Path("/var/run/secrets/pisano-sms/token")
    mount = next(m for m in container(docs)["volumeMounts"] if m["mountPath"] == str(token_file.parent))
    assert mount["readOnly"] is True and "subPath" not in mount  # subPath would freeze rotations
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == mount["name"])["secret"]
    assert volume["secretName"] == (secrets["existingSecret"] or FULLNAME)
    assert volume["items"][0] == {"key": secrets["keys"]["pisanoApiToken"], "path": token_file.name}
    assert volume["defaultMode"] == 0o440 and pod_spec(docs)["securityContext"]["fsGroup"] == 10001


def test_consumer_accepts_the_rendered_settings(scenario: tuple[str, list[dict[str, Any]]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Feed the container's environment, as Kubernetes would build it, to the consumer's own
    settings loader: every name must be a real setting and every value must parse."""
    name, docs = scenario
    data = config_data(docs)
    secret_values = {"redis-url": REDIS_URL, "kafka-sasl-password": SASL_PASSWORD, "redis": REDIS_URL,
                     "sasl": SASL_PASSWORD, "headers": OTEL_HEADERS}
    for variable in [*Settings.model_fields, "kafka_config_sasl_password"]:
        monkeypatch.delenv(variable.upper(), raising=False)
    for variable, entry in env_of(docs).items():
        source = entry["valueFrom"]
        if "configMapKeyRef" in source:
            monkeypatch.setenv(variable, data[source["configMapKeyRef"]["key"]])
        else:
            monkeypatch.setenv(variable, secret_values[source["secretKeyRef"]["key"]])
    for key in data:
        # OTEL_*: read by OpenTelemetry's SDK (consumer/operations/tracing.py decides on or off)
        if not key.startswith(("KAFKA_CONFIG_", "OTEL_")) and "." not in key:
            assert key.lower() in Settings.model_fields, f"ConfigMap key {key} is no consumer setting"
    settings = load_settings(None)
    assert settings.http_port == int(data["HTTP_PORT"])
    tracing_values = SCENARIOS[name].get("tracing", {})
    assert tracing.enabled_by({k: v for k, v in data.items() if k.startswith("OTEL_")}) \
        == bool(tracing_values.get("endpoint"))
    provider = SCENARIOS[name].get("tokens", {}).get("provider")
    assert settings.pisano_token_provider == provider
    assert settings.pisano_token_refresh_ms == SCENARIOS[name].get("tokens", {}).get("refreshMs", 1000)
    if provider:
        assert settings.pisano_api_token_file is None
    else:
        assert str(settings.pisano_api_token_file) == "/var/run/secrets/pisano-sms/token"
    if name != "defaults":
        assert settings.kafka_topics == ["transactions", "payments"]
        assert settings.redis_url.get_secret_value() == REDIS_URL
    if "KAFKA_CONFIG_SECURITY_PROTOCOL" in data:
        assert settings.kafka["security.protocol"] == "SASL_SSL"
        assert settings.kafka["sasl.password"] == SASL_PASSWORD


# ------------------------------------------------------------------------------ one scenario each


def test_defaults_create_the_secret_and_no_optional_objects(helm: str) -> None:
    docs = render(helm, {})
    assert one(docs, "Secret")["metadata"]["name"] == FULLNAME
    assert not kinds(docs) & (CRD_KINDS | {"HorizontalPodAutoscaler"})
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert "files" not in {v["name"] for v in pod_spec(docs)["volumes"]}
    assert not {"MAPPING_FILE", "AVRO_SCHEMA_FILE"} & set(config_data(docs))


def test_created_secret_holds_the_values(helm: str) -> None:
    docs = render(helm, SCENARIOS["keda"])
    data = {k: base64.b64decode(v).decode() for k, v in one(docs, "Secret")["data"].items()}
    assert data == {"pisano-api-token": TOKEN, "redis-url": REDIS_URL, "kafka-sasl-password": SASL_PASSWORD}


def test_existing_secret_is_referenced_with_its_keys(helm: str) -> None:
    docs = render(helm, SCENARIOS["existing-secret"])
    assert "Secret" not in kinds(docs)
    env = env_of(docs)
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pisano-sms-prod", "key": "redis"}
    assert env["KAFKA_CONFIG_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pisano-sms-prod", "key": "sasl"}
    assert "checksum/secret" not in one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_registry_password_replay_key_and_registry_tls_are_files_from_secrets(helm: str) -> None:
    docs = render(helm, SCENARIOS["registry-and-replay"])
    data = config_data(docs)
    assert data["SCHEMA_REGISTRY_USER"] == "svc-sms"
    assert data["SCHEMA_REGISTRY_PASSWORD_FILE"] == "/var/run/secrets/pisano-sms/schema-registry-password"
    assert data["REPLAY_SIGNING_KEY_FILE"] == "/var/run/secrets/pisano-sms/replay-signing-key"
    assert data["OUTCOME_PHONE_SALT_FILE"] == "/var/run/secrets/pisano-sms/outcome-phone-salt"
    assert data["SCHEMA_REGISTRY_CA_FILE"] == "/var/run/secrets/schema-registry-tls/ca.crt"
    assert data["SCHEMA_REGISTRY_CERT_FILE"] == "/var/run/secrets/schema-registry-tls/tls.crt"
    assert data["SCHEMA_REGISTRY_KEY_FILE"] == "/var/run/secrets/schema-registry-tls/tls.key"
    secret = {k: base64.b64decode(v).decode() for k, v in one(docs, "Secret")["data"].items()}
    assert secret["schema-registry-password"] == REGISTRY_PASSWORD and secret["replay-signing-key"] == REPLAY_KEY
    assert secret["outcome-phone-salt"] == OUTCOME_SALT
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["pisano-token"]["secret"]["items"][1:] == [
        {"key": "schema-registry-password", "path": "schema-registry-password"},
        {"key": "replay-signing-key", "path": "replay-signing-key"},
        {"key": "outcome-phone-salt", "path": "outcome-phone-salt"}]
    assert volumes["schema-registry-tls"]["secret"]["secretName"] == "registry-client-tls"
    # With an existing Secret the chart wires the optional keys only when told they are there.
    existing = merged(SCENARIOS["existing-secret"], {"config": {"SCHEMA_REGISTRY_USER": "svc-sms"}})
    assert "REPLAY_SIGNING_KEY_FILE" not in config_data(render(helm, existing))
    told = merged(existing, {"secrets": {"hasSchemaRegistryPassword": True, "hasReplaySigningKey": True,
                                         "hasOutcomePhoneSalt": True}})
    assert {"SCHEMA_REGISTRY_PASSWORD_FILE", "REPLAY_SIGNING_KEY_FILE", "OUTCOME_PHONE_SALT_FILE"} \
        <= set(config_data(render(helm, told)))


def test_the_suppression_key_is_a_file_from_the_secret(helm: str) -> None:
    key = "opt-out-key-5c1e0a9b7d3f"
    docs = render(helm, merged(BASE, {"secrets": {"suppressionKey": key}}))
    assert config_data(docs)["SUPPRESSION_KEY_FILE"] == "/var/run/secrets/pisano-sms/suppression-key"
    assert base64.b64decode(one(docs, "Secret")["data"]["suppression-key"]).decode() == key
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert {"key": "suppression-key", "path": "suppression-key"} in volumes["pisano-token"]["secret"]["items"]
    assert "SUPPRESSION_KEY_FILE" not in config_data(render(helm, BASE))
    existing = SCENARIOS["existing-secret"]
    assert "SUPPRESSION_KEY_FILE" not in config_data(render(helm, existing))
    told = merged(existing, {"secrets": {"hasSuppressionKey": True}})
    assert "SUPPRESSION_KEY_FILE" in config_data(render(helm, told))


def test_sasl_password_only_with_sasl(helm: str) -> None:
    assert "KAFKA_CONFIG_SASL_PASSWORD" not in env_of(render(helm, BASE))
    assert "kafka-sasl-password" not in one(render(helm, BASE), "Secret")["data"]


def test_keda_scales_on_the_consumers_lag(helm: str) -> None:
    docs = render(helm, SCENARIOS["keda"])
    assert "replicas" not in one(docs, "Deployment")["spec"]  # KEDA's HPA owns it
    assert "HorizontalPodAutoscaler" not in kinds(docs)
    scaled = one(docs, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == FULLNAME
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 6)
    assert [t["metadata"]["topic"] for t in scaled["triggers"]] == ["transactions", "payments"]
    for trigger in scaled["triggers"]:
        meta = trigger["metadata"]
        assert meta["bootstrapServers"] == BASE["config"]["KAFKA_BOOTSTRAP_SERVERS"]
        assert meta["consumerGroup"] == "pisano-sms-consumer"
        assert meta["lagThreshold"] == "5000"
        assert (meta["sasl"], meta["tls"], meta["offsetResetPolicy"]) == ("scram_sha512", "enable", "earliest")
        assert trigger["authenticationRef"]["name"] == FULLNAME
    auth = one(docs, "TriggerAuthentication")["spec"]
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["secretTargetRef"]}
    assert refs == {"password": (FULLNAME, "kafka-sasl-password"), "ca": ("kafka-client-tls", "ca.crt"),
                    "cert": ("kafka-client-tls", "tls.crt"), "key": ("kafka-client-tls", "tls.key")}
    # The username is read from the consumer's env, which KEDA resolves through the ConfigMap.
    assert auth["env"] == [{"parameter": "username", "name": "KAFKA_CONFIG_SASL_USERNAME", "containerName": "consumer"}]
    assert "KAFKA_CONFIG_SASL_USERNAME" in env_of(docs)
    data = config_data(docs)
    assert data["KAFKA_CONFIG_SSL_CA_LOCATION"] == "/var/run/secrets/kafka-tls/ca.crt"
    assert data["KAFKA_CONFIG_SSL_KEY_LOCATION"] == "/var/run/secrets/kafka-tls/tls.key"


def test_keda_without_kafka_auth_needs_no_trigger_authentication(helm: str) -> None:
    docs = render(helm, merged(BASE, {"keda": {"enabled": True},
                                      "config": {"KAFKA_CONFIG_AUTO_OFFSET_RESET": "latest"}}))
    assert "TriggerAuthentication" not in kinds(docs)
    for trigger in one(docs, "ScaledObject")["spec"]["triggers"]:
        assert "authenticationRef" not in trigger
        assert "sasl" not in trigger["metadata"] and trigger["metadata"]["tls"] == "disable"
        assert trigger["metadata"]["offsetResetPolicy"] == "latest"


def test_hpa_scales_the_deployment_on_cpu(helm: str) -> None:
    docs = render(helm, SCENARIOS["hpa"])
    assert "replicas" not in one(docs, "Deployment")["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert hpa["maxReplicas"] == 4
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert "ScaledObject" not in kinds(docs)


def test_hpa_and_keda_together_fail_clearly(helm: str) -> None:
    error = render_error(helm, merged(SCENARIOS["keda"], {"autoscaling": {"enabled": True}}))
    assert "autoscaling.enabled and keda.enabled are mutually exclusive" in error


def test_keda_with_sasl_needs_the_username(helm: str) -> None:
    values = merged(SCENARIOS["keda"], {"config": {"KAFKA_CONFIG_SASL_USERNAME": None}})
    assert "needs config.KAFKA_CONFIG_SASL_USERNAME" in render_error(helm, values)


def test_service_monitor_scrapes_the_metrics_port(helm: str) -> None:
    docs = render(helm, SCENARIOS["service-monitor"])
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    service = one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_disruption_budget_selects_the_pods(helm: str) -> None:
    docs = render(helm, BASE)
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["maxUnavailable"] == 1


def test_dashboard_ships_for_the_grafana_sidecar(helm: str) -> None:
    docs = render(helm, SCENARIOS["dashboards-and-alerts"])
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Pisano"}
    shipped = json.loads(dashboard["data"]["pisano-sms.json"])
    assert shipped == json.loads((CHART / "dashboards" / "pisano-sms.json").read_text(encoding="utf-8"))


def test_alert_rules_render_scoped_to_the_release(helm: str) -> None:
    docs = render(helm, SCENARIOS["dashboards-and-alerts"])
    rule_object = one(docs, "PrometheusRule")
    assert rule_object["metadata"]["labels"]["release"] == "kps"
    rules = {r["alert"]: r for g in rule_object["spec"]["groups"] for r in g["rules"]}
    exported = exported_metric_names()
    selector = f'job="{FULLNAME}",namespace="{NAMESPACE}"'
    for alert, rule in rules.items():
        assert metric_names_in(rule["expr"]) <= exported, alert
        # Every series the rule reads is this release's.
        for metric in re.finditer(r"pisano_sms_\w+(\{[^}]*\})?", rule["expr"]):
            assert metric.group(1) and selector in metric.group(1), f"{alert}: {metric.group(0)} is not scoped"
        assert "{{ $" not in rule["expr"]
    assert rules["PisanoSmsCircuitOpen"]["for"] == "5m"
    assert rules["PisanoSmsThrottleSaturated"]["for"] == "30m"
    assert ">= 0.95" in rules["PisanoSmsThrottleSaturated"]["expr"]
    assert "> 2000000" in rules["PisanoSmsConsumerLagGrowing"]["expr"]  # an integer, not 2e+06
    assert "{{ $labels.pod }}" in rules["PisanoSmsCircuitOpen"]["annotations"]["summary"]


def test_mapping_and_schema_are_mounted_files(helm: str) -> None:
    values = SCENARIOS["files-and-spread"]
    docs = render(helm, values)
    data = config_data(docs)
    assert data["MAPPING_FILE"] == "/etc/pisano-sms/mapping.yaml"
    assert data["AVRO_SCHEMA_FILE"] == "/etc/pisano-sms/schema.avsc"
    assert yaml.safe_load(data["mapping.yaml"]) == values["mapping"]
    assert json.loads(data["schema.avsc"]) == values["avroSchema"]
    assert "mapping.yaml" not in env_of(docs) and "schema.avsc" not in env_of(docs)
    mount = next(m for m in container(docs)["volumeMounts"] if m["mountPath"] == "/etc/pisano-sms")
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == mount["name"])
    assert {i["path"] for i in volume["configMap"]["items"]} == {"mapping.yaml", "schema.avsc"}
    spread = pod_spec(docs)["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE


def test_mapping_may_be_given_as_a_file(helm: str) -> None:
    mapping = "event_id: id\nphone: customer.phone\ncampaign_id: campaign\n"
    docs = render(helm, merged(BASE, {"mapping": mapping}))
    assert config_data(docs)["mapping.yaml"] == mapping


def test_grace_period_follows_shutdown_grace(helm: str) -> None:
    for grace_ms, expected in ((30000, 45), (30500, 46), (90500, 106), (0, 15)):
        docs = render(helm, merged(BASE, {"shutdownGraceMs": grace_ms}))
        assert config_data(docs)["SHUTDOWN_GRACE_MS"] == str(grace_ms)
        assert pod_spec(docs)["terminationGracePeriodSeconds"] == expected


def test_large_numbers_reach_the_consumer_as_integers(helm: str) -> None:
    docs = render(helm, merged(BASE, {"config": {"MAX_BUFFERED_EVENTS": 2000000, "REDIS_CLUSTER": True}}))
    assert config_data(docs)["MAX_BUFFERED_EVENTS"] == "2000000"
    assert config_data(docs)["MAX_BUFFERED_BYTES"] == "268435456"  # maxBufferedBytes, passed down
    assert config_data(docs)["REDIS_CLUSTER"] == "true"


def test_config_checksum_rolls_pods_on_config_change(helm: str) -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = one(render(helm, values), "Deployment")["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    before = checksum(BASE)
    assert checksum(merged(BASE, {"config": {"BATCH_MAX_WAIT_MS": 500}})) != before
    assert checksum(merged(BASE, {"mapping": {"event_id": "id", "phone": "p", "campaign_id": "c"}})) != before
    assert checksum(merged(BASE, {"shutdownGraceMs": 60000})) != before
    assert checksum(merged(BASE, {"replicaCount": 5})) == before


@pytest.mark.parametrize(("config", "message"), [
    ({"REDIS_URL": "redis://x"}, "config.REDIS_URL looks like a secret"),
    ({"PISANO_API_TOKEN": "t"}, "config.PISANO_API_TOKEN looks like a secret"),
    ({"KAFKA_CONFIG_SASL_PASSWORD": "p"}, "config.KAFKA_CONFIG_SASL_PASSWORD looks like a secret"),
    ({"SHUTDOWN_GRACE_MS": 1000}, "config.SHUTDOWN_GRACE_MS is set by the chart"),
    ({"HTTP_PORT": 9000}, "config.HTTP_PORT is set by the chart"),
    ({"REPLAY_SIGNING_KEY": "k" * 20}, "config.REPLAY_SIGNING_KEY looks like a secret"),
    ({"OUTCOME_PHONE_SALT": "s" * 20}, "config.OUTCOME_PHONE_SALT looks like a secret"),
    ({"SUPPRESSION_KEY": "k" * 20}, "config.SUPPRESSION_KEY looks like a secret"),
    ({"SCHEMA_REGISTRY_URL": "https://u:pw@registry:8081"}, "config.SCHEMA_REGISTRY_URL holds a credential"),
    ({"SCHEMA_REGISTRY_URL": "https://registry:8081/?Password=pw"}, "config.SCHEMA_REGISTRY_URL holds a credential"),
    ({"PISANO_TOKEN_PROVIDER": "vault"}, "config.PISANO_TOKEN_PROVIDER is set by the chart from tokens.provider"),
    ({"PISANO_TOKEN_REFRESH_MS": 500}, "config.PISANO_TOKEN_REFRESH_MS is set by the chart from tokens.refreshMs"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "is set by the chart from tracing.endpoint"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "is set by the chart from tracing.endpoint"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=k"}, "is set by the chart from tracing.headersSecret"),
])
def test_config_refuses_secrets_and_chart_managed_settings(helm: str, config: dict[str, Any], message: str) -> None:
    assert message in render_error(helm, merged(BASE, {"config": config}))


def test_outcome_topic_needs_its_salt(helm: str) -> None:
    values = merged(BASE, {"config": {"OUTCOME_TOPIC": "pisano-sms.receipts"}})
    assert "config.OUTCOME_TOPIC needs the salt" in render_error(helm, values)


def test_registry_password_needs_its_user(helm: str) -> None:
    values = merged(BASE, {"secrets": {"schemaRegistryPassword": REGISTRY_PASSWORD}})
    assert "config.SCHEMA_REGISTRY_USER is empty" in render_error(helm, values)


@pytest.mark.parametrize("values", [
    {"replicaCout": 3},
    {"config": {"kafka_topics": "lower-case names are not env names"}},
    {"httpPort": 0},
    {"secrets": {"redisUrl": "http://not-redis"}},
    {"image": {"digest": "latest"}},
    {"secrets": {"replaySigningKey": "too-short"}},
    {"tracing": {"endpoint": "grpc://otel-collector:4317"}},
    {"tracing": {"sampler": "sometimes"}},
    {"tokens": {"refreshMs": 10}},
    {"tokens": {"provider": "no spaces allowed"}},
    {"secrets": {"outcomePhoneSalt": "too-short"}},
    # 18 characters, but the consumer reads the file stripped: 14 are left, and it refuses them.
    {"secrets": {"suppressionKey": "  " + "k" * 14 + "\n\n"}},
    {"terminationGraceMarginSeconds": 10},
], ids=["typo", "env-name", "port-0", "redis-url", "digest", "short-replay-key", "otlp-grpc", "sampler",
        "token-refresh", "token-provider", "short-outcome-salt", "short-key-in-whitespace", "grace-margin"])
def test_schema_rejects_bad_values(helm: str, values: dict[str, Any]) -> None:
    assert "values don't meet the specifications of the schema" in render_error(helm, merged(BASE, values))


def release_notes(helm: str, values: dict[str, Any], tmp_path: Path) -> str:
    """NOTES.txt as `helm install` prints it (`helm template` skips it, and a dry-run install
    needs a cluster): rendered through a copy of the chart that includes it in a manifest."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_for_test.tpl").write_text('{{- define "test.notes" -}}\n' + notes + "{{- end -}}\n")
    (chart / "templates" / "notes-for-test.yaml").write_text('notes: {{ include "test.notes" . | toJson }}\n')
    result = run_helm(helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--show-only",
                      "templates/notes-for-test.yaml", values=values)
    assert result.returncode == 0, result.stderr
    return str(yaml.safe_load(result.stdout)["notes"])


def test_the_notes_warn_when_keda_may_scale_to_zero(helm: str, tmp_path: Path) -> None:
    """Issue 11, finding 2: with no member, the group's offsets expire after offsets.retention.minutes."""
    to_zero = release_notes(helm, merged(BASE, {"keda": {"enabled": True, "minReplicas": 0}}), tmp_path / "zero")
    assert "WARNING: keda.minReplicas is 0" in to_zero and "offsets.retention.minutes" in to_zero
    assert "minReplicas" not in release_notes(helm, merged(BASE, {"keda": {"enabled": True}}), tmp_path / "one")


# ------------------------------------------------------------------------------ issue 15: kube-score


def test_kube_score_finds_nothing_critical(scenario: tuple[str, list[dict[str, Any]]], helm: str,
                                           kube_score: str) -> None:
    """Every scenario's manifests, scored as rendered (CRDs are left alone by kube-score)."""
    name, _ = scenario
    values = SCENARIOS[name]
    manifests = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values)
    assert manifests.returncode == 0, manifests.stderr
    command = [kube_score, "score", "--output-format", "ci", "--kubernetes-version", "v1.25",
               "--enable-optional-test", "container-seccomp-profile",
               "--enable-optional-test", "container-ports-check"]
    if "cpu" not in values.get("resources", {}).get("limits", {}):
        command.append(CPU_LIMIT_SKIP)
    for check in KUBE_SCORE_SKIPS.get(name, {}):
        command += ["--ignore-test", check]
    result = subprocess.run([*command, "-"], input=manifests.stdout, capture_output=True, text=True, timeout=60,
                            check=False)
    findings = [line for line in result.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))]
    assert not findings, "\n".join(findings)
    scored = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("[OK]")}
    pods = {doc["metadata"]["name"] for doc in render(helm, values) if doc["kind"] in {"Deployment", "Job", "Pod"}}
    assert pods <= scored, f"kube-score did not score {pods - scored}"  # it read what we rendered


def test_kube_score_reports_what_the_chart_fixed(helm: str, kube_score: str, tmp_path: Path) -> None:
    """The test above can fail: with the 0.2.0 chart's settings back, kube-score names each of them."""
    values = merged(BASE, {"image": {"pullPolicy": "IfNotPresent"}, "networkPolicy": {"enabled": False},
                           "resources": {"requests": {"ephemeral-storage": None},
                                         "limits": {"ephemeral-storage": None}},
                           "podAntiAffinity": ""})
    manifests = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values)
    assert manifests.returncode == 0, manifests.stderr
    result = subprocess.run([kube_score, "score", "--output-format", "ci", CPU_LIMIT_SKIP, "-"],
                            input=manifests.stdout, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    for finding in ("ImagePullPolicy is not set to Always", "Ephemeral Storage limit is not set",
                    "Ephemeral Storage request is not set", "does not have a matching NetworkPolicy",
                    "does not have a host podAntiAffinity set"):
        assert finding in result.stdout, finding


# ------------------------------------------------------------------------------ issue 15: NetworkPolicy


def policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc["spec"] for doc in docs if doc["kind"] == "NetworkPolicy"}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and In expressions, all the chart uses) against pod labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def pod_labels_by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out = {}
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            out[doc["kind"]] = doc["spec"]["template"]["metadata"]["labels"]
        elif doc["kind"] == "Pod":
            out["Pod"] = doc["metadata"]["labels"]
    return out


def egress_ports(rule: dict[str, Any]) -> list[tuple[str, int | str]]:
    return [(port["protocol"], port["port"]) for port in rule["ports"]]


def test_network_policy_lets_in_metrics_only_and_out_to_the_dependencies(helm: str) -> None:
    docs = render(helm, SCENARIOS["network-policy"])
    found = policies(docs)
    consumer, tools = found[FULLNAME], found[f"{FULLNAME}-tools"]
    labels = pod_labels_by_kind(docs)
    # Each pod is selected by exactly one policy: the consumer's by its own, the check by the tools'.
    assert selects(consumer["podSelector"], labels["Deployment"])
    assert not selects(tools["podSelector"], labels["Deployment"])
    assert selects(tools["podSelector"], labels["Pod"]) and not selects(consumer["podSelector"], labels["Pod"])
    assert consumer["policyTypes"] == tools["policyTypes"] == ["Ingress", "Egress"]
    # In: the metrics/health port only, from the monitoring namespace. The tools take nothing.
    assert consumer["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}],
                                    "from": SCENARIOS["network-policy"]["networkPolicy"]["ingress"]["from"]}]
    assert "http" in {p["name"] for p in container(docs)["ports"]}
    assert "ingress" not in tools
    # Out: Kafka (the bootstrap servers' port), Redis, Pisano, the registry, DNS, then the extra rule.
    kafka, redis, pisano, registry, dns, extra = consumer["egress"]
    assert egress_ports(kafka) == [("TCP", 9093)]
    assert kafka["to"] == [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "kafka"}}}]
    assert egress_ports(redis) == [("TCP", 6379), ("TCP", 26379)] and "to" not in redis
    assert egress_ports(pisano) == [("TCP", 443)] and pisano["to"][0]["ipBlock"]["except"] == ["10.0.0.0/8"]
    assert egress_ports(registry) == [("TCP", 8081)]
    assert egress_ports(dns) == [("UDP", 53), ("TCP", 53)]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "kube-system"}}}]
    assert egress_ports(extra) == [("TCP", 4317)]
    # The replay Job and the check talk to the same places.
    assert tools["egress"] == consumer["egress"]


@pytest.mark.parametrize(("values", "kafka", "redis", "pisano"), [
    ({}, [9092], [6379], [443]),
    ({"config": {"KAFKA_BOOTSTRAP_SERVERS": "a:9094, b:9095,c:9094", "PISANO_URL": "http://pisano.local:8080"},
      "secrets": {"redisUrl": "rediss://u:p@redis.data:6380/0"}}, [9094, 9095], [6380], [8080]),
    # With an existing Secret the chart cannot read the Redis URL: Redis's default port.
    ({"secrets": {"existingSecret": "mine", "redisUrl": "redis://r:7000"}}, [9092], [6379], [443]),
], ids=["defaults", "from-config", "existing-secret"])
def test_network_policy_ports_follow_the_configuration(helm: str, values: dict[str, Any], kafka: list[int],
                                                       redis: list[int], pisano: list[int]) -> None:
    egress = policies(render(helm, values))[FULLNAME]["egress"]
    assert [[port for _, port in egress_ports(rule)] for rule in egress[:3]] == [kafka, redis, pisano]
    assert len(egress) == 4  # no SCHEMA_REGISTRY_URL: no rule for it; then DNS


def test_network_policy_lets_spans_out_to_the_collector(helm: str) -> None:
    """Tracing on: both policies let the pods reach the collector, on the endpoint's port and to
    the peers of tracing.egress; off, no rule for it."""
    values = SCENARIOS["tracing-and-token-provider"]
    found = policies(render(helm, values))
    for policy in found.values():
        collector = policy["egress"][3]  # after Kafka, Redis and Pisano; before DNS
        assert egress_ports(collector) == [("TCP", 4318)]
        assert collector["to"] == values["tracing"]["egress"]["to"]
    https = merged(BASE, {"tracing": {"endpoint": "https://otlp.vendor.example", "egress": {"ports": []}}})
    assert egress_ports(policies(render(helm, https))[FULLNAME]["egress"][3]) == [("TCP", 443)]
    given = merged(BASE, {"tracing": {"endpoint": "http://c:4318", "egress": {"ports": [4318, 14318]}}})
    assert egress_ports(policies(render(helm, given))[FULLNAME]["egress"][3]) == [("TCP", 4318), ("TCP", 14318)]
    assert len(policies(render(helm, BASE))[FULLNAME]["egress"]) == 4  # Kafka, Redis, Pisano, DNS


def test_tracing_values_render_the_otel_environment(helm: str) -> None:
    docs = render(helm, SCENARIOS["tracing-and-token-provider"])
    data = config_data(docs)
    assert {k: v for k, v in data.items() if k.startswith("OTEL_")} == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "sms-prod",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_SPAN_LINK_COUNT_LIMIT": "5000",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
    }
    # The collector's credentials come from their Secret, into every pod of the chart.
    for spec in [pod_spec(docs), one(docs, "Pod")["spec"]]:
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"] == {
            "secretKeyRef": {"name": "otel-auth", "key": "headers"}}
    # Off by default: no OTEL_* at all, so the consumer imports nothing of OpenTelemetry.
    off = render(helm, BASE)
    assert not [k for k in config_data(off) if k.startswith("OTEL_")]
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in env_of(off)
    # A headers Secret without tracing on wires nothing.
    quiet = render(helm, merged(BASE, {"tracing": {"headersSecret": {"name": "otel-auth", "key": "headers"}}}))
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in env_of(quiet)


def test_token_provider_replaces_the_token_file(helm: str) -> None:
    """PISANO_TOKEN_PROVIDER and a token file are exclusive for the consumer (settings refuse
    both): with a provider, no token file is set nor mounted; the other secret files still are."""
    docs = render(helm, SCENARIOS["tracing-and-token-provider"])
    data = config_data(docs)
    assert data["PISANO_TOKEN_PROVIDER"] == "mycompany.secrets:pisano_token"
    assert data["PISANO_TOKEN_REFRESH_MS"] == "5000"
    assert "PISANO_API_TOKEN_FILE" not in data
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "pisano-token")["secret"]
    assert volume["items"] == [{"key": "replay-signing-key", "path": "replay-signing-key"}]
    # Nothing else to mount: no volume at all (a Secret volume with no items would mount every key).
    alone = render(helm, merged(BASE, {"tokens": {"provider": "vault"}}))
    assert "pisano-token" not in {v["name"] for v in pod_spec(alone)["volumes"]}
    assert "pisano-token" not in {m["name"] for m in container(alone)["volumeMounts"]}
    # Without one: the token file, refreshed every second by default.
    default = config_data(render(helm, BASE))
    assert default["PISANO_API_TOKEN_FILE"] == "/var/run/secrets/pisano-sms/token"
    assert default["PISANO_TOKEN_REFRESH_MS"] == "1000" and "PISANO_TOKEN_PROVIDER" not in default


def test_network_policy_can_be_turned_off(helm: str) -> None:
    assert "NetworkPolicy" not in kinds(render(helm, merged(BASE, {"networkPolicy": {"enabled": False}})))


# ------------------------------------------------------------------------------ issue 15: replay Job, helm test


def job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Job")


def same_pod_as_the_consumer(docs: list[dict[str, Any]], spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The tool pod runs the consumer's image with its settings, Secrets, files and hardening."""
    consumer_pod, consumer = pod_spec(docs), container(docs)
    assert [c["name"] for c in spec["containers"]] == [name]
    tool = spec["containers"][0]
    for field in ("image", "imagePullPolicy", "env", "volumeMounts", "securityContext"):
        assert tool[field] == consumer[field], field
    for field in ("securityContext", "volumes", "serviceAccountName", "automountServiceAccountToken",
                  "enableServiceLinks"):
        assert spec[field] == consumer_pod[field], field
    assert spec["restartPolicy"] == "Never"
    assert {"cpu", "memory", "ephemeral-storage"} <= set(tool["resources"]["limits"])
    return dict(tool)


def test_replay_job_is_opt_in(helm: str) -> None:
    assert "Job" not in kinds(render(helm, BASE))
    assert "replay.runId is required" in render_error(helm, merged(BASE, {"replay": {"enabled": True}}))


def test_replay_job_name_is_never_cut(helm: str) -> None:
    """The runbook waits for job/<fullname>-replay-<runId>: a name cut to 63 characters would
    differ from it, and two run ids alike up to the cut would collide."""
    fullname = "payments-pisano-sms-consumer-prod"  # a long release name leaves less for the run id
    longest = 63 - len(f"{fullname}-replay-")
    fits = merged(BASE, {"fullnameOverride": fullname, "replay": {"enabled": True, "runId": "a" * longest}})
    assert job(render(helm, fits))["metadata"]["name"] == f"{fullname}-replay-{'a' * longest}"
    error = render_error(helm, merged(fits, {"replay": {"runId": "a" * (longest + 1)}}))
    assert f"use a runId of at most {longest}" in error


def test_replay_job_runs_the_replay_with_the_consumers_pod(helm: str) -> None:
    docs = render(helm, SCENARIOS["replay-job"])
    replay = job(docs)
    assert replay["metadata"]["name"] == f"{FULLNAME}-replay-inc4711"
    spec = replay["spec"]
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (1, 1, 0)
    assert spec["ttlSecondsAfterFinished"] == 604800 and spec["activeDeadlineSeconds"] == 3600
    tool = same_pod_as_the_consumer(docs, spec["template"]["spec"], "replay")
    assert tool["args"] == [
        "replay", "--error-code", "13001", "--error-code", "13034", "--reason", "pisano_error", "--reason", "ambiguous",
        "--campaign", "3f0c2a1e-0000-4000-8000-000000000001", "--since", "2026-11-26T10:00Z", "--until", "2026-11-27",
        "--limit", "500", "--max-replays", "2", "--to-topic", "transactions", "--group", "replay-inc4711",
        "--past-horizon"]
    assert replay["metadata"]["annotations"]["pisano-sms/replay-args"] == " ".join(tool["args"])
    # It signs with the fleet's key: the same file the consumers verify with.
    assert config_data(docs)["REPLAY_SIGNING_KEY_FILE"] == "/var/run/secrets/pisano-sms/replay-signing-key"
    # Its pod is no consumer: the Service, the PodDisruptionBudget and the Deployment leave it alone.
    labels = spec["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "replay"
    for selector in (one(docs, "Service")["spec"]["selector"],
                     one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                     one(docs, "Deployment")["spec"]["selector"]["matchLabels"]):
        assert not selector.items() <= labels.items()
    assert selects(policies(docs)[f"{FULLNAME}-tools"]["podSelector"], labels)


def test_replay_job_args_are_ones_the_cli_accepts(helm: str) -> None:
    """Parsed by the real `pisano-sms replay` (options and filters), without running it."""
    from consumer.cli import main
    from consumer.sre.dlq_read import Filters

    for scenario in ("replay-job", "digest-pinned"):
        args = job(render(helm, SCENARIOS[scenario]))["spec"]["template"]["spec"]["containers"][0]["args"]
        command = main.get_command(click.Context(main), args[0])
        assert args[0] == "replay" and command is not None
        with command.make_context(args[0], list(args[1:])) as context:
            params = context.params
        Filters.from_options(params["error_codes"], params["reasons"], params["campaigns"], params["since"],
                             params["until"])
        if scenario == "digest-pinned":  # the defaults: a dry run, no filters
            assert params["dry_run"] is True and not params["error_codes"] and params["max_replays"] == 3
        else:
            assert params["dry_run"] is False and params["limit"] == 500 and params["to_topic"] == "transactions"


def test_replay_job_grace_outlasts_the_replays_sigterm_checkpoint(helm: str) -> None:
    """On SIGTERM (a deleted Job, activeDeadlineSeconds) `replay` still waits up to ACK_TIMEOUT_S
    for Kafka's acknowledgements before it commits them (consumer/sre/replay.py); the kubelet's
    SIGKILL at the default 30 s cut that wait, so what Kafka acknowledged was never committed and
    the next run published it again. The grace is the wait plus replay.terminationGraceMarginSeconds."""
    from consumer.sre import replay

    for margin in (None, 15, 45):
        values = SCENARIOS["replay-job"] if margin is None else \
            merged(SCENARIOS["replay-job"], {"replay": {"terminationGraceMarginSeconds": margin}})
        grace = job(render(helm, values))["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace == replay.ACK_TIMEOUT_S + (30 if margin is None else margin)
    schema = json.loads((CHART / "values.schema.json").read_text())
    margin_schema = schema["properties"]["replay"]["properties"]["terminationGraceMarginSeconds"]
    # The commit, the lock's check and release (Redis, 2 s each) and the consumer's close after the wait.
    assert margin_schema["minimum"] >= 15
    assert "values don't meet the specifications of the schema" in render_error(
        helm, merged(SCENARIOS["replay-job"], {"replay": {"terminationGraceMarginSeconds": 5}}))


def test_replay_of_ambiguous_needs_the_signing_key(helm: str) -> None:
    unsigned = merged(BASE, {"replay": {"enabled": True, "runId": "x", "reasons": ["ambiguous"], "dryRun": False}})
    assert "no replay signing key is wired" in render_error(helm, unsigned)
    # A dry run publishes nothing, so it may count them without the key.
    assert "Job" in kinds(render(helm, merged(unsigned, {"replay": {"dryRun": True}})))


@pytest.mark.parametrize("replay", [{"runId": "INC_4711"}, {"runId": "x", "reasons": ["typo"]},
                                    {"runId": "x", "since": "last tuesday"}, {"runId": "x", "errorCodes": ["13x"]}],
                         ids=["run-id", "reason", "since", "error-code"])
def test_schema_rejects_bad_replay_values(helm: str, replay: dict[str, Any]) -> None:
    values = merged(BASE, {"replay": {"enabled": True, **replay}})
    assert "values don't meet the specifications of the schema" in render_error(helm, values)


def test_helm_test_hook_runs_check_with_the_consumers_pod(helm: str) -> None:
    docs = render(helm, SCENARIOS["replay-job"])
    pod = one(docs, "Pod")
    assert pod["metadata"]["name"] == f"{FULLNAME}-check"
    assert pod["metadata"]["annotations"] == {"helm.sh/hook": "test",
                                              "helm.sh/hook-delete-policy": "before-hook-creation"}
    tool = same_pod_as_the_consumer(docs, pod["spec"], "check")
    assert tool["args"] == ["check", "--campaign", "3f0c2a1e-0000-4000-8000-000000000001"]
    assert one(render(helm, BASE), "Pod")["spec"]["containers"][0]["args"] == ["check"]
    assert "Pod" not in kinds(render(helm, merged(BASE, {"tests": {"enabled": False}})))
    # `helm template --skip-tests` (what GitOps tools apply) leaves it out: it is a hook only.
    result = run_helm(helm, "template", RELEASE, str(CHART), "--skip-tests", values=BASE)
    assert result.returncode == 0 and "kind: Pod\n" not in result.stdout


# ------------------------------------------------------------------------------ issue 15: hardening


def test_scheduling_spreads_replicas_over_nodes_and_zones(helm: str) -> None:
    default = pod_spec(render(helm, BASE))
    preferred = default["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    term = preferred[0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    deployment = one(render(helm, BASE), "Deployment")
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert default["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert default["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "ScheduleAnyway"
    hard = pod_spec(render(helm, SCENARIOS["cpu-limit-hard-spread"]))["affinity"]["podAntiAffinity"]
    assert hard["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["sms"]}]}]}}}
    assert pod_spec(render(helm, merged(BASE, {"affinity": own})))["affinity"] == own
    none = pod_spec(render(helm, merged(BASE, {"podAntiAffinity": "", "topologySpreadConstraints": []})))
    assert "affinity" not in none and "topologySpreadConstraints" not in none


def test_resources_bound_ephemeral_storage_and_cpu_limit_is_an_option(helm: str) -> None:
    resources = container(render(helm, BASE))["resources"]
    assert resources["requests"]["ephemeral-storage"] == "128Mi" and resources["limits"]["ephemeral-storage"] == "256Mi"
    assert "cpu" not in resources["limits"]
    # /tmp's emptyDir fits in the limit with the log files beside it.
    assert container(render(helm, SCENARIOS["cpu-limit-hard-spread"]))["resources"]["limits"]["cpu"] == "2"


def test_image_pull_policy_and_digest_pinning(helm: str) -> None:
    default = container(render(helm, BASE))
    assert default["imagePullPolicy"] == "Always" and default["image"] == "pisano-sms-consumer:0.2.0"
    docs = render(helm, SCENARIOS["digest-pinned"])
    pinned = f"registry.example.com/pisano-sms-consumer@{DIGEST}"
    assert container(docs)["image"] == pinned and container(docs)["imagePullPolicy"] == "IfNotPresent"
    assert job(docs)["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    assert one(docs, "Pod")["spec"]["containers"][0]["image"] == pinned


def test_health_server_bind_address(helm: str) -> None:
    assert config_data(render(helm, BASE))["HTTP_BIND_ADDRESS"] == "0.0.0.0"
    assert config_data(render(helm, SCENARIOS["cpu-limit-hard-spread"]))["HTTP_BIND_ADDRESS"] == "::"
    for loopback in ("127.0.0.1", "::1"):
        assert "is a loopback address" in render_error(helm, merged(BASE, {"httpBindAddress": loopback}))
    assert "config.HTTP_BIND_ADDRESS is set by the chart" in render_error(
        helm, merged(BASE, {"config": {"HTTP_BIND_ADDRESS": "0.0.0.0"}}))
    # The connection bounds are consumer settings, passed through `config`.
    data = config_data(render(helm, merged(BASE, {"config": {"HTTP_MAX_CONNECTIONS": 32}})))
    assert data["HTTP_MAX_CONNECTIONS"] == "32"


def test_chart_carries_artifact_hub_annotations() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    annotations = chart["annotations"]
    assert all(isinstance(value, str) for value in annotations.values())  # Chart.yaml annotations are strings
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert annotations["artifacthub.io/license"] == project["license"]["text"]
    images = yaml.safe_load(annotations["artifacthub.io/images"])
    assert images == [{"name": "consumer", "image": f"pisano-sms-consumer:{chart['appVersion']}"}]
    changes = yaml.safe_load(annotations["artifacthub.io/changes"])
    assert changes and all(c["kind"] in {"added", "changed", "deprecated", "removed", "fixed", "security"}
                           and c["description"] for c in changes)


def test_the_notes_point_at_helm_test(helm: str, tmp_path: Path) -> None:
    assert f"helm test {RELEASE} -n {NAMESPACE} --logs" in release_notes(helm, BASE, tmp_path / "on")
    off = release_notes(helm, merged(BASE, {"tests": {"enabled": False}}), tmp_path / "off")
    assert "helm test" not in off and "-- pisano-sms check" in off


def test_upgrade_strategy_is_rolling_unless_recreate_is_asked(helm: str) -> None:
    # An upgrade whose versions must not run side by side (0.2.x -> 0.3.0) asks for Recreate.
    assert one(render(helm, BASE), "Deployment")["spec"]["strategy"] == {"type": "RollingUpdate"}
    rolling = merged(BASE, {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}})
    assert one(render(helm, rolling), "Deployment")["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    recreate = one(render(helm, merged(BASE, {"strategy": {"type": "Recreate"}})), "Deployment")
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(recreate, version, strict=True)


@pytest.mark.parametrize("strategy", [
    {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}},
    {"type": "BlueGreen"},
], ids=["recreate-with-rolling-settings", "unknown-type"])
def test_schema_rejects_bad_strategies(helm: str, strategy: dict[str, Any]) -> None:
    error = render_error(helm, merged(BASE, {"strategy": strategy}))
    assert "values don't meet the specifications of the schema" in error


# ------------------------------------------------------------------------------ settings and secrets

def test_secret_files_may_end_with_a_newline(helm: str) -> None:
    """`--set-file secrets.suppressionKey=key.txt` (or a key file written by `echo`) ends with a
    newline. The three keys are mounted as *_FILE, which the consumer reads stripped: the schema must
    take them as the consumer does, and the Secret must hold them as given."""
    keys = {"suppressionKey": "opt-out-key-5c1e0a9b7d3f\n", "replaySigningKey": REPLAY_KEY + "\n",
            "outcomePhoneSalt": OUTCOME_SALT + "\n"}
    docs = render(helm, merged(BASE, {"secrets": keys}))
    data = config_data(docs)
    for setting in ("SUPPRESSION_KEY_FILE", "REPLAY_SIGNING_KEY_FILE", "OUTCOME_PHONE_SALT_FILE"):
        assert data[setting].startswith("/var/run/secrets/pisano-sms/")
    secret = one(docs, "Secret")["data"]
    assert base64.b64decode(secret["suppression-key"]).decode() == keys["suppressionKey"]


def _is_secret(field: str) -> bool:
    return "SecretStr" in str(Settings.model_fields[field].annotation)


# Settings the chart writes from its own values (the comment above `config` in values.yaml).
CHART_WRITTEN = {"http_port", "http_bind_address", "shutdown_grace_ms", "max_buffered_bytes", "mapping_file",
                 "avro_schema_file", "pisano_api_token_file", "pisano_token_provider", "pisano_token_refresh_ms",
                 "schema_registry_password_file", "replay_signing_key_file", "suppression_key_file",
                 "outcome_phone_salt_file", "schema_registry_ca_file", "schema_registry_cert_file",
                 "schema_registry_key_file"}


def test_every_setting_of_the_consumer_reaches_it_through_the_chart(helm: str) -> None:
    """Derived from consumer/config/settings.py, so a setting added there is covered here: a plain
    one passes through `config` to the ConfigMap verbatim; a secret one (SecretStr) comes from the
    Secret, as a *_FILE mount or a secretKeyRef, never from `config`. `kafka` is the
    KAFKA_CONFIG_* passthrough."""
    fields = [f for f in Settings.model_fields if f != "kafka"]
    assert set(fields) >= CHART_WRITTEN, "CHART_WRITTEN names a setting the consumer no longer has"
    plain = {f.upper(): "1" for f in fields if not _is_secret(f) and f not in CHART_WRITTEN}
    secrets = {f for f in fields if _is_secret(f)}
    values = merged(BASE, {
        "config": plain,
        "secrets": {"schemaRegistryPassword": REGISTRY_PASSWORD, "replaySigningKey": REPLAY_KEY,
                    "suppressionKey": "opt-out-key-5c1e0a9b7d3f", "outcomePhoneSalt": OUTCOME_SALT},
        "schemaRegistryTls": {"secretName": "registry-client-tls", "certKey": "tls.crt", "keyKey": "tls.key"},
        "mapping": {"event_id": "id"}, "avroSchema": {"type": "string"},
    })
    docs = render(helm, values)
    data, env = config_data(docs), env_of(docs)
    for name in plain:
        assert data.get(name) == "1", f"config.{name} does not reach the ConfigMap"
    for field in CHART_WRITTEN - {"pisano_token_provider"}:  # the token provider replaces the token file
        assert field.upper() in data, f"{field.upper()} is not written by the chart"
    for field in secrets:
        name = field.upper()
        wired = f"{name}_FILE" in data or "secretKeyRef" in env.get(name, {}).get("valueFrom", {})
        assert wired, f"the secret setting {name} is not wired from the Secret"
        if name != "REDIS_URL":  # the one secret carried as an env var: tested with the URL itself
            refused = render_error(helm, merged(BASE, {"config": {name: "s" * 20}}))
            assert f"config.{name} looks like a secret" in refused


def test_grace_margin_covers_the_consumers_steps_after_its_shutdown_grace() -> None:
    """After SHUTDOWN_GRACE_MS the consumer still leaves the group, closes its consumer and flushes
    its producer, each bounded (consumer/pipeline.py), plus the dead-letter and receipt flushes'
    0.5 s floors: the schema's smallest margin must outlast them, or the kubelet's SIGKILL cuts
    the group leave and the commit of what was delivered."""
    from consumer import pipeline
    schema = json.loads((CHART / "values.schema.json").read_text())
    after_grace = pipeline.LEAVE_TIMEOUT_S + pipeline.CLOSE_TIMEOUT_S + 5 + 2 * 0.5
    assert schema["properties"]["terminationGraceMarginSeconds"]["minimum"] > after_grace
