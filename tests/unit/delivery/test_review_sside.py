"""The review of the sender side (h-sside): the token's circuit, as Pisano's codes say.

- Requests already in flight when the token's circuit opens (other threads, other replicas: the
  state is read at most once a second) hear the same refusal. README ("Circuit breaker"): the
  circuit "stays open"; only a failed probe reopens it with twice the cool-down. Each of those
  refusals doubled it, so the fleet dead-lettered for up to CIRCUIT_MAX_COOLDOWN_MS after a
  token that was fixed at once.
- The probe of a half-open circuit: any Pisano code outside the account scope (README, "Failure
  classification") comes from a Pisano that accepted the token, as 13015, 13028 and 13002 do.
  A 403 "Permission denied" (13013) reopened the circuit for good, and a 400 13038 or 13000 gave
  no verdict, so the circuit never closed and every batch was dead-lettered while the token was
  fine.
"""

from __future__ import annotations

import pytest

from consumer.delivery.failures import CODE_SCOPES
from consumer.delivery.pisano_codes import CODES
from consumer.errors import PisanoApiError
from consumer.state.circuit import CircuitBreaker, Trip, token_verdict
from consumer.state.memory import MemoryCircuitStore
from tests.support.fakes import FakePisano, event, rig, windows_limiter


def test_requests_in_flight_when_the_circuit_opens_do_not_double_its_cooldown() -> None:
    wrong = PisanoApiError(401, 13001, "Wrong authentication token")
    r = rig(FakePisano([wrong, wrong, wrong]), max_attempts=1)
    # Three batches in flight on the fleet's threads: each was past the circuit's check when the
    # first refusal opened it, and each hears the same answer.
    for i in range(3):
        r.process([event(i)])
    store = r.sender.destination.circuit.store
    assert store.previous_cooldown_ms() == 60_000, "a refusal heard while the circuit is open reopened it"
    assert set(r.reasons().values()) == {"pisano_error"}
    state, trip = r.sender.destination.circuit.state()
    assert state == "open" and trip is not None and trip.code == 13001


def test_a_failed_probe_still_reopens_with_twice_the_cooldown() -> None:
    breaker = CircuitBreaker(MemoryCircuitStore(clock=lambda: 0), cooldown_ms=1000, max_cooldown_ms=8000,
                             probe_lease_ms=1000)
    breaker.open(Trip(13001, 401, "Wrong authentication token"), reopen=False)  # the first: opens
    assert breaker.store.previous_cooldown_ms() == 1000
    store = breaker.store
    assert isinstance(store, MemoryCircuitStore)
    store.clock = lambda: 10_000  # the cool-down is over: half-open
    breaker._read_at = -10.0
    breaker.probe_if_due(lambda: Trip(13001, 401, "Wrong authentication token"))
    assert breaker.store.previous_cooldown_ms() == 2000


ACCOUNT = sorted(code for code, scope in CODE_SCOPES.items() if scope == "account")
OTHERS = sorted(code for code, scope in CODE_SCOPES.items() if scope != "account")


@pytest.mark.parametrize("code", OTHERS)
def test_a_probe_answered_with_a_code_outside_the_account_scope_accepts_the_token(code: int) -> None:
    status = CODES[code].http_status
    assert token_verdict(PisanoApiError(status, code, CODES[code].message)) is True


@pytest.mark.parametrize("code", ACCOUNT)
def test_a_probe_answered_with_an_account_code_refuses_the_token(code: int) -> None:
    verdict = token_verdict(PisanoApiError(CODES[code].http_status, code, CODES[code].message))
    assert isinstance(verdict, Trip) and verdict.code == code


@pytest.mark.parametrize("status", [401, 403])
def test_a_probe_refused_without_a_code_refuses_the_token(status: int) -> None:
    assert isinstance(token_verdict(PisanoApiError(status, None, "Forbidden")), Trip)


@pytest.mark.parametrize(("status", "code"), [(429, None), (503, None), (502, None), (500, 13000), (408, None),
                                              (400, None), (404, None), (400, 99999)])
def test_a_probe_answer_that_says_nothing_of_the_token_is_no_verdict(status: int, code: int | None) -> None:
    assert token_verdict(PisanoApiError(status, code, "no word on the token")) is None


# ---------------------------------------------------------------- bisection after the circuit opened


def refused_then(later: PisanoApiError, bad: set[str]):  # type: ignore[no-untyped-def]
    """The first request is refused for a recipient (13028); every later one gets `later`."""
    calls = iter(range(10**6))
    return lambda phones: (PisanoApiError(422, 13028, "Invalid parameters") if next(calls) == 0 and bad & set(phones)
                           else later)


