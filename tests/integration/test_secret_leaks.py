"""No secret and no full phone number anywhere an operator or a DLQ reader looks (issue 10).

One replica runs with every secret configured the way production mounts them (the token from a
file ending in a newline, Kafka SASL, Redis over TLS with an ACL password, a schema registry
password) against a hostile Pisano: every answer is an error whose body echoes the request's
Authorization header and body, phone numbers included, and a reason phrase quoting a URL with
credentials. Then `check` runs twice: once with registry credentials in the URL, once with the
Redis password as `?password=`. Every log line, every dead-letter header and both `check`
reports are searched for each secret and each phone number, in every form it could take.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, localstack, unique
from tests.integration.test_production_settings import TOKEN, secured_env
from tests.support.consumers import ROOT, ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, end_offsets, produce, read_all
from tests.support.scenario import mixed_traffic

REGISTRY_PASSWORD = "sr-pw-4d1e9b7c"
REPLAY_KEY = "replay-key-6a0f3e9d2c7b1a85"
SUPPRESSION_KEY = "opt-out-key-8e2b61f0c9d4a7"


class EchoingPisano(BaseHTTPRequestHandler):
    """Refuses every request (13034: request scope, no bisection) and echoes it back."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = json.dumps({"status": "bad_request", "code": 13034,
                             "message": f"Invalid Flow for Authorization: {self.headers.get('Authorization')} "
                                        f"via https://proxy-user:proxy-pw-31c7@gateway/ and body {body.decode()}"})
        answer_bytes = answer.encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer_bytes)))
        self.end_headers()
        self.wfile.write(answer_bytes)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def echoing_pisano(tls_dir: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingPisano)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_dir / "server.crt", tls_dir / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def check(env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "consumer", "check"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    return result.stdout + result.stderr


def phone_forms(phone: str) -> set[str]:
    """+905321234567 as it could be written: E.164, without +, national, and the subscriber part."""
    return {phone, phone.lstrip("+"), "0" + phone[3:], phone[3:]}


@pytest.mark.slow
def test_no_secret_or_phone_in_logs_dead_letters_or_check(local_stack: Stack, new_topic, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          redis_client, processes) -> None:  # type: ignore[no-untyped-def]
    stack = local_stack
    values = localstack.settings()
    tls_dir = Path(values["PISANO_STACK_TLS_DIR"])
    topic, dlq, group = new_topic(partitions=2), new_topic("dlq"), unique("g")
    traffic = mixed_traffic(40, duplicate_every=0, invalid_every=10, prefix=unique("leak"))
    produce(stack.bootstrap, topic, traffic.records)
    with echoing_pisano(tls_dir) as pisano_url:
        env = secured_env(stack, tmp_path, **consumer_env(
            bootstrap=stack.bootstrap, redis_url=stack.redis_url, topic=topic, dlq=dlq, group=group,
            pisano_url=pisano_url, token=TOKEN, BATCH_MAX_RECIPIENTS=10))
        env.update(SCHEMA_REGISTRY_PASSWORD=REGISTRY_PASSWORD, REPLAY_SIGNING_KEY=REPLAY_KEY,
                   SUPPRESSION_KEY=SUPPRESSION_KEY)
        replica = ConsumerProcess(env, tmp_path / "consumer.log").start()
        processes.append(replica)
        replica.wait_ready()
        ends = end_offsets(stack.bootstrap, topic)
        wait_until(lambda: all_committed(stack.bootstrap, group, topic, ends), 120, "every record has an outcome")
        assert replica.terminate() == 0

        registry_env = {**env, "SCHEMA_REGISTRY_URL": f"https://sr-user:{REGISTRY_PASSWORD}@127.0.0.1:9/"}
        registry_env.pop("SCHEMA_REGISTRY_PASSWORD")
        redis_password = values["PISANO_STACK_REDIS_ACL_PASSWORD"]
        query_redis = (f"{values['PISANO_STACK_REDIS_TLS_URL']}?username={values['PISANO_STACK_REDIS_ACL_USER']}"
                       f"&password={redis_password}&ssl_ca_certs={tls_dir / 'ca.pem'}")
        reports = check(registry_env) + check({**env, "REDIS_URL": query_redis})

    dead = read_all(stack.bootstrap, dlq, expected=len(traffic.records))
    reasons = {dict(m.headers() or [])["dlq.reason"] for m in dead}
    assert b"pisano_error" in reasons  # the echoing answers did reach the dead-letter topic
    dlq_headers = "\n".join(f"{name}: {(value or b'').decode(errors='replace')}"
                            for m in dead for name, value in (m.headers() or []))
    assert "Invalid Flow for Authorization" in dlq_headers and "registry" in reports and "redis" in reports
    logs = replica.log_text()
    assert "DEBUG" in logs
    everything = {"log": logs, "dead-letter headers": dlq_headers, "check": reports}
    secrets = [TOKEN, env["KAFKA_CONFIG_SASL_PASSWORD"], redis_password, REGISTRY_PASSWORD, REPLAY_KEY,
               SUPPRESSION_KEY, "proxy-pw-31c7"]
    phones = {form for phone in traffic.valid_phones for form in phone_forms(phone)}
    leaks = {where: [s for s in [*secrets, *phones] if s in text] for where, text in everything.items()}
    assert leaks == {where: [] for where in everything}
