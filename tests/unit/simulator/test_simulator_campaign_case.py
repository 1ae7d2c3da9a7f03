"""The simulator takes a campaign id in either case, as the UUID it is: the consumer sends it in
lower case, an SRE may configure it in upper case (found by review: 404 13002)."""

from __future__ import annotations

import json

from consumer.simulator.config import SimulatorConfig
from consumer.simulator.sharing import handle_sharing
from consumer.simulator.state import SimulatorState
from tests.unit.simulator.test_simulator_deliveries import ManualClock

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
BODY = json.dumps({"phone_numbers": ["+905321234567"]}).encode()


def state(**options: object) -> SimulatorState:
    config = SimulatorConfig.from_options(tokens=["tok"], rate_limits="100/1s", **options)  # type: ignore[arg-type]
    return SimulatorState(config, ManualClock(start_wall_ns=1_700_000_000_000_000_000))


def test_a_campaign_configured_in_upper_case_is_the_one_the_consumer_sends() -> None:
    answer = handle_sharing(state(campaigns=[CAMPAIGN.upper()]), "Token token=tok", CAMPAIGN, BODY).answer
    assert answer is not None and answer.http_status == 200


def test_a_campaign_code_fault_configured_in_upper_case_still_applies() -> None:
    answer = handle_sharing(state(any_campaign=True, campaign_codes=[f"{CAMPAIGN.upper()}=13034"]),
                            "Token token=tok", CAMPAIGN, BODY).answer
    assert answer is not None and answer.code == 13034
