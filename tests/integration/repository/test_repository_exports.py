"""record_export (`fg-image register --output`): a history entry, and nothing else about the image changes.

Both backends: the Store in-process, and the HTTP client against the real `fg-image serve`.
"""

from __future__ import annotations

import pytest
from support.repository import payload, put

from rain.errors import InvalidInput, NotFound

pytestmark = pytest.mark.integration


def test_an_export_is_a_history_entry_and_leaves_the_image_as_it_was(backend):
    alice, bob, carol = backend.users("alice", "bob", "carol")
    image = put(alice, payload(1000), "exported")
    alice.share(image.id, ["bob"])
    before = alice.show(image.id)
    bob.record_export(image.id, "openstack", {"format": "qcow2", "files": ["deb.qcow2"]})  # a reader may
    after = alice.show(image.id)
    assert after.model_dump() == before.model_dump()
    events = [e for e in backend.admin.history(image.id) if e.action == "export"]
    assert [(e.user, e.detail["target"], e.detail["detail"]["files"]) for e in events] == \
        [("bob", "openstack", ["deb.qcow2"])]
    with pytest.raises(NotFound):
        carol.record_export(image.id, "openstack")  # not shared with carol: no such image for her
    with pytest.raises(InvalidInput):
        alice.record_export(image.id, "a.b")  # target names become history keys: checked like registrations'
