"""Every failure path on real Kafka, Redis and the simulator: retried and recovered, dead-lettered
with Pisano's code, exhausted, ambiguous, isolated by bisection, cut off by the circuit breaker."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from consumer.delivery.pisano import PROBE_CAMPAIGN
from consumer.delivery.pisano_codes import CODES
from consumer.ingest.samples import phone_for
from tests.support.consumers import wait_until
from tests.support.runs import RUN_TOKEN, Run
from tests.support.scenario import CAMPAIGNS

TOKEN = RUN_TOKEN


def requests_by_status(run: Run) -> Counter[int | None]:
    return Counter(r["http_status"] for r in run.requests())


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_each_retriable_status_recovers(run: Run, new_topic: Callable[..., str], status: int) -> None:
    run.faults(error_rates={str(status): 1.0})
    records = run.events(300, CAMPAIGNS[0])
    run.start(records, new_topics=new_topic)
    wait_until(lambda: requests_by_status(run)[status] >= 2, 30, f"two {status} answers seen")
    run.faults(error_rates={})
    run.finish(dead_letters=0)
    assert len(run.delivered()) == 300 and max(run.delivered().values()) == 1
    assert run.dead == []


def test_a_real_429_pauses_the_fleet_and_the_request_goes_in_a_later_slot(
        run: Run, new_topic: Callable[..., str]) -> None:
    # Pisano is stricter than we were told: its throttle answers 429 with Retry-After.
    run.sim_config(rate_limits="1/2s")
    records = run.events(40, CAMPAIGNS[0]) + run.events(40, CAMPAIGNS[1]) + run.events(40, CAMPAIGNS[2])
    replica = run.start(records, new_topics=new_topic, PISANO_RATE_LIMITS="10/1s", PISANO_RATE_MARGIN_MS=0)
    run.finish(dead_letters=0)
    assert len(run.delivered()) == 120
    assert requests_by_status(run)[429] >= 1
    assert "Pisano throttled us: fleet paused" in replica.log_text()


def test_retries_exhausted_are_dead_lettered_with_the_last_answer(run: Run, new_topic: Callable[..., str]) -> None:
    run.faults(error_rates={"503": 1.0})
    run.start(run.events(20, CAMPAIGNS[0]), new_topics=new_topic, PISANO_MAX_ATTEMPTS=3)
    run.finish(dead_letters=20)
    headers = run.dead_headers()
    assert {h["dlq.reason"] for h in headers} == {"retries_exhausted"}
    assert {h["pisano.http.status"] for h in headers} == {"503"}
    assert {h["dlq.attempts"] for h in headers} == {"3"}
    assert requests_by_status(run)[503] == 3
    # The last request's id, as its log line names it: one request carried all 20.
    (request_id,) = {h["dlq.request.id"] for h in headers}
    assert re.fullmatch(r"[0-9a-f]{32}", request_id) and request_id in run.replica.log_text()


REQUEST_SCOPE = [c for c in (13002, 13003, 13005, 13007, 13008, 13009, 13012, 13013, 13014, 13018, 13019, 13020,
                             13026, 13029, 13031, 13034, 13035, 13037)]
RECIPIENT_SCOPE = [13000, 13015, 13017, 13024, 13028, 13038]
ACCOUNT_SCOPE = [13001, 13010, 13011, 13016, 13030, 13032, 13033, 13036]


def campaign_for(code: int) -> str:
    return f"00000000-0000-4000-8000-0000000{code}"


def test_request_and_recipient_scope_codes_are_dead_lettered_with_their_headers(
        run: Run, new_topic: Callable[..., str]) -> None:
    codes = REQUEST_SCOPE + RECIPIENT_SCOPE
    assert set(codes + ACCOUNT_SCOPE) == set(CODES)
    run.faults(campaign_codes={campaign_for(code): code for code in codes})
    records = [r for code in codes for r in run.events(3, campaign_for(code))]
    run.start(records, new_topics=new_topic)
    run.finish(dead_letters=len(records))
    by_code = Counter(h["pisano.error.code"] for h in run.dead_headers())
    assert by_code == {str(code): 3 for code in codes}
    for headers in run.dead_headers():
        code = int(headers["pisano.error.code"])
        assert headers["pisano.http.status"] == str(CODES[code].http_status)
        assert headers["dlq.reason"] == "pisano_error"
        assert headers["dlq.campaign.id"] == campaign_for(code)
        assert headers["dlq.original.topic"] == run.topic
        assert CODES[code].message.split(":")[0] in headers["pisano.error.message"]
    requests = Counter(r["campaign_id"] for r in run.requests())
    # A whole-request refusal is not split; a recipient-scope refusal is split down to single recipients.
    assert all(requests[campaign_for(code)] == 1 for code in REQUEST_SCOPE)
    assert all(requests[campaign_for(code)] == 5 for code in RECIPIENT_SCOPE)  # 3 -> 1+2 -> 1+1


def test_a_broken_campaign_opens_its_own_circuit_spends_no_slots_and_is_probed_back(
        run: Run, new_topic: Callable[..., str]) -> None:
    broken = campaign_for(13002)  # e.g. a typo in a route table: Pisano has no such campaign
    run.faults(campaign_codes={broken: 13002})
    records = run.events(100, broken) + run.events(100, CAMPAIGNS[0])
    replica = run.start(records, new_topics=new_topic, BATCH_MAX_RECIPIENTS=10, MAX_IN_FLIGHT_REQUESTS=1,
                        PISANO_RATE_LIMITS="100/1s", PISANO_RATE_MARGIN_MS=0, CIRCUIT_COOLDOWN_MS=2000)
    run.wait_all_committed()
    by_campaign = Counter(r["campaign_id"] for r in run.requests())
    assert by_campaign[broken] == 1  # the first answer opened its circuit: 9 batches, no request
    assert by_campaign[CAMPAIGNS[0]] == 10  # the other campaign is not held back
    assert replica.metric("pisano_sms_throttle_slots_granted_total") <= 11 + 1
    wait_until(lambda: replica.metric("pisano_sms_campaign_circuits_open") == 1, 10, "the open circuit exported")
    assert httpx.get(f"{replica.url}/readyz").status_code == 200  # one campaign does not unready a replica

    run.faults(campaign_codes={})  # the campaign is created at Pisano
    time.sleep(2.5)  # the cool-down: the next batch probes
    run.produce_more(run.events(20, broken))
    run.finish(dead_letters=100)
    assert {(h["pisano.error.code"], h["dlq.campaign.id"]) for h in run.dead_headers()} == {("13002", broken)}
    assert sum(1 for h in run.dead_headers() if "campaign circuit open" in h["pisano.error.message"]) == 90
    assert len(run.delivered()) == 100 + 20
    assert "circuit CLOSED for destination default, campaign" in replica.log_text()


@pytest.mark.parametrize("code", ACCOUNT_SCOPE)
def test_account_scope_codes_open_the_circuit(run: Run, new_topic: Callable[..., str], code: int) -> None:
    run.faults(token_codes={TOKEN: code})
    replica = run.start(run.events(30, CAMPAIGNS[0]), new_topics=new_topic, BATCH_MAX_RECIPIENTS=10,
                        CIRCUIT_COOLDOWN_MS=600_000)
    run.finish(dead_letters=30)
    assert {h["pisano.error.code"] for h in run.dead_headers()} == {str(code)}
    assert {h["pisano.http.status"] for h in run.dead_headers()} == {str(CODES[code].http_status)}
    # Requests already under way when the first answer came may finish (4 in flight at most);
    # after that the circuit keeps every batch from Pisano.
    assert len(run.requests()) <= 4
    assert "circuit OPEN" in replica.log_text()


def test_circuit_opens_stops_calls_probes_and_closes(run: Run, new_topic: Callable[..., str]) -> None:
    run.sim_config(tokens=["the-right-token"])  # the consumer's token is wrong
    replica = run.start(run.events(50, CAMPAIGNS[0]), new_topics=new_topic, BATCH_MAX_RECIPIENTS=10,
                        CIRCUIT_COOLDOWN_MS=1500, BATCH_MAX_WAIT_MS=100)
    run.wait_all_committed()
    calls = len(sharings(run))
    assert calls <= 4  # those in flight when the first answer came
    wait_until(lambda: replica.metric("pisano_sms_circuit_state") == 1, 10, "circuit state exported")
    run.produce_more(run.events(30, CAMPAIGNS[1]))
    run.wait_all_committed()
    # Open: dead-lettered without calling Pisano. The cool-down may end meanwhile: the replica
    # then probes (an empty request to the nil campaign, refused as the token is still wrong).
    assert len(sharings(run)) == calls
    assert httpx.get(f"{replica.url}/readyz").status_code == 503
    assert httpx.get(f"{replica.url}/readyz").json()["circuit_open"] is True

    run.sim_config(tokens=[TOKEN])  # the SRE fixes the token on the Pisano side
    # After the cool-down a replica probes (an empty request that sends no SMS) and closes it.
    wait_until(lambda: httpx.get(f"{replica.url}/readyz").status_code == 200, 30, "circuit closed, ready")
    assert replica.metric("pisano_sms_circuit_state") == 0
    run.produce_more(run.events(20, CAMPAIGNS[0]))
    run.finish()
    assert len(run.delivered()) == 20
    assert Counter(h["pisano.error.code"] for h in run.dead_headers()) == {"13001": 80}
    assert "circuit CLOSED" in replica.log_text()


def sharings(run: Run) -> list[dict[str, Any]]:
    """The requests that could have sent SMSs: every one but the circuit's probes."""
    return [r for r in run.requests() if r["campaign_id"] != PROBE_CAMPAIGN]


