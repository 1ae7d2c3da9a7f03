"""One batch's passage through its campaign's circuit (`consumer.state.campaigns`).

Before the batch is sent: admitted ("send"), admitted as the fleet's probe of a half-open
circuit ("probe"), or refused with the Trip that opened the circuit (dead-lettered at once).
After each request of the batch: Pisano's answer is the campaign's verdict: accepted closes a
circuit that was probed, a campaign code (`CAMPAIGN_CODES`) opens it. A probe that ends with no
verdict (nothing sent, a 503, an exception) gives the probe back, so the next batch probes.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumer.delivery.attempts import Sent
from consumer.delivery.failures import CAMPAIGN_CODES
from consumer.errors import PisanoApiError
from consumer.outcomes.deadletter import Failure
from consumer.state.campaigns import Admission, CampaignCircuits
from consumer.state.circuit import Trip


def campaign_verdict(sent: Sent) -> bool | Trip | None:
    """True: Pisano accepted a request of the campaign; a Trip: it refused the campaign itself."""
    if sent.accepted is not None:
        return True
    error = sent.error
    if isinstance(error, PisanoApiError) and error.code in CAMPAIGN_CODES:
        return Trip(error.code, error.http_status, error.message)
    return None


def open_failure(trip: Trip, campaign: str) -> Failure:
    """The dead-letter of a batch not sent because its campaign's circuit is open."""
    return Failure("pisano_error", f"not sent, campaign circuit open: Pisano answered {trip.message}",
                   code=trip.code, http_status=trip.http_status, campaign_id=campaign, attempts=0)


@dataclass
class CampaignGate:
    circuits: CampaignCircuits
    campaign: str
    admission: Admission
    judged: bool = False

    @classmethod
    def enter(cls, circuits: CampaignCircuits, campaign: str) -> CampaignGate:
        return cls(circuits, campaign, circuits.admit(campaign))

    @property
    def refusal(self) -> Trip | None:
        return self.admission if isinstance(self.admission, Trip) else None

    def judge(self, sent: Sent) -> None:
        """A request of the batch ended: the first decides a probe; any may open the circuit."""
        verdict = campaign_verdict(sent)
        if self.judged and not isinstance(verdict, Trip):
            return
        self.circuits.record(self.campaign, "send" if self.judged else self.admission, verdict)
        self.judged = True

    def close(self) -> None:
        """The batch is done: a probe that never got a verdict is given back."""
        if self.admission == "probe" and not self.judged:
            self.circuits.record(self.campaign, self.admission, None)  # its own lease, by owner
