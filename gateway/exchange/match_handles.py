"""Match handles: the follow-up from a fuzzy discovery hit to the holder's record, without its reference.

A fuzzy discovery (:mod:`gateway.exchange.fuzzy`) answers hit/no-hit; a requester that got a hit needs to ask
that holder, formally and purpose-bound, for the data of *that* record — and may learn neither the holder's
reference of it nor how close the match was. So each (holder, subject) hit carries a **match handle**:
``match:`` and 32 random bytes (base64url), handed out once, in that answer. The gateway keeps only the
handle's SHA-256 (table ``match_handles``) with what it is bound to:

* the requesting system (and its organisation), the partnership and the purpose of the discovery;
* the holder whose record matched, the record's type and the holder's own reference of it, and the digest of
  the enrolled row as it matched (:func:`gateway.enrolment.filters.row_digest`);
* the discovery's id, and when it expires (``WGS_MATCH_HANDLE_TTL_SECONDS``, 24 h by default).

``POST /v1/exchanges`` takes a handle as a subject's ``ref`` (:meth:`MatchHandles.resolve`). Such a request is
about handles only, of one holder, and goes to that holder only; its handles must be the caller's own, for
the request's partnership and purpose, and not expired — a handle that is not (unknown, tampered with,
another system's, another partnership's or purpose's, expired) gets one and the same 422, which tells nobody
whether it exists for someone else. The holder is then asked, through the ordinary pipeline (policy,
write-ahead, minimisation, receipts), about its own reference: what it enrolled the record under, and what a
holder answers for (as an opaque reference, ``connectors.store.PartnerStore.resolve``). The records come back
about the handle; the holder's reference goes no further than the holder and this table. A record the
holder withdrew or re-enrolled since the discovery no longer resolves (422: run the discovery again).

In the audit log the follow-up's subject is ``match:<discovery id>:<handle's SHA-256>`` — in the request's
entry and in each disclosure — and the discovery's disclosure entry for the holder lists the SHA-256 of the
handles it issued: a privacy officer links the two without any personal data, or the handle, in the log.
Expired rows are removed whenever new handles are stored (as used client assertions are).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

import structlog
from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from connectors.protocol import HolderRecord
from gateway.auth.principal import Principal
from gateway.client.models import ExchangeRequest
from gateway.clock import Clock, as_utc
from gateway.db.engine import transaction
from gateway.enrolment.filters import current_digest
from gateway.enrolment.tables import match_handles
from gateway.errors import Unprocessable
from gateway.exchange.references import HolderReferences

log = structlog.get_logger("gateway.exchange.match_handles")

HANDLE_PREFIX = "match:"
"""What a match handle starts with: a subject ``ref`` that starts so is taken for one (never for a reference)."""
_HANDLE = re.compile(r"match:[A-Za-z0-9_-]{43}")
_NOT_YOURS = ("subject {n}: not a match handle of yours for this partnership and purpose, or expired; run the "
              "fuzzy discovery again")


def is_match_handle(ref: str) -> bool:
    """Whether ``ref`` is meant as a match handle (valid or not)."""
    return ref.startswith(HANDLE_PREFIX)


def handle_digest(handle: str) -> str:
    """The SHA-256 the gateway keeps (and logs) of a handle: 256 random bits need no salt or key."""
    return hashlib.sha256(handle.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    """A handle handed out with a fuzzy discovery hit, and its row (stored with the discovery's disclosures)."""

    handle: str
    row: dict[str, Any]

    @property
    def digest(self) -> str:
        return str(self.row["handle_sha256"])


UNSPECIFIED_TYPE = "unspecified"
"""The record type a record keeps when the holder's own named one of its references."""


class Scrubbed(NamedTuple):
    """A follow-up's records with the holder's references taken out, and how many texts, numbers, keys, record ids
    and record types named one."""

    records: list[HolderRecord]
    withheld: int


@dataclass(frozen=True)
class Matched:
    """What a follow-up exchange's handles resolved to: their holder and, per handle, the holder's reference
    of the record and how the handle is logged."""

    holder: str
    local_refs: dict[str, str]  # handle -> the holder's reference
    logged: dict[str, str]  # handle -> ``match:<discovery id>:<handle's SHA-256>``
    # Keys the record ids ``scrubbed`` renames: a plain hash of an id built from a reference of a guessable format
    # (``incident-bvh-2026-00417``) is reversed by hashing every reference of that format. Random per follow-up
    # (one answer, also in its ``GET`` and idempotent replays, which read the stored answer), kept nowhere.
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False, compare=False)

    def for_holder(self) -> dict[str, str]:
        """The holder's reference → the first handle of it (the exchange asks the holder in its references, each
        once; :meth:`fanned_out` gives the other handles of a reference its records)."""
        found: dict[str, str] = {}
        for handle, ref in self.local_refs.items():
            found.setdefault(ref, handle)
        return found

    def fanned_out(self, records: list[HolderRecord]) -> list[HolderRecord]:
        """``records`` (about the first handle of each reference, :meth:`for_holder`) and, after each, a copy
        about every other handle of the same record: subjects of one discovery are answered each on its own
        (:func:`gateway.matching.lookup.matches`), so two of them can hit one record, and each handle of it gets
        that record's data."""
        others: dict[str, list[str]] = {}
        first = self.for_holder()
        for handle, ref in self.local_refs.items():
            if first[ref] != handle:
                others.setdefault(first[ref], []).append(handle)
        if not others:
            return records
        return [copy for record in records for copy in (
            record, *(record.model_copy(update={"subject": handle}) for handle in others.get(record.subject, ())))]

    def scrubbed(self, records: list[HolderRecord]) -> Scrubbed:
        """``records`` (their subject the handle by now) without anything that names a holder's reference
        (:class:`gateway.exchange.references.HolderReferences`: the matched records' own, or one of their form,
        such as a related subject named by its plain reference) — a holder that repeats its reference inside a
        field (as a text, or a numeric one as a number), names a related subject so, or builds its record ids or
        types from one, would hand the requester a reference linkable to its records. Such a field becomes null
        (an object's entry with such a key is left out), such a record id a keyed hash of it (HMAC under
        ``key``: the same within this answer, and still one per record, but no guess of the reference can be
        checked against it), such a record type ``unspecified``. The record itself stays: what the holder may
        disclose is not lost for what it should have left out. How many were withheld goes with them: the
        holder over-shared, which the exchange logs."""
        references = HolderReferences(self.local_refs.values())
        withheld = 0

        def named(value: str) -> bool:
            nonlocal withheld
            if references.named_in(value):
                withheld += 1
                return True
            return False

        def record_id(value: str) -> str:
            return ("record-" + hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:32] if named(value)
                    else value)

        def clean(value: Any) -> Any:
            if isinstance(value, str):
                return None if named(value) else value
            if isinstance(value, int | float) and not isinstance(value, bool):  # a numeric reference as a number
                return None if named(str(value)) else value
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items() if not (isinstance(k, str) and named(k))}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value
        cleaned = [r.model_copy(update={"record_id": record_id(r.record_id), "fields": clean(r.fields),
                                        "record_type": UNSPECIFIED_TYPE if named(r.record_type) else r.record_type})
                   for r in records]
        return Scrubbed(cleaned, withheld)


