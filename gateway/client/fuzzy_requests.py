"""Partner side of fuzzy discovery: records → the bodies of ``POST /v1/enrolments/filters`` and ``POST
/v1/discovery/fuzzy``, encoded here with the partnership's CLK secret (:mod:`gateway.client.matching`), so a
record never leaves the partner unencoded; and the follow-up ``POST /v1/exchanges`` about a holder's hits, by
their match handles (:func:`follow_up`). :class:`gateway.client.api.GatewayClient` sends them.

Records whose filter the gateway would refuse (:mod:`gateway.matching.plausibility`: empty, or — very long names
— so dense that it would match almost anyone) are dealt with here, by the gateway's own rule, before anything
is sent: an enrolment leaves them out and reports them (:class:`LeftOutRecord`), because the gateway refuses a
batch with one of them whole and one real person with a long name must not keep a partner's other records out
of the index; a discovery about such a subject is refused (:class:`UnsearchableSubjects`), since the gateway
would refuse the request and a subject cannot be quietly dropped from a question.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from gateway.client.fuzzy import (
    MAX_FILTER_BATCH,
    FuzzyDiscoveryRequest,
    FuzzyDiscoveryResult,
    FuzzySubject,
    RecordType,
)
from gateway.client.models import ExchangeRequest, Signal, Subject
from gateway.matching.encoding import CLKEncoder, EncodedDataset, clk_key_id, dataset_to_wire, filters_from_b64
from gateway.matching.errors import EncodingError
from gateway.matching.plausibility import MAX_DENSITY, Implausibility, implausibilities
from gateway.matching.schema import shipped_schema

__all__ = ["EnrolmentPlan", "FilterEnrolmentResult", "FilterRecordToEnrol", "Implausibility", "LeftOutRecord",
           "RefusedSubject", "UnsearchableSubjects", "enrolment_batches", "enrolment_plan", "follow_up",
           "fuzzy_request", "refused_subjects"]


class FilterRecordToEnrol(NamedTuple):
    """A record to enrol: the partner's own reference for it, its fields (the schema's field names, e.g.
    ``given_name``, ``surname``, ``date_of_birth``), the data categories it holds on the subject, and what it
    would refuse discovery on (a subject it keeps confidential, a minor)."""

    ref: str
    fields: Mapping[str, object]
    categories: list[str]
    confidential: bool = False
    minor: bool = False

    def __repr__(self) -> str:  # never the fields (names, dates of birth): a repr ends up in debug lines
        return (f"FilterRecordToEnrol(ref={self.ref!r}, fields=..., categories={self.categories!r}, "
                f"confidential={self.confidential!r}, minor={self.minor!r})")


class LeftOutRecord(NamedTuple):
    """A record an enrolment left out: the partner's reference for it, and why the gateway would refuse its
    filter (``too-dense``: very long names; ``empty``: none of the schema's fields had a value)."""

    ref: str
    reason: Implausibility


class FilterEnrolmentResult(BaseModel):
    """What ``GatewayClient.enrol_filters`` did: the gateway's answers summed over the batches, and the records
    it did not send (``left_out``)."""

    record_type: str
    stored: int = Field(description="Records added or updated.")
    removed: int = Field(description="Records withdrawn (by `remove` or `replace`).")
    enrolled: int | None = Field(description=(
        "Your records of this type in this partnership now; None when nothing was sent (every record was left "
        "out, and there was nothing to remove or replace)."))
    left_out: list[LeftOutRecord] = Field(default_factory=list, description=(
        "Records not sent, because the gateway would refuse their filter (in the order given). A filter enrolled "
        "under such a reference earlier stays enrolled until a `replace` or a `remove` withdraws it."))


class RefusedSubject(NamedTuple):
    """A subject of a fuzzy discovery whose filter the gateway would refuse: its position among the subjects
    given, and why."""

    position: int
    reason: Implausibility


class UnsearchableSubjects(ValueError):
    """A fuzzy discovery about subjects whose filter the gateway would refuse (``subjects``: each one's position
    and reason): raised before anything is sent. Most often a person with very long names (``too-dense``), whose
    filter sets so many bits that it would match almost anyone — which is what a probe for "whom do you hold"
    would send, so the gateway cannot take it. Ask about the others without it; for the subject itself, a
    discovery by a number you know of it (``GatewayClient.discovery``, pseudonyms) is not affected. The message
    names positions and reasons only, never what was encoded."""

    def __init__(self, subjects: Sequence[RefusedSubject]) -> None:
        self.subjects = tuple(subjects)
        named = ", ".join(f"{s.position} ({s.reason})" for s in self.subjects[:10])
        more = f" and {len(self.subjects) - 10} more" if len(self.subjects) > 10 else ""
        super().__init__(f"the gateway would refuse the filter of subject {named}{more}: empty, or with more than "
                         f"{MAX_DENSITY:.0%} of its bits set (very long names), it would match nothing or almost "
                         "anyone; nothing was sent — ask without it (a discovery by number is not affected)")


@dataclass(frozen=True)
class EnrolmentPlan:
    """An enrolment's request bodies (:func:`enrolment_plan`) and the records it leaves out."""

    bodies: list[dict[str, Any]]
    left_out: list[LeftOutRecord]


def _encoded(record_type: RecordType, secret: bytes, records: Sequence[Mapping[str, object]]) -> EncodedDataset:
    return CLKEncoder(shipped_schema(record_type), secret).encode_dataset(records)


def _wire(dataset: EncodedDataset, blocking: bool) -> list[dict[str, Any]]:
    wire = dataset_to_wire(dataset)
    return wire if blocking else [{"clk": item["clk"]} for item in wire]


def enrolment_batches(partnership: str, record_type: RecordType, secret: bytes,
                      records: Sequence[FilterRecordToEnrol], *, remove: Sequence[str] = (), replace: bool = False,
                      confidential_reason: str | None = None, blocking: bool = True,
                      replacement: str | None = None) -> Iterator[dict[str, Any]]:
    """The request bodies of :func:`enrolment_plan` (which also says which records were left out)."""
    yield from enrolment_plan(partnership, record_type, secret, records, remove=remove, replace=replace,
                              confidential_reason=confidential_reason, blocking=blocking,
                              replacement=replacement).bodies


def enrolment_plan(partnership: str, record_type: RecordType, secret: bytes,
                   records: Sequence[FilterRecordToEnrol], *, remove: Sequence[str] = (), replace: bool = False,
                   confidential_reason: str | None = None, blocking: bool = True,
                   replacement: str | None = None) -> EnrolmentPlan:
    """The request bodies, at most ``MAX_FILTER_BATCH`` records and ``MAX_FILTER_BATCH`` removals each (the
    gateway refuses a larger batch whole). A ``replace`` that fits one batch is that batch; a larger one is a
    *replacement* (every batch carries ``replace`` and its id — ``replacement``, or a random one — and the last
    the ``total``): the gateway keeps its batches aside and swaps them in whole with the last, so the old set
    answers until then and a failure half-way changes nothing. A reference both sent and removed is refused here,
    as the gateway refuses it within one batch: split over two batches it would be withdrawn or kept by the
    batches' order; so is a reference sent twice in a replacement (its count would not add up).

    Records whose filter the gateway would refuse (:func:`gateway.matching.plausibility.implausibilities`, the
    gateway's own check) are left out of the bodies and listed in ``left_out``: one such record would make the
    gateway refuse its whole batch. Only their fuzzy matching is lost; the same subjects enrolled by pseudonym
    (``GatewayClient.enrol``) are found by exact discovery as before. No bodies when nothing is left to send."""
    both = sorted({r.ref for r in records} & set(remove))
    if both:
        raise ValueError(f"{len(both)} reference(s) both sent and removed")
    if replace and len(records) > MAX_FILTER_BATCH and len({r.ref for r in records}) != len(records):
        raise ValueError("a reference sent twice in a replacement")
    dataset = _encoded(record_type, secret, [r.fields for r in records])
    refused = implausibilities(dataset.filters)
    left_out = [LeftOutRecord(records[position].ref, reason) for position, reason in refused.items()]
    wire = _wire(dataset, blocking)
    items = [{"ref": r.ref, "categories": list(r.categories), "confidential": r.confidential, "minor": r.minor}
             | encoded for position, (r, encoded) in enumerate(zip(records, wire, strict=True))
             if position not in refused]
    if left_out and not (items or remove or replace):
        return EnrolmentPlan([], left_out)
    several = replace and len(items) > MAX_FILTER_BATCH
    if several:
        if remove:
            raise ValueError("a replacement larger than one batch takes no `remove`: what it does not send goes")
        replacement = replacement or f"replace-{uuid.uuid4().hex}"
    return EnrolmentPlan(list(_bodies(partnership, record_type, clk_key_id(secret), items, list(remove), replace,
                                      replacement if several else None, confidential_reason)), left_out)


def _bodies(partnership: str, record_type: RecordType, key_id: str, items: list[dict[str, Any]], removals: list[str],
            replace: bool, replacement: str | None, confidential_reason: str | None) -> Iterator[dict[str, Any]]:
    version = shipped_schema(record_type).version
    several = replacement is not None
    end = max(len(items), len(removals), 1)
    for start in range(0, end, MAX_FILTER_BATCH):
        body: dict[str, Any] = {"partnership": partnership, "record_type": record_type, "schema_version": version,
                                "clk_key_id": key_id, "records": items[start:start + MAX_FILTER_BATCH],
                                "remove": removals[start:start + MAX_FILTER_BATCH], "replace": replace and not start}
        if several:
            body |= {"replace": True, "replacement": replacement}
            if start + MAX_FILTER_BATCH >= end:
                body["total"] = len(items)
        if confidential_reason is not None:
            body["confidential_reason"] = confidential_reason
        yield body


def fuzzy_request(*, partnership: str, purpose: str, legal_basis: str, case_reference: str, signal: Signal,
                  categories: list[str], record_type: RecordType, secret: bytes,
                  subjects: Sequence[Mapping[str, object]], minors: Sequence[bool] | None = None,
                  blocking: bool = True) -> FuzzyDiscoveryRequest:
    """A fuzzy discovery about ``subjects`` (what the requester knows of each, by the schema's field names).

    :class:`UnsearchableSubjects` when the gateway would refuse a subject's filter (very long names: see the
    module): the question is not asked without it behind the caller's back."""
    dataset = _encoded(record_type, secret, subjects)
    refused = implausibilities(dataset.filters)
    if refused:
        raise UnsearchableSubjects([RefusedSubject(position, reason) for position, reason in refused.items()])
    wire = _wire(dataset, blocking)
    flags = list(minors) if minors is not None else [False] * len(wire)
    return FuzzyDiscoveryRequest(
        partnership=partnership, purpose=purpose, legal_basis=legal_basis, case_reference=case_reference,
        signal=signal, categories=categories, record_type=record_type,
        schema_version=shipped_schema(record_type).version, clk_key_id=clk_key_id(secret),
        subjects=[FuzzySubject(minor=minor, **item) for item, minor in zip(wire, flags, strict=True)])


def refused_subjects(request: FuzzyDiscoveryRequest) -> list[RefusedSubject]:
    """The subjects of ``request`` whose filter the gateway would refuse as implausible, by the gateway's rule —
    for a request not made by :func:`fuzzy_request` (which refuses them itself). A filter that is not one of the
    schema's length at all is the gateway's to refuse (it says which)."""
    bits = shipped_schema(request.record_type).filter_bits
    refused: list[RefusedSubject] = []
    for position, subject in enumerate(request.subjects):
        try:
            filters = filters_from_b64([subject.clk], bits)
        except EncodingError:
            continue
        refused += [RefusedSubject(position, reason) for reason in implausibilities(filters).values()]
    return refused


def follow_up(request: FuzzyDiscoveryRequest, result: FuzzyDiscoveryResult, holder: str, *,
              categories: list[str] | None = None) -> ExchangeRequest:
    """The exchange that asks ``holder`` for the data of the records that were its hits in ``result`` (the
    answer to ``request``): the discovery's partnership, purpose, legal basis, case and signal, each hit's match
    handle as a subject (with the requester's ``minor`` flag for it), ``holder`` alone, and ``categories`` (the
    discovery's by default). Send it with ``GatewayClient.exchange``: the records come back about the handles.
    ValueError when ``holder`` had no hit."""
    target = next((t for t in result.targets if t.holder == holder), None)
    if target is None or not target.handles():
        raise ValueError(f"no hit at `{holder}` to follow up")
    subjects = [Subject(ref=handle, minor=asked.minor)
                for handle, asked in zip(target.match_handles, request.subjects, strict=True) if handle is not None]
    return ExchangeRequest(partnership=request.partnership, purpose=request.purpose,
                           legal_basis=request.legal_basis, case_reference=request.case_reference,
                           signal=request.signal, categories=categories or list(request.categories),
                           subjects=subjects, holders=[holder])
