"""SIGTERM to a real `suppress import` process (consumer/sre/suppress.py, consumer/sre/signals.py):
it ends with the summary so far, the lines on the list, and exit 143; importing again completes
the list. A few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import Stack, unique
from tests.support.consumers import ROOT

ROWS = 400_000


def test_suppress_import_on_sigterm_says_what_is_on_the_list_and_a_rerun_completes_it(
        stack: Stack, tmp_path: Path, redis_client) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "opt-outs.csv"
    path.write_text("phone\n" + "".join(f"+90532{n:07d}\n" for n in range(ROWS)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "PISANO_", "SUPPRESSION_"))}
    env.update(REDIS_URL=stack.redis_url, REDIS_KEY_PREFIX=unique("sig"), SUPPRESSION_KEY="signal-test-key-0123456789")
    command = [sys.executable, "-m", "consumer", "suppress", "import", str(path)]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # a progress line every 100,000 rows
        if line.startswith("importing: 100,000 rows"):
            process.send_signal(signal.SIGTERM)
            break
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, out + err
    said = " ".join(err.split())
    assert "terminated (SIGTERM) at line" in said and "are on the list" in said
    assert "import the whole file again" in said and "idempotent" in said and "Traceback" not in err
    assert "rows read" in out
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"rows read {ROWS:,}" in again.stdout and "already on the list 0" not in again.stdout