@pytest.mark.parametrize("fault", ["hang_after_accept_rate", "hang_rate"])
def test_unknown_fate_is_dead_lettered_as_ambiguous_and_never_resent(
        run: Run, new_topic: Callable[..., str], fault: str) -> None:
    run.faults(**{fault: 1.0})
    run.start(run.events(25, CAMPAIGNS[0]), new_topics=new_topic, PISANO_TIMEOUT_MS=1000)
    run.wait_all_committed()
    run.faults(**{fault: 0.0})
    run.finish(dead_letters=25)
    assert {h["dlq.reason"] for h in run.dead_headers()} == {"ambiguous"}
    assert len(run.requests()) == 1  # not resent
    assert len(run.delivered()) == (25 if fault == "hang_after_accept_rate" else 0)


def test_504_is_ambiguous(run: Run, new_topic: Callable[..., str]) -> None:
    run.faults(error_rates={"504": 1.0})
    run.start(run.events(10, CAMPAIGNS[0]), new_topics=new_topic)
    run.finish(dead_letters=10)
    assert {(h["dlq.reason"], h["pisano.http.status"]) for h in run.dead_headers()} == {("ambiguous", "504")}


def test_a_gateway_502_after_pisano_accepted_is_ambiguous_and_never_resent(
        run: Run, new_topic: Callable[..., str]) -> None:
    # Pisano delivered, then the load balancer in front of it answered a bare 502 (HTML). Retried
    # as "not processed", every recipient would get a second SMS.
    run.faults(bad_gateway_after_accept_rate=1.0)
    run.start(run.events(25, CAMPAIGNS[0]), new_topics=new_topic)
    run.wait_all_committed()
    run.faults(bad_gateway_after_accept_rate=0.0)
    run.finish(dead_letters=25)
    assert {(h["dlq.reason"], h["pisano.http.status"]) for h in run.dead_headers()} == {("ambiguous", "502")}
    assert len(run.requests()) == 1  # not retried
    assert max(run.delivered().values()) == 1 and len(run.delivered()) == 25