class MatchHandles:
    """Issues the handles of fuzzy discovery hits and resolves those a follow-up exchange cites."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, ttl: timedelta) -> None:
        self.sessions = sessions
        self.clock = clock
        self.ttl = ttl

    def issue(self, principal: Principal, discovery_id: str, partnership: str, purpose: str, holder: str,
              record_type: str, local_ref: str, filter_digest: str) -> Issued:
        """A new handle for one (holder, subject) hit of ``principal``'s discovery; nothing stored yet."""
        handle = HANDLE_PREFIX + secrets.token_urlsafe(32)
        return Issued(handle, {
            "handle_sha256": handle_digest(handle), "discovery_id": discovery_id,
            "requester_org": principal.organisation, "requester_system": principal.subject,
            "partnership": partnership, "purpose": purpose, "holder": holder, "record_type": record_type,
            "local_ref": local_ref, "filter_sha256": filter_digest, "expires_at": self.clock.now() + self.ttl})

    def stored(self, issued: list[Issued]) -> Callable[[Connection], None]:
        """What stores ``issued`` in the transaction that logs the discovery's disclosures (no handle is valid
        without its log entry, nor logged without being valid), removing the expired handles on the way."""
        rows = [i.row for i in issued]
        now = self.clock.now()

        def store(connection: Connection) -> None:
            connection.execute(delete(match_handles).where(match_handles.c.expires_at <= now))
            connection.execute(insert(match_handles), rows)
        return store

    def resolve(self, principal: Principal, body: ExchangeRequest) -> Matched | None:
        """The handles among ``body``'s subjects, checked (None when there are none): 422 for anything but
        the caller's own, current handles of one holder, about records still enrolled as they matched."""
        handles = [s.ref for s in body.subjects]
        if not any(is_match_handle(h) for h in handles):
            return None
        if not all(is_match_handle(h) for h in handles):
            raise Unprocessable("a request about match handles is about match handles only (one holder's "
                                "records): ask about other subjects in a request of their own")
        digests = [handle_digest(h) for h in handles]
        with transaction(self.sessions) as session:
            rows = {row.handle_sha256: row for row in session.execute(
                select(match_handles).where(match_handles.c.handle_sha256.in_(digests)))}
            now = self.clock.now()
            for n, (handle, digest) in enumerate(zip(handles, digests, strict=True)):
                row = rows.get(digest)
                # One answer for every handle that is not the caller's to cite, whatever the reason: it must not
                # tell a prober whether the handle exists for someone else (nor a holder's clock skew).
                if (row is None or not _HANDLE.fullmatch(handle) or row.requester_system != principal.subject
                        or row.requester_org != principal.organisation or row.partnership != body.partnership
                        or row.purpose != body.purpose or as_utc(row.expires_at) <= now):
                    log.warning("match_handle_refused", position=n)
                    raise Unprocessable(_NOT_YOURS.format(n=n))
            found = [rows[d] for d in digests]
            holders = sorted({row.holder for row in found})
            if len(holders) > 1:
                raise Unprocessable("match handles of different holders: ask each holder in a request of its own")
            holder = holders[0]
            if body.holders != "all" and set(body.holders) != {holder}:
                raise Unprocessable(f"a match handle's exchange goes to its holder `{holder}` only: leave "
                                    "`holders` out or name that holder alone")
            for n, row in enumerate(found):  # the holder is asked by reference alone, each reference once
                if current_digest(session, row.partnership, holder, row.record_type,
                                  row.local_ref) != row.filter_sha256:
                    raise Unprocessable(f"subject {n}: the holder has withdrawn or re-enrolled the matched record "
                                        "since the discovery, so its match handle no longer resolves; run the "
                                        "fuzzy discovery again")
        return Matched(holder=holder,
                       local_refs={h: row.local_ref for h, row in zip(handles, found, strict=True)},
                       logged={h: f"match:{row.discovery_id}:{row.handle_sha256}"
                               for h, row in zip(handles, found, strict=True)})
