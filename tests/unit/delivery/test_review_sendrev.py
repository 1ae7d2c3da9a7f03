"""Adversarial review of the sending side (h-sendrev): each test failed on the code before its fix."""

from __future__ import annotations

import json
import types

import httpx
import pytest

from consumer.delivery.destination import Destination
from consumer.delivery.pisano import PisanoClient, build_body
from consumer.ingest.intake import check_recipient
from consumer.ingest.mapping import Recipient
from consumer.state.circuit import CircuitBreaker
from consumer.state.limiter import NoLimiter
from consumer.state.memory import MemoryCircuitStore
from tests.support.fakes import CAMPAIGN, FakePisano, event, rig


def client_with(handler) -> PisanoClient:  # type: ignore[no-untyped-def]
    client = PisanoClient("https://pisano.test", "tok", timeout_s=1, connect_timeout_s=1, max_connections=2)
    client.http = httpx.Client(base_url="https://pisano.test", headers=client.http.headers,
                               transport=httpx.MockTransport(handler))
    return client


# ------------------------------------------------------------ a 2xx other than 200 is an acceptance


@pytest.mark.parametrize("status", [201, 202, 204])
def test_a_2xx_other_than_200_is_accepted_never_released_for_a_resend(status: int) -> None:
    """Pisano (or a gateway in front of it) answering 201/202/204 took the request: it may text
    every recipient. Read as a refusal, the ids were released and dead-lettered as `pisano_error`,
    free to be sent again by a re-read copy or a replay: a second survey."""
    r = rig()
    client = client_with(lambda request: httpx.Response(status, json={"status": "accepted"} if status != 204 else None))
    circuit = CircuitBreaker(MemoryCircuitStore(), cooldown_ms=60_000, max_cooldown_ms=120_000, probe_lease_ms=1000)
    r.sender.destination = Destination("default", client, NoLimiter(), circuit, max_recipients=5000)
    r.sender.attempts.destination = r.sender.destination
    r.process([event(1), event(2)])
    assert r.kinds() == {"e1": {"delivered"}, "e2": {"delivered"}}
    assert r.dedup.state("e1") == "d" and r.dedup.state("e2") == "d"  # a copy read again is skipped


# ------------------------------------------------------------ the body takes whatever the recipient check admits


class Ratio(float):
    """A float subclass, as numpy.float64 is: a plug-in mapper's pandas value."""


class Name(str):
    pass


def hostile_but_admitted() -> list[Recipient]:
    return [
        Recipient("e1", CAMPAIGN, "+905321200001", {"score": Ratio(4.5)}),
        Recipient("e2", CAMPAIGN, "+905321200002", types.MappingProxyType({"name": "A"})),  # type: ignore[arg-type]
        Recipient("e3", CAMPAIGN, "+905321200003", {Name("name"): "B"}),
        Recipient("e4", CAMPAIGN, "+905321200004", built_in_responses={"customerDetailedInformation1": Ratio(1.0)}),
    ]


def test_every_recipient_the_check_admits_can_be_written_into_a_body() -> None:
    recipients = [check_recipient(r) for r in hostile_but_admitted()]  # all admitted at the pipeline boundary
    body = json.loads(build_body(recipients))
    assert body["custom_attributes"] == {"+905321200001": {"score": 4.5}, "+905321200002": {"name": "A"},
                                         "+905321200003": {"name": "B"}}
    assert body["built_in_responses"] == {"+905321200004": {"customerDetailedInformation1": 1.0}}


def test_one_admitted_float_subclass_does_not_dead_letter_its_whole_batch() -> None:
    """One recipient's value that the check admits but the encoder refused made the body raise
    after the claim: every event of the batch (up to 5,000 good ones) was dead-lettered as
    `internal_error`, and so was every batch it joined again."""
    r = rig(FakePisano())
    events = [event(i) for i in range(5)]
    events[2].recipient.custom_attributes = {"score": Ratio(2.0)}
    r.process(events)
    assert {k for ks in r.kinds().values() for k in ks} == {"delivered"}, r.reasons()
    assert len(r.pisano.requests) == 1


# ------------------------------------------------------------ a 5xx the table does not name: fate unknown