@pytest.mark.parametrize(("policy", "delivered", "dead"), [("assume_delivered", 25, 0), ("resend", 25, 0)])
def test_ambiguous_policies(run: Run, new_topic: Callable[..., str], policy: str, delivered: int,
                            dead: int) -> None:
    run.faults(hang_rate=1.0)
    run.start(run.events(25, CAMPAIGNS[0]), new_topics=new_topic, PISANO_TIMEOUT_MS=1000, AMBIGUOUS_POLICY=policy)
    wait_until(lambda: len(run.requests()) >= 1, 30, "the first request hung")
    run.faults(hang_rate=0.0)
    run.finish(dead_letters=dead)
    if policy == "assume_delivered":
        assert len(run.delivered()) == 0 and len(run.requests()) == 1  # counted as delivered, never sent again
    else:
        assert len(run.delivered()) == delivered and len(run.requests()) >= 2  # sent again: at-least-once


def test_bisection_isolates_three_bad_recipients_in_five_thousand(run: Run, new_topic: Callable[..., str]) -> None:
    records = run.events(5000, CAMPAIGNS[0])
    poison = [phone_for(17), phone_for(2500), phone_for(4999)]
    run.faults(poison_phones=poison)
    # Throttle 400/1s: ISOLATION_BUDGET_SHARE 0.25 allows 100 requests for one search.
    run.start(records, partitions=1, new_topics=new_topic, PISANO_RATE_LIMITS="400/1s", PISANO_RATE_MARGIN_MS=0,
              BATCH_MAX_WAIT_MS=2000)
    run.finish(dead_letters=3)
    delivered = run.delivered()
    assert len(delivered) == 4997 and max(delivered.values()) == 1
    assert not set(poison) & set(delivered)
    assert {h["pisano.error.code"] for h in run.dead_headers()} == {"13028"}
    requests = run.requests()
    assert requests[0]["recipients"] == 5000
    assert len(requests) - 1 <= 100, len(requests)
    print({"isolation_requests": len(requests) - 1})


