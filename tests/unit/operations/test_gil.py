"""The consumer's interpreter switch interval (consumer/operations/gil.py)."""

import sys

from consumer.delivery.slots import LATENESS_FLOOR_S
from consumer.operations import gil


def test_a_handover_stays_below_the_lateness_a_slot_tolerates() -> None:
    """A sender woken at its slot may wait one interval for the interpreter before its lateness
    check: at the floor or above, an idle replica's requests would give their slots up."""
    assert gil.SWITCH_INTERVAL_S <= LATENESS_FLOOR_S / 2


def test_the_consumer_sets_it_for_its_own_process() -> None:
    before = sys.getswitchinterval()
    try:
        gil.hand_over_less_often()
        assert sys.getswitchinterval() == gil.SWITCH_INTERVAL_S
    finally:
        sys.setswitchinterval(before)
