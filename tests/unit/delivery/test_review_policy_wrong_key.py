"""Adversarial review of the contact policy, continued (README "The opt-out list", "A wrong key
fails closed too"): a replica whose SUPPRESSION_KEY is not the import's. Failed on the code before
its fix: the opted-out customer was surveyed."""

from __future__ import annotations

from consumer.state.suppression import MemoryOptOutList, OptOutHasher
from tests.unit.delivery.test_review_contact_policy import KEY, _stamped, suppressing_rig


def test_a_replica_on_another_key_than_the_import_sends_nothing_until_the_keys_agree() -> None:
    imported = OptOutHasher(b"the-import-key-0123456789", "TR")  # not the rig's KEY: a typo in a Secret
    store = MemoryOptOutList([imported.phone("+905321200001")], key_check=imported.key_check)
    r = suppressing_rig(store)
    r.process([_stamped(0, "+905321200001"), _stamped(1, "+905321200000")])
    assert "+905321200001" not in r.pisano.sent_phones, "an opted-out customer was surveyed under another key"
    assert r.pisano.sent_phones == [] and r.kinds() == {"e0": {"requeue"}, "e1": {"requeue"}}

    ours = OptOutHasher(KEY.encode(), "TR")  # the list imported again under the fleet's key
    importer = store.replica(ours.key_check)
    importer.rotating = True
    importer.add([ours.phone("+905321200001")])
    importer.rotate_key()
    r.process([_stamped(2, "+905321200001"), _stamped(3, "+905321200002")])
    assert r.kinds()["e2"] == {"suppressed"} and r.kinds()["e3"] == {"delivered"}
    assert r.pisano.sent_phones == ["+905321200002"]
