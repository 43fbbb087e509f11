"""Related subjects named inside a holder's records are found at any depth of the fields (a review found a
director's pseudonym nested in an object or list passed through in the holder's domain, untranslated)."""

from __future__ import annotations

from gateway.exchange.service import _mapped, _pseudonyms_in
from gateway.pseudonyms.identifiers import IdentifierType
from gateway.pseudonyms.pep import Pseudonym, hash_to_point

DIRECTOR = Pseudonym(IdentifierType.BSN, 1, hash_to_point(b"director")).encode()
PARTNER = Pseudonym(IdentifierType.BSN, 1, hash_to_point(b"partner")).encode()
FIELDS = {"top": DIRECTOR, "nested": {"director": PARTNER, "since": 2019}, "list": [PARTNER, "plain text", 7],
          "deeper": [{"who": DIRECTOR}], "note": "no pseudonym here"}


def test_every_pseudonym_is_found_however_deeply_nested() -> None:
    assert sorted(_pseudonyms_in(FIELDS)) == sorted([DIRECTOR, PARTNER, PARTNER, DIRECTOR])


def test_every_occurrence_is_replaced_and_the_rest_kept() -> None:
    mapped = _mapped(FIELDS, {DIRECTOR: "mine-director", PARTNER: None})
    assert mapped == {"top": "mine-director", "nested": {"director": None, "since": 2019},
                      "list": [None, "plain text", 7], "deeper": [{"who": "mine-director"}],
                      "note": "no pseudonym here"}