@pytest.mark.parametrize(("later", "opened"), [
    (PisanoApiError(401, 13001, "Wrong authentication token"), "circuit open"),
    (PisanoApiError(404, 13002, "Requested resource not found!"), "campaign circuit open"),
])
def test_bisection_sends_nothing_more_once_the_token_or_the_campaign_is_refused(later: PisanoApiError,
                                                                               opened: str) -> None:
    # failures.py: once the token is refused, "no throttle slots are burned until a probe
    # succeeds"; a campaign refused as a whole is refused for every part of the batch. The search
    # went on sending its groups (up to ISOLATION_BUDGET_SHARE of the longest window) to hear the
    # same answer each time.
    r = rig(FakePisano(default=refused_then(later, {event(3).recipient.phone})))
    r.process([event(i) for i in range(16)])
    assert len(r.pisano.requests) == 2, r.pisano.requests  # the batch, then its first half
    kinds = r.kinds()
    assert len(kinds) == 16 and all(k == {"dead_letter"} for k in kinds.values()), kinds
    failures = {e.recipient.event_id: o.failure for o in r.outcomes if o.failure for e in o.events}
    assert {f.code for f in failures.values()} == {later.code}
    unsent = [f for i, f in failures.items() if int(i[1:]) >= 8]
    # dlq.request.id names the last request that carried them: the batch's, refused for a recipient,
    # not the first half's (e0's, refused for the token or the campaign)
    assert unsent and all(opened in f.message and f.attempts == 1 and f.request_id for f in unsent)
    assert len({f.request_id for f in unsent}) == 1 and failures["e0"].request_id not in {f.request_id for f in unsent}
    assert not [i for i in kinds if (r.dedup.state(i) or "").startswith("c|")], "a claim was left behind"
    assert all(r.dedup.state(f"e{i}") is None for i in range(8, 16))  # never sent: free for a replay


# ---------------------------------------------------------------- a 429 that is not retried


@pytest.mark.parametrize(("answers", "max_attempts"), [
    # Pisano's longest window is 625 s: a Retry-After past PISANO_RETRY_BUDGET_MS (60 s here)
    ([PisanoApiError(429, None, "Too Many Requests", retry_after_s=500.0)], 3),
    # the last attempt's 429
    ([PisanoApiError(429, None, "Too Many Requests", retry_after_s=0.05),
      PisanoApiError(429, None, "Too Many Requests", retry_after_s=30.0)], 2),
])
def test_a_429_not_retried_still_pauses_the_fleet(answers: list[PisanoApiError], max_attempts: int) -> None:
    # README ("The shared throttle"): a 429 pauses the token's limiter for the whole fleet. Only a
    # 429 followed by a retry did: one dead-lettered at once left the fleet sending into Pisano's
    # throttle, each request answered 429 and, with a long Retry-After, dead-lettered at once.
    limiter = windows_limiter("100/1s,160/625s")
    r = rig(FakePisano(list(answers)), limiter=limiter, max_attempts=max_attempts)
    r.process([event(1)])
    assert r.reasons() == {"e1": "throttled"}
    retry_after_ms = answers[-1].retry_after_s * 1000  # type: ignore[operator]
    assert limiter.state.data.pause_until - limiter.clock() >= retry_after_ms - 1000, "the fleet was not paused"


@pytest.mark.parametrize("windows", ["100/1s,160/625s", "10/1s"])
@pytest.mark.parametrize("retry_after", ["86400", "1e12", "1e400"])
def test_a_retry_after_past_the_longest_window_pauses_the_fleet_for_that_window_only(
        retry_after: str, windows: str) -> None:
    # Every 429 pauses the fleet, retried or not. A Retry-After is the server's word, and not
    # always Pisano's throttle's (a gateway's, a maintenance page's): a day paused the whole fleet
    # for a day, every partition's records waiting. No window needs more than its period to give
    # its budget back: the pause stops at the longest one, configured or Pisano's cloud's (a
    # Pisano stricter than the configured windows is still waited for: the next test). (An
    # infinite wait, "1e400", raised OverflowError out of the pause, and the batch, refused so
    # never sent, ended `ambiguous`.)
    limiter = windows_limiter(windows)
    seconds = float(retry_after)
    r = rig(FakePisano([PisanoApiError(429, None, "Too Many Requests", retry_after_s=seconds)]), limiter=limiter)
    r.process([event(1)])
    assert r.reasons() == {"e1": "throttled"}
    paused_ms = limiter.state.data.pause_until - limiter.clock()
    assert 624_000 <= paused_ms <= 625_000, paused_ms


def test_the_cloud_windows_longest_is_the_constant_the_pause_is_bounded_by() -> None:
    from consumer.config.windows import CLOUD_LONGEST_MS, PISANO_CLOUD_LIMITS, parse_rate_limits

    assert max(w.period_ms for w in parse_rate_limits(PISANO_CLOUD_LIMITS)) == CLOUD_LONGEST_MS


def test_a_retry_after_longer_than_the_configured_windows_is_still_waited_for() -> None:
    # A Pisano stricter than PISANO_RATE_LIMITS says (tests/integration/test_throttle_not_retried.py)
    limiter = windows_limiter("10/1s")
    r = rig(FakePisano([PisanoApiError(429, None, "Too Many Requests", retry_after_s=3.0)]), limiter=limiter,
            max_attempts=1)
    r.process([event(1)])
    assert r.reasons() == {"e1": "throttled"}
    assert 2_000 <= limiter.state.data.pause_until - limiter.clock() <= 3_000


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e400"])
def test_a_retry_after_that_is_no_number_of_seconds_is_none(value: str) -> None:
    # "1e400" is read as inf: no wait anyone can keep to.
    from consumer.delivery.pisano import parse_retry_after

    assert parse_retry_after(value) is None


def test_check_campaigns_says_a_permission_denied_is_no_wrong_token() -> None:
    # `check --campaigns` read a 403 13013 through the token's verdict as "wrong token: check the
    # destination's token", sending the operator to a token Pisano had accepted.
    from consumer.operations.preflight import verdict

    status, detail = verdict(PisanoApiError(403, 13013, "Permission denied"))
    assert status == "failed" and "accepted the token" in detail and "API user" in detail
