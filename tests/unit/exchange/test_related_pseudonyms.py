"""Related subjects named inside a holder's records are found at any depth of the fields (a review found a
director's pseudonym nested in an object or list passed through in the holder's domain, untranslated)."""

from __future__ import annotations

from gateway.exchange.service import _mapped, _mapped_counting, _pseudonyms_in
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


def test_a_pseudonym_as_an_objects_key_is_found_and_translated_or_its_entry_dropped() -> None:
    """``{"directors": {"<pseudonym>": ...}}`` (found by a review: keys were not looked at, so the holder's
    pseudonym reached the requester as it was)."""
    fields = {"directors": {DIRECTOR: {"role": "director", "since": 2019}, PARTNER: {"role": "partner"}},
              "plain": {"role": "kept"}}
    assert sorted(_pseudonyms_in(fields)) == sorted([DIRECTOR, PARTNER])
    assert _mapped(fields, {DIRECTOR: "mine-director", PARTNER: None}) == {
        "directors": {"mine-director": {"role": "director", "since": 2019}}, "plain": {"role": "kept"}}


def test_a_text_with_a_pseudonym_inside_is_dropped_whole() -> None:
    """A pseudonym inside a longer text is not one of the whole values the translation knows: the text goes
    (None), as a value and as a key, whether or not that pseudonym could have been translated."""
    fields = {"note": f"director {DIRECTOR}", "list": [f"{DIRECTOR},{PARTNER}", "plain text"],
              "shouted": DIRECTOR.upper(), "by_note": {f"see {PARTNER}": 1, "other": 2}, "whole": DIRECTOR}
    mapped = _mapped(fields, {DIRECTOR: "mine-director", PARTNER: "mine-partner"})
    assert mapped == {"note": None, "list": [None, "plain text"], "shouted": None, "by_note": {"other": 2},
                      "whole": "mine-director"}
    body = str(mapped)
    assert DIRECTOR not in body
    assert PARTNER not in body


def test_what_is_withheld_is_counted() -> None:
    """A follow-up logs what the translation withheld as the holder's over-sharing: each pseudonym not
    translated, each text with one inside, a key counted once with its entry; a translated one is no loss."""
    fields = FIELDS | {"note": f"director {DIRECTOR}", "by_key": {PARTNER: {"who": PARTNER}}}
    mapped, withheld = _mapped_counting(fields, {DIRECTOR: "mine-director", PARTNER: None})
    assert mapped == _mapped(fields, {DIRECTOR: "mine-director", PARTNER: None})
    assert withheld == 4  # two PARTNER values, the note, the PARTNER key (its value goes with it)
    assert _mapped_counting(FIELDS, {DIRECTOR: "d", PARTNER: "p"})[1] == 0


def test_a_record_answered_under_two_key_versions_of_one_subject_is_kept_once() -> None:
    """A holder asked by its pseudonyms of two key versions (after a rotation) may answer a record under each;
    mapped back to the requester's pseudonym the two are one record, kept once. Records that differ are kept."""
    from connectors.protocol import HolderRecord
    from gateway.exchange.service import _once

    record = HolderRecord(record_id="r-1", record_type="registration", subject=DIRECTOR,
                          category="company_registration", fields={"name": "x"})
    other = record.model_copy(update={"fields": {"name": "y"}})
    assert _once([record, record.model_copy(), other, record]) == [record, other]