@pytest.mark.parametrize("status", [501, 505, 507, 520, 522, 524, 598, 599])
def test_an_unlisted_5xx_is_never_released_as_a_refusal(status: int) -> None:
    """A 5xx says a server failed on a request that reached it; one the table does not name (a CDN's
    524 "origin timed out" after it forwarded the request, 520 "unknown error from the origin",
    a proxy's 598/599 network read timeout) cannot say Pisano did not act. It fell to the request
    scope: ids released, dead-lettered as `pisano_error`, free to be sent again."""
    from consumer.delivery.failures import classify
    from consumer.errors import PisanoApiError

    assert classify(PisanoApiError(status, None, "origin timed out")).action == "ambiguous"
    r = rig(FakePisano([PisanoApiError(status, None, "origin timed out")]))
    r.process([event(1)])
    assert r.reasons() == {"e1": "ambiguous"}
    assert r.dedup.state("e1") == r.unknown_mark("e1")  # a copy read again is never sent on its own


# ------------------------------------------------------------ a proxy refusing the tunnel: nothing left


@pytest.mark.parametrize("answer", [b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
                                    b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"])
def test_a_proxy_refusing_the_tunnel_is_not_sent_never_ambiguous(monkeypatch: pytest.MonkeyPatch,
                                                                   answer: bytes) -> None:
    """HTTPS through the environment's proxy: the proxy refuses the CONNECT (a rule, credentials, no
    route). Not a byte of the request reached Pisano, yet httpx's ProxyError was read as "no answer
    after sending": every batch dead-lettered as `ambiguous`, its ids marked unknown, to be checked
    with Pisano and replayed one by one, instead of retried and, at worst, released."""
    import socket
    import threading
    from contextlib import suppress

    from consumer.errors import PisanoTransportError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    seen: list[bytes] = []

    def proxy() -> None:
        with suppress(OSError):
            while True:
                connection, _ = listener.accept()
                with connection:
                    seen.append(connection.recv(65536))
                    connection.sendall(answer)

    threading.Thread(target=proxy, daemon=True).start()
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
    client = PisanoClient("https://pisano.invalid", "tok", timeout_s=2, connect_timeout_s=2, max_connections=1)
    try:
        with pytest.raises(PisanoTransportError) as refused:
            client.send(CAMPAIGN, b'{"phone_numbers":["+905321234567"]}')
    finally:
        client.close()
        listener.close()
    assert seen and seen[0].startswith(b"CONNECT pisano.invalid:443")  # only the tunnel was asked for
    assert not refused.value.ambiguous and refused.value.retriable


# ------------------------------------------------------------ the batch's outcomes whatever its campaign gate does


def test_an_error_closing_the_campaign_gate_still_ends_every_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """`CampaignGate.close` (a probe given back: a Redis call through the campaign's breaker) ran in
    the `finally` before the fallback that ends the batch's open events: an exception there skipped
    it, and the events of a failed batch got no outcome at all. Their records were never committed,
    the partition stuck until a restart (ARCHITECTURE.md invariant 1: any exception still ends each
    event)."""
    from consumer.delivery.sender import CampaignGate

    def broken_close(self: CampaignGate) -> None:
        raise RuntimeError("the campaign's circuit could not be given back")

    monkeypatch.setattr(CampaignGate, "close", broken_close)
    r = rig(FakePisano([RuntimeError("the client broke after sending")]))
    r.process([event(1), event(2)])
    assert r.reasons() == {"e1": "ambiguous", "e2": "ambiguous"}
    assert r.dedup.state("e1") == r.unknown_mark("e1")


@pytest.mark.parametrize("answer", ["accepted", "refused"])
def test_an_error_judging_the_campaign_never_decides_the_requests_fate(monkeypatch: pytest.MonkeyPatch,
                                                                      answer: str) -> None:
    """The campaign's verdict was recorded (`CampaignGate.judge`) before the request's outcome: an
    exception there (anything but a StateStoreError, which the breaker logs) turned a 200 into an
    `ambiguous` dead-letter with an unknown mark, and a refusal Pisano stated into one too."""
    from consumer.delivery.sender import CampaignGate
    from consumer.errors import PisanoApiError

    def broken_judge(self: CampaignGate, sent: object) -> None:
        raise RuntimeError("the campaign's circuit could not be recorded")

    monkeypatch.setattr(CampaignGate, "judge", broken_judge)
    refusal = PisanoApiError(404, 13002, "Requested resource not found!")
    r = rig(FakePisano([refusal] if answer == "refused" else []))
    r.process([event(1)])
    if answer == "accepted":
        assert r.kinds() == {"e1": {"delivered"}} and r.dedup.state("e1") == "d"
    else:
        assert r.reasons() == {"e1": "pisano_error"} and r.dedup.state("e1") is None
