"""A polymorphic pseudonym under none of the gateway's keys (one retired since the partner fetched it) is refused
with a problem type of its own, ``pseudonym-key-unknown``: the partner client fetches the keys again for that
refusal only, not for every 422. A malformed one keeps the general type."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.client.pseudonyms import PseudonymClient
from gateway.enrolment.service import Item, PseudonymService
from gateway.errors import PseudonymKeyUnknown, Unprocessable
from gateway.pseudonyms.keys import KeyRing, KeyVersion
from gateway.pseudonyms.transcryptor import Transcryptor

_T0 = datetime(2025, 3, 1, tzinfo=UTC)
OURS = Transcryptor(KeyRing({1: KeyVersion.generate(1, _T0)}, 1))
RETIRED = Transcryptor(KeyRing({1: KeyVersion.generate(1, _T0)}, 1))  # a key the gateway no longer holds


def test_a_pseudonym_under_another_key_is_refused_as_a_key_problem() -> None:
    polymorphic = PseudonymClient(RETIRED.public_key()).polymorphic("bsn", "111222333")
    with pytest.raises(PseudonymKeyUnknown) as raised:
        PseudonymService._decode([Item("bsn", polymorphic)], OURS)
    assert (raised.value.status, raised.value.slug) == (422, "pseudonym-key-unknown")
    assert raised.value.detail.startswith("item 0: ")


def test_a_malformed_pseudonym_keeps_the_general_type() -> None:
    with pytest.raises(Unprocessable) as raised:
        PseudonymService._decode([Item("bsn", "not-a-pseudonym")], OURS)
    assert not isinstance(raised.value, PseudonymKeyUnknown)
    assert raised.value.slug == "unprocessable"


def test_a_pseudonym_under_the_gateways_key_is_taken() -> None:
    polymorphic = PseudonymClient(OURS.public_key()).polymorphic("bsn", "111222333")
    assert len(PseudonymService._decode([Item("bsn", polymorphic)], OURS)) == 1
