"""Partner side of fuzzy discovery: records → the bodies of ``POST /v1/enrolments/filters`` and ``POST
/v1/discovery/fuzzy``, encoded here with the partnership's CLK secret (:mod:`gateway.client.matching`), so a
record never leaves the partner unencoded; and the follow-up ``POST /v1/exchanges`` about a holder's hits, by
their match handles (:func:`follow_up`). :class:`gateway.client.api.GatewayClient` sends them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from gateway.client.fuzzy import (
    MAX_FILTER_BATCH,
    FuzzyDiscoveryRequest,
    FuzzyDiscoveryResult,
    FuzzySubject,
    RecordType,
)
from gateway.client.models import ExchangeRequest, Signal, Subject
from gateway.matching.encoding import CLKEncoder, dataset_to_wire
from gateway.matching.schema import shipped_schema

__all__ = ["FilterRecordToEnrol", "enrolment_batches", "follow_up", "fuzzy_request"]


class FilterRecordToEnrol(NamedTuple):
    """A record to enrol: the partner's own reference for it, its fields (the schema's field names, e.g.
    ``given_name``, ``surname``, ``date_of_birth``), the data categories it holds on the subject, and what it
    would refuse discovery on (a subject it keeps confidential, a minor)."""

    ref: str
    fields: Mapping[str, object]
    categories: list[str]
    confidential: bool = False
    minor: bool = False


def _wire(record_type: RecordType, secret: bytes, records: Sequence[Mapping[str, object]],
          blocking: bool) -> tuple[list[dict[str, Any]], str]:
    """The records' wire form, and the secret's key id (which every body carries beside ``schema_version``)."""
    encoder = CLKEncoder(shipped_schema(record_type), secret)
    wire = dataset_to_wire(encoder.encode_dataset(records))
    return (wire if blocking else [{"clk": item["clk"]} for item in wire]), encoder.key_id


def enrolment_batches(partnership: str, record_type: RecordType, secret: bytes,
                      records: Sequence[FilterRecordToEnrol], *, remove: Sequence[str] = (), replace: bool = False,
                      confidential_reason: str | None = None, blocking: bool = True,
                      replacement: str | None = None) -> Iterator[dict[str, Any]]:
    """The request bodies, at most ``MAX_FILTER_BATCH`` records and ``MAX_FILTER_BATCH`` removals each (the
    gateway refuses a larger batch whole). A ``replace`` that fits one batch is that batch; a larger one is a
    *replacement* (every batch carries ``replace`` and its id — ``replacement``, or a random one — and the last
    the ``total``): the gateway keeps its batches aside and swaps them in whole with the last, so the old set
    answers until then and a failure half-way changes nothing. A reference both sent and removed is refused here,
    as the gateway refuses it within one batch: split over two batches it would be withdrawn or kept by the
    batches' order; so is a reference sent twice in a replacement (its count would not add up)."""
    both = sorted({r.ref for r in records} & set(remove))
    if both:
        raise ValueError(f"{len(both)} reference(s) both sent and removed")
    several = replace and len(records) > MAX_FILTER_BATCH
    if several:
        if remove:
            raise ValueError("a replacement larger than one batch takes no `remove`: what it does not send goes")
        if len({r.ref for r in records}) != len(records):
            raise ValueError("a reference sent twice in a replacement")
        replacement = replacement or f"replace-{uuid.uuid4().hex}"
    version = shipped_schema(record_type).version
    wire, key_id = _wire(record_type, secret, [r.fields for r in records], blocking)
    items = [{"ref": r.ref, "categories": list(r.categories), "confidential": r.confidential, "minor": r.minor}
             | encoded for r, encoded in zip(records, wire, strict=True)]
    removals = list(remove)
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
    """A fuzzy discovery about ``subjects`` (what the requester knows of each, by the schema's field names)."""
    wire, key_id = _wire(record_type, secret, subjects, blocking)
    flags = list(minors) if minors is not None else [False] * len(wire)
    return FuzzyDiscoveryRequest(
        partnership=partnership, purpose=purpose, legal_basis=legal_basis, case_reference=case_reference,
        signal=signal, categories=categories, record_type=record_type,
        schema_version=shipped_schema(record_type).version, clk_key_id=key_id,
        subjects=[FuzzySubject(minor=minor, **item) for item, minor in zip(wire, flags, strict=True)])


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
