"""What `check --campaigns` makes of each answer to its empty request (consumer/operations/preflight.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config.settings import Settings
from consumer.errors import PisanoApiError
from consumer.operations.preflight import routed_campaigns, verdict

A = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
B = "0b6f6e2c-5d1e-4c4c-8a8a-3f1d2e9c7b10"


@pytest.mark.parametrize(("answer", "status"), [
    (None, "ok"),
    (PisanoApiError(400, 13028, "Invalid parameters"), "ok"),
    (PisanoApiError(400, 13015, "Required field not present in params!"), "ok"),
    (PisanoApiError(404, 13002, "Requested resource not found!"), "unknown campaign"),
    (PisanoApiError(404, None, "Not Found"), "unknown campaign"),
    (PisanoApiError(404, 13005, "This node, nor any of their parent has any flow"), "no flow"),
    (PisanoApiError(400, 13034, "Invalid Flow"), "invalid flow"),
    (PisanoApiError(401, 13001, "Wrong authentication token"), "wrong token"),
    (PisanoApiError(401, 13011, "User is inactive"), "wrong token"),
    (PisanoApiError(403, 13036, "Account locked"), "wrong token"),
    (PisanoApiError(429, None, "Too many requests"), "throttled"),
    (PisanoApiError(503, None, "Service Unavailable"), "failed"),
    (PisanoApiError(400, 13017, "Duplicate value"), "failed"),  # not an answer an empty list gets
])
def test_each_answer_has_its_verdict(answer: PisanoApiError | None, status: str) -> None:
    assert verdict(answer)[0] == status


def test_the_routed_campaigns_are_the_destinations_and_the_route_tables(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(f"event_id: event_id\nphone: customer.phone\ncampaign_routes:\n  field: channel\n"
                       f"  routes:\n    branch: {A}\n    web: {B}\n  default: {A}\n")
    settings = Settings(pisano_url="https://api.pisano.co", pisano_api_token="t0ken-for-tests", mapping_file=mapping,
                        destinations={"retail": {"url": "https://eu.pisano.co", "api_token": "another-t0ken",
                                                 "campaigns": [B]}})
    assert routed_campaigns(settings) == ([B, A], None)
    assert routed_campaigns(settings, ("c0ffee00-0000-4000-8000-000000000000",))[0][-1] == \
        "c0ffee00-0000-4000-8000-000000000000"
    events_name_it = Settings(pisano_url="https://api.pisano.co", pisano_api_token="t0ken-for-tests")
    campaigns, note = routed_campaigns(events_name_it)
    assert campaigns == [] and note is not None and "--campaign ID" in note
