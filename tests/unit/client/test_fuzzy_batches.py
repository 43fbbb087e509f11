"""The partner side's enrolment batches (``gateway.client.fuzzy_requests.enrolment_batches``): each within the
gateway's per-batch limits, ``replace`` only on the first, and a reference never both sent and removed."""

from __future__ import annotations

import pytest

from gateway.client.fuzzy import MAX_FILTER_BATCH, FilterEnrolment
from gateway.client.fuzzy_requests import FilterRecordToEnrol, enrolment_batches

SECRET = b"batches-test-partnership-secret!"
PERSON = {"given_name": "michaela", "surname": "neumann", "date_of_birth": "19151111"}


def test_removals_are_split_like_records_and_every_body_is_valid() -> None:
    removals = [f"dossier/old-{n:05d}" for n in range(2 * MAX_FILTER_BATCH + 1)]
    records = [FilterRecordToEnrol("dossier/new-00001", PERSON, ["police_incidents"])]
    bodies = list(enrolment_batches("riec-x", "person", SECRET, records, remove=removals, replace=True))
    assert len(bodies) == 3
    assert [len(b["remove"]) for b in bodies] == [MAX_FILTER_BATCH, MAX_FILTER_BATCH, 1]
    assert [b["replace"] for b in bodies] == [True, False, False]
    assert [r for b in bodies for r in b["remove"]] == removals
    assert [r["ref"] for b in bodies for r in b["records"]] == ["dossier/new-00001"]
    for body in bodies:
        FilterEnrolment.model_validate(body)  # what the gateway accepts


def test_a_reference_both_sent_and_removed_is_refused_before_anything_is_sent() -> None:
    records = [FilterRecordToEnrol("dossier/new-00001", PERSON, ["police_incidents"])]
    with pytest.raises(ValueError, match="both sent and removed"):
        list(enrolment_batches("riec-x", "person", SECRET, records, remove=["dossier/new-00001"]))