def test_isolation_budget_spent_dead_letters_the_rest(run: Run, new_topic: Callable[..., str]) -> None:
    records = run.events(64, CAMPAIGNS[0])
    run.faults(poison_phones=[phone_for(3)])
    run.start(records, partitions=1, new_topics=new_topic, PISANO_RATE_LIMITS="40/1s", PISANO_RATE_MARGIN_MS=0,
              ISOLATION_BUDGET_SHARE=0.1, BATCH_MAX_WAIT_MS=1500)  # 4 requests of search
    run.finish()
    assert len(run.requests()) == 1 + 4
    not_isolated = [h for h in run.dead_headers() if "not isolated" in h["pisano.error.message"]]
    assert not_isolated and all(h["pisano.error.code"] == "13028" for h in not_isolated)
    assert len(run.delivered()) + len(run.dead) == 64


def test_no_answer_at_all_ends_as_transport_error(run: Run, new_topic: Callable[..., str]) -> None:
    replica = run.start(run.events(5, CAMPAIGNS[0]), new_topics=new_topic, PISANO_MAX_ATTEMPTS=2,
                        PISANO_URL="http://127.0.0.1:9")  # nothing listens there: connection refused
    run.wait_all_committed()
    attempts = replica.metric("pisano_sms_requests_total")
    run.finish(dead_letters=5)
    headers = run.dead_headers()
    assert {h["dlq.reason"] for h in headers} == {"transport_error"}
    assert {h["dlq.attempts"] for h in headers} == {"2"}
    assert all("pisano.http.status" not in h for h in headers)
    assert "ConnectError" in headers[0]["pisano.error.message"]
    assert attempts == 2
