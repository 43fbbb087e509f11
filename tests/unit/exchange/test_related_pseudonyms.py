"""Related subjects named inside a holder's records are found at any depth of the fields (a review found a
director's pseudonym nested in an object or list passed through in the holder's domain, untranslated)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

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


# --- the walks are skipped when no text may hold a pseudonym (CPU per exchange; docs/performance.md) ---------

_KELVIN = "\u212a"  # read as ``k`` by ``re.IGNORECASE``: a pseudonym's text with it is still withheld


def _pieces() -> list[str]:
    return [DIRECTOR, PARTNER, DIRECTOR.upper(), ".v1.", ".V12.", "bsn.v", "v1", ".v.", "plain", "é", _KELVIN,
            '"', "\\", "\n", "\u0000", " ", "12", "-", "_", "ok.v3.x", DIRECTOR.replace("k", _KELVIN)]


def test_texts_that_may_hold_a_pseudonym_are_told_from_those_that_cannot() -> None:
    """``_may_name_pseudonyms`` is False only where the walks find nothing and withhold nothing: checked on
    texts made of pieces of pseudonyms, near misses and what JSON escapes, as values and as keys."""
    import random

    from gateway.exchange.service import _may_name_pseudonyms

    pieces, chance = _pieces(), random.Random(20261205)
    told_false = 0
    for _ in range(3000):
        texts = ["".join(chance.choices(pieces, k=chance.randint(1, 3))) for _ in range(3)]
        fields = {texts[0]: texts[1], "list": [texts[2], 7, None, 1.5]}
        found, (mapped, withheld) = list(_pseudonyms_in(fields)), _mapped_counting(fields, {})
        if not _may_name_pseudonyms([fields]):
            told_false += 1
            assert (found, mapped, withheld) == ([], fields, 0), fields
    assert 300 < told_false < 2700  # both answers were given often enough to mean something
    assert _may_name_pseudonyms([{"x": DIRECTOR.replace("k", _KELVIN)}])
    assert _may_name_pseudonyms([{"when": __import__("datetime").date(2026, 12, 5)}])  # no JSON: may


def test_records_that_cannot_name_a_pseudonym_are_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The usual answer (no text holding ``.v<n>.``) is returned as it is, without a call per text: both walks
    cost more than the rest of the exchange's checks of the answer. Records that may are walked as before."""
    from connectors.protocol import HolderRecord
    from gateway.exchange import service

    plain = [HolderRecord(record_id=f"r-{i}", record_type="registration", subject="REF-1",
                          category="company_registration", fields={"name": "Bakkerij B.V.", "since": 2011,
                                                                   "roles": [{"role": "director", "of": "REF-2"}]})
             for i in range(3)]
    named = plain[0].model_copy(update={"fields": {"director": DIRECTOR}})

    class Translator:
        def related_for_requester(self, values: set[str], *_: str) -> dict[str, str | None]:
            return dict.fromkeys(values)

    stub = SimpleNamespace(deps=SimpleNamespace(pseudonyms=Translator()))
    principal = SimpleNamespace(organisation="gemeente-amsterdam")
    related = service.ExchangeService._related_for_requester
    walked: list[object] = []

    def walk(value: object) -> Iterator[str]:
        walked.append(value)
        return iter(())

    monkeypatch.setattr(service, "_pseudonyms_in", walk)
    kept, withheld = asyncio.run(related(stub, principal, "p", "kvk", plain))  # type: ignore[arg-type]
    assert (kept, withheld, walked) == (plain, 0, [])
    monkeypatch.undo()
    kept, withheld = asyncio.run(related(stub, principal, "p", "kvk", [named]))  # type: ignore[arg-type]
    assert (kept[0].fields, withheld) == ({"director": None}, 1)
