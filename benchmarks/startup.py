#!/usr/bin/env python3
"""Start-up CPU of `pisano-sms run`: the fixed cost every process pays before its first poll.

    python scripts/localstack.py run -- python benchmarks/startup.py --runs 7

Two figures, each the median of --runs fresh processes, whole process (interpreter start, all
threads), from bytecode (compiled first, as the image is; see benchmarks/throughput.py):
- `import consumer.app`: the modules the `run` path loads;
- `run` to its first poll: `python -m consumer run` against the local stack, ended at the
  Kafka consumer's first `consume` call (a stand-in subclass of confluent_kafka.Consumer
  reads the process's CPU there and exits), so settings, connections, Redis checks and the
  builders are in it, and no event is.

Issue 14: the throughput benchmark counts whole-process CPU per event, start-up included.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import socket
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in the child: whole-process CPU (all threads, the interpreter's start included) at the
# first consume, then out without the shutdown's work.
_FIRST_POLL = """
import os, resource, sys
import confluent_kafka

def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

class _FirstPoll(confluent_kafka.Consumer):
    def consume(self, *args, **kwargs):
        print("FIRST_POLL_CPU", _cpu(), flush=True)
        os._exit(0)

    poll = consume

confluent_kafka.Consumer = _FirstPoll
sys.argv = ["pisano-sms", "run"]
from consumer.cli import main
main()
"""

_IMPORT = """
import resource
import consumer.app
usage = resource.getrusage(resource.RUSAGE_SELF)
print("IMPORT_CPU", usage.ru_utime + usage.ru_stime, flush=True)
"""


def _cpu_of(code: str, tag: str, env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(tag):
            return float(line.split()[1])
    raise SystemExit(f"no {tag} from the child (exit {done.returncode}):\n{done.stderr[-3000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--import-only", action="store_true", help="only `import consumer.app` (no stack needed)")
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "consumer", quiet=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    imports = [_cpu_of(_IMPORT, "IMPORT_CPU", env) for _ in range(args.runs)]
    result = {"import_consumer_app_cpu_s": round(statistics.median(imports), 3)}
    if not args.import_only:
        group = f"startup-{uuid.uuid4().hex[:6]}"
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:16379/0"),
            "KAFKA_TOPICS": f"{group}-in", "KAFKA_GROUP_ID": group, "DLQ_TOPIC": f"{group}.dlq",
            "PISANO_URL": "http://127.0.0.1:9/", "PISANO_API_TOKEN": "startup-token",
            "PISANO_ALLOW_INSECURE": "true", "PISANO_RATE_LIMITS": "off", "HTTP_PORT": str(_free_port()),
            "LOG_LEVEL": "WARNING", "REDIS_KEY_PREFIX": group,
        })
        polls = [_cpu_of(_FIRST_POLL, "FIRST_POLL_CPU", env) for _ in range(args.runs)]
        result["run_to_first_poll_cpu_s"] = round(statistics.median(polls), 3)
        result["run_to_first_poll_all_s"] = [round(p, 3) for p in polls]
    result["import_all_s"] = [round(i, 3) for i in imports]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
