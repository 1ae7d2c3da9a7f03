"""Environment variables named almost like a setting: a misspelling the settings never see.

The config file refuses a name it does not know. The environment cannot: a pod's environment
also holds other programs' variables and those Kubernetes derives from service names
(`REDIS_PORT=tcp://...`). But a name one letter off a setting's (`PISANO_RATE_LIMIT`) is nearly
always that setting misspelled, and the replica would run on the default without a word. So
such names are named, never their values (one may be a secret), by `check` and at every start.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from consumer.config.loading import KAFKA_PASSTHROUGH_ENV_PREFIX
from consumer.config.settings import Settings

# Read by this project outside the settings (the simulator, the local stack), or by libraries.
_OTHER_PREFIXES = (KAFKA_PASSTHROUGH_ENV_PREFIX, "PISANO_SIM_", "PISANO_STACK_", "OTEL_")
# Close enough only for a slip: a letter missing, doubled or swapped (KAFKA_TOPIC, REDIS_ULR).
_CUTOFF = 0.9


def misspelled_settings(environ: Mapping[str, str]) -> list[str]:
    """One line per variable that looks like a misspelled setting, naming the setting it meant."""
    known = [name.upper() for name in Settings.model_fields]
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if upper in known or "_" not in upper or upper.startswith(_OTHER_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=_CUTOFF)
        if close:
            found.append(f"{name} is set in the environment but is not a setting, so it is ignored "
                         f"(did you mean {close[0]}?); rename or unset it")
    return found
