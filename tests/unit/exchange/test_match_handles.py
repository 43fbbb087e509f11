"""The parts of match handles that need no gateway: what a handle looks like, and that the holder's reference of a
matched record is taken out of whatever the holder answers (the scenario tests run the whole follow-up)."""

from __future__ import annotations

import hashlib

from connectors.protocol import HolderRecord
from gateway.exchange.match_handles import HANDLE_PREFIX, Matched, handle_digest, is_match_handle
from gateway.exchange.references import HolderReferences, reference_form
from gateway.pseudonyms.identifiers import IdentifierType
from gateway.pseudonyms.pep import Pseudonym, hash_to_point

REF = "bvh-2026-00417"
HANDLE = HANDLE_PREFIX + "q5Tb2Jm0oXw8c3Vn1yFZk9Lr7aSdPe4GuHi6Cj0KvQs"


def test_a_handle_is_known_by_its_prefix_and_kept_by_its_hash() -> None:
    assert is_match_handle(HANDLE)
    assert not is_match_handle("subj-0b1c2d3e4f5a6b7c8d9e0f1a")
    assert handle_digest(HANDLE) != handle_digest(HANDLE[:-1] + "A")
    assert len(handle_digest(HANDLE)) == 64
    assert HANDLE not in handle_digest(HANDLE)


def test_the_holders_reference_is_taken_out_of_the_records_it_answers() -> None:
    """A holder that repeats its reference in a field (as a value, inside a text, as a key, in a list) would hand
    it to the requester: every such text goes, everything else stays."""
    matched = Matched(holder="politie", local_refs={HANDLE: REF}, logged={HANDLE: "match:d:h"})
    record = HolderRecord(record_id=f"incident-{REF.replace('/', '-')}", record_type="incident", subject=HANDLE,
                          category="police_incidents",
                          fields={"kind": "bedreiging", "file": REF, "note": f"see {REF} and more", REF: "x",
                                  "related": [REF, "other"], "nested": {"ref": REF, "date": "2024-03-02"}})
    [clean], withheld = matched.scrubbed([record])
    assert REF not in clean.model_dump_json()
    assert clean.fields == {"kind": "bedreiging", "file": None, "note": None, "related": [None, "other"],
                            "nested": {"ref": None, "date": "2024-03-02"}}
    assert clean.record_id.startswith("record-")
    assert clean.record_type == "incident"
    assert withheld == 6  # the record id, four texts and a key: the holder over-shared
    assert matched.scrubbed([record]).records[0].record_id == clean.record_id  # stable
    assert matched.for_holder() == {REF: HANDLE}


def _guesses() -> list[str]:
    """Every reference of the holder's (guessable) format ``bvh-2026-NNNNN``: a requester that knows the format of
    a holder's references — from its own dealings with the holder, or a published case number — can list them."""
    return [f"bvh-2026-{n:05d}" for n in range(1000)] + [REF]


def test_a_record_id_built_from_the_holders_reference_cannot_be_traced_back_to_it() -> None:
    """The record id that replaces one naming the holder's reference must not give that reference away to a
    requester that hashes every reference of the holder's format with the id's format around it (a plain hash
    of a guessable text is no secret)."""
    matched = Matched(holder="politie", local_refs={HANDLE: REF}, logged={HANDLE: "match:d:h"})
    record = HolderRecord(record_id=f"incident-{REF}", record_type="incident", subject=HANDLE,
                          category="police_incidents", fields={"kind": "bedreiging"})
    [clean] = matched.scrubbed([record]).records
    for guess in _guesses():
        for text in (f"incident-{guess}", guess):
            digest = hashlib.sha256(text.encode()).hexdigest()
            assert digest[:32] not in clean.record_id
            assert digest[-32:] not in clean.record_id



def test_a_numeric_reference_repeated_as_a_number_is_taken_out_too() -> None:
    """A holder whose references are numbers (``20260417``) may repeat one as a JSON number, not a text: it would
    reach the requester as it was."""
    ref = "20260417"
    matched = Matched(holder="politie", local_refs={HANDLE: ref}, logged={HANDLE: "match:d:h"})
    record = HolderRecord(record_id="incident-1", record_type="incident", subject=HANDLE,
                          category="police_incidents",
                          fields={"dossier": int(ref), "also": [float(ref)], "count": 3, "flag": True})
    [clean], withheld = matched.scrubbed([record])
    assert ref not in clean.model_dump_json()
    assert clean.fields == {"dossier": None, "also": [None], "count": 3, "flag": True}
    assert withheld == 2


def test_a_related_subject_named_by_a_reference_of_the_holders_form_is_taken_out() -> None:
    """A holder asked by its reference that names a related subject (the company a person directs) by its plain
    reference, not by its pseudonym: that reference is as linkable to its records as the matched record's own.
    Texts, keys, record ids and record types that name one of the holder's form go; ordinary content (dates,
    amounts, words, another kind of number) stays, and so does a pseudonym."""
    related = "bvh-2026-00923"
    pseudonym = Pseudonym(IdentifierType.BSN, 1, hash_to_point(b"director")).encode()
    matched = Matched(holder="politie", local_refs={HANDLE: REF}, logged={HANDLE: "match:d:h"})
    record = HolderRecord(record_id=f"link-{related}", record_type=related, subject=HANDLE,
                          category="police_incidents",
                          fields={"suspect": related, "upper": related.upper(), "note": f"met {related}.",
                                  related: {"role": "mededader"}, "linked": [{"ref": related}, pseudonym],
                                  "date": "2026-04-17", "case": "2026-00923", "amount": "12500", "kind": "bvh",
                                  "pv": "PL1300-2026-00923", "subject": pseudonym})
    [clean], withheld = matched.scrubbed([record])
    assert related not in clean.model_dump_json()
    assert related.upper() not in clean.model_dump_json()
    assert clean.fields == {"suspect": None, "upper": None, "note": None, "linked": [{"ref": None}, pseudonym],
                            "date": "2026-04-17", "case": "2026-00923", "amount": "12500", "kind": "bvh",
                            "pv": "PL1300-2026-00923", "subject": pseudonym}
    assert clean.record_id.startswith("record-")
    assert clean.record_type == "unspecified"
    assert withheld == 7


def test_the_form_of_a_reference() -> None:
    """Letters and separators as they are, runs with digits by their length; nothing to look for in a reference
    that is one run of letters and digits (it would catch any number of that length)."""
    form = reference_form("subj-0b1c2d3e4f5a6b7c8d9e0f1a")
    assert form is not None
    assert form.search("zie subj-fcb036a97719ffa9235ad5cc")
    assert not form.search("subj-fcb036a97719ffa9235ad5cc0")  # a longer token is another form
    assert not form.search("subj-abcdefabcdefabcdefabcdef")  # no digit: a word, not a reference
    assert not form.search("subject-0b1c2d3e4f5a6b7c8d9e0f1a")
    assert reference_form("20260417") is None
    assert reference_form("0b1c2d3e4f5a6b7c8d9e0f1a") is None
    assert not HolderReferences(["20260417"]).named_in("20260418")
    assert HolderReferences(["20260417"]).named_in("dossier 20260417")
    pseudonym = Pseudonym(IdentifierType.BSN, 1, hash_to_point(b"director")).encode()
    assert HolderReferences(["bsn.v1"]).named_in(f"dossier {pseudonym}")
    assert not HolderReferences(["bsn.v1"]).named_in(pseudonym)  # a pseudonym is never a reference
