import json

import httpx
import pytest

from consumer.delivery.pisano import PisanoClient, build_body, parse_retry_after
from consumer.errors import PisanoApiError, PisanoTransportError
from consumer.ingest.mapping import Recipient

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


def client_with(handler) -> PisanoClient:  # type: ignore[no-untyped-def]
    client = PisanoClient("https://pisano.test", "tok", timeout_s=1, connect_timeout_s=1, max_connections=2)
    client.http = httpx.Client(base_url="https://pisano.test", headers=client.http.headers,
                               transport=httpx.MockTransport(handler))
    return client


def test_request_matches_the_reference() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok", "request_id": "r-1"})

    body = build_body([Recipient("e1", CAMPAIGN, "+905321234567", {"name": "A"}, {"customerDetailedInformation1": "x"}),
                       Recipient("e2", CAMPAIGN, "+905321234568")])
    accepted = client_with(handler).send(CAMPAIGN, body)
    request = seen[0]
    assert request.method == "POST"
    assert request.url.path == f"/v1/sms_campaigns/{CAMPAIGN}/sms_sharings"
    assert request.headers["Authorization"] == "Token token=tok"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "phone_numbers": ["+905321234567", "+905321234568"],
        "custom_attributes": {"+905321234567": {"name": "A"}},
        "built_in_responses": {"+905321234567": {"customerDetailedInformation1": "x"}},
    }
    assert accepted.request_id == "r-1"


@pytest.mark.parametrize(("response", "status", "code", "message"), [
    (httpx.Response(401, json={"status": "unauthorized", "code": 13001, "message": "Wrong authentication token"}),
     401, 13001, "Wrong authentication token"),
    (httpx.Response(400, json={"error": {"code": "13028", "message": "Invalid parameters"}}), 400, 13028,
     "Invalid parameters"),
    (httpx.Response(502, text="<html>Bad gateway</html>"), 502, None, "<html>Bad gateway</html>"),
    (httpx.Response(500, content=b"\xff\xfe"), 500, None, ""),
])
def test_errors_are_parsed_defensively(response: httpx.Response, status: int, code: int | None, message: str) -> None:
    with pytest.raises(PisanoApiError) as error:
        client_with(lambda request: response).send(CAMPAIGN, b"{}")
    assert (error.value.http_status, error.value.code) == (status, code)
    assert message in error.value.message


@pytest.mark.parametrize(("response", "pisano_body"), [
    (httpx.Response(502, json={"status": "bad_gateway", "code": None, "message": "Bad Gateway"}), True),
    (httpx.Response(400, json={"error": {"code": "13028", "message": "Invalid parameters"}}), True),
    (httpx.Response(502, text="<html>502 Bad Gateway</html>"), False),
    (httpx.Response(502), False),
    (httpx.Response(502, text="upstream connect error or disconnect/reset before headers"), False),
    # An API gateway's own JSON (Kong, AWS API Gateway) carries a message, never Pisano's code or status.
    (httpx.Response(502, json={"message": "An invalid response was received from the upstream server"}), False),
])
def test_an_error_body_says_whether_pisano_wrote_it(response: httpx.Response, pisano_body: bool) -> None:
    with pytest.raises(PisanoApiError) as error:
        client_with(lambda request: response).send(CAMPAIGN, b"{}")
    assert error.value.pisano_body is pisano_body


def test_retry_after_header() -> None:
    response = httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "slow down"})
    with pytest.raises(PisanoApiError) as error:
        client_with(lambda request: response).send(CAMPAIGN, b"{}")
    assert error.value.retry_after_s == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None


def test_connect_failure_is_certain_read_timeout_is_ambiguous() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(PisanoTransportError) as refused:
        client_with(refuse).send(CAMPAIGN, b"{}")
    assert not refused.value.ambiguous and refused.value.retriable
    with pytest.raises(PisanoTransportError) as stalled:
        client_with(stall).send(CAMPAIGN, b"{}")
    assert stalled.value.ambiguous and not stalled.value.retriable


def test_a_200_with_any_body_is_success() -> None:
    assert client_with(lambda r: httpx.Response(200, text="OK")).send(CAMPAIGN, b"{}").http_status == 200
