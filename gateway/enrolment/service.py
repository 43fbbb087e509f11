"""The gateway's pseudonym service: participants' own pseudonyms, the discovery index, and translation.

* ``pseudonymise``: a participant sends polymorphic pseudonyms (made with ``gateway.client.pseudonyms``
  from identifiers it holds) and receives its **own** pseudonyms, encrypted so only it can open them.
* ``enrol``: the same, and the subjects (with the record types held) enter the hit/no-hit index under
  their **partnership-domain** pseudonym. Re-enrolling a subject replaces its record types; enrolling it
  with no record types removes it — the index is updated incrementally, per subject. With each subject the
  participant says whether it keeps it confidential and whether it is a minor, so that the index refuses
  discovery where the participant itself would (``IndexHolding``).
* ``to_holder`` / ``to_requester`` / ``to_partnership``: the exchange's translations between participants'
  domains. ``translate`` is an oracle (see ``gateway.pseudonyms.transcryptor``), so the exchange calls it only
  for the subjects of a policy-checked request and for records the holder returned about exactly those.

Nothing here sees or logs an identifier: the gateway receives ciphertexts and computes domain pseudonyms
without ever forming the identifier's point.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Connection, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from audit import AsyncAuditWriter
from audit.guard import find_personal_data
from gateway.auth.principal import Principal
from gateway.clock import Clock
from gateway.enrolment.audited import (
    EntryTrace,
    IndexCounts,
    add_or_update,
    delete_among,
    held_among,
    write_logged,
)
from gateway.enrolment.quota import DailyPseudonymQuota
from gateway.enrolment.tables import enrolments
from gateway.errors import Forbidden, PseudonymKeyUnknown, ServiceUnavailable, Unprocessable
from gateway.pseudonyms.errors import InvalidPseudonym, KeyStoreError, PseudonymError, UnknownKeyVersion, WrongKey
from gateway.pseudonyms.identifiers import IdentifierType
from gateway.pseudonyms.keys import Domain
from gateway.pseudonyms.pep import PolymorphicPseudonym, Pseudonym
from gateway.pseudonyms.transcryptor import Transcryptor
from gateway.register.model import Register

log = structlog.get_logger("gateway.enrolment")


@contextmanager
def _not_yours() -> Iterator[None]:
    """A subject that decodes but cannot be transformed (e.g. an unknown key version) is the caller's bad
    input (422), not a defect of the gateway's (500). One of a retired key version is said to be so: the
    partner kept a pseudonym from before a rotation, and 'not yours' would send it looking elsewhere."""
    try:
        yield
    except UnknownKeyVersion as exc:  # a partner's pseudonym from before a rotation whose version is retired
        raise Unprocessable(f"a subject is a pseudonym of key version {exc.version}, which the gateway does not "
                            "hold (any more): use your current pseudonyms (enrol again, or POST "
                            "/v1/pseudonyms)") from exc
    except (PseudonymError, ValueError) as exc:
        raise Unprocessable(f"a subject is not a pseudonym of yours ({type(exc).__name__})") from exc


@contextmanager
def _refused_as_unprocessable(position: int) -> Iterator[None]:
    """A partner's item that is no usable polymorphic pseudonym is its error (422), never ours (500): a valid
    encryption of the identity point, for one, decodes fine and only fails when transformed."""
    try:
        yield
    except WrongKey as exc:  # well-formed, under none of the gateway's keys: the partner's may be out of date
        raise PseudonymKeyUnknown(f"item {position}: not a polymorphic pseudonym under the gateway's key "
                                  f"({type(exc).__name__})") from exc
    except (PseudonymError, ValueError) as exc:
        raise Unprocessable(f"item {position}: not a polymorphic pseudonym under the gateway's key "
                            f"({type(exc).__name__})") from exc


@dataclass(frozen=True)
class Item:
    """One subject as a participant sends it: identifier type and polymorphic pseudonym."""

    identifier_type: str
    polymorphic: str
    record_types: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    confidential: bool = False  # the participant refuses to answer about it (its own objection)
    minor: bool = False  # under 18 by the participant's own data (rule 5)


REFUSAL_CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
"""A holder's refusal reason is a code (``investigation-confidentiality``), never free text: it reaches the
requester and the permanent audit log, and free text could name a person."""


def refuse_personal_data(value: str | None, what: str, advice: str) -> None:
    """422 when the audit log's guard takes ``value`` for personal data: "``what`` looks like personal data
    (its kind)``advice``" — the kind, never the value. One check for every text a participant enrols that the
    gateway keeps (a reference, a code, an id), so that such a text is refused as its input before anything is
    written, never kept in the index or refused later as an outage of the log."""
    if value is not None and (findings := find_personal_data(value)):
        raise Unprocessable(f"{what} looks like personal data ({findings[0].kind}){advice}")


def ensure_refusal_code_names_no_one(code: str | None) -> None:
    """422 for a refusal code, of :data:`REFUSAL_CODE_PATTERN`'s shape, that the audit log's guard takes for
    personal data: a BSN is of that shape (``111222333``, ``111-222-333``). Kept with the subjects it was
    enrolled for, it would be a person's number in the index, and every discovery refused with it would fail
    the refusal's audit entry (the exchange now answers such a code as ``unspecified``)."""
    refuse_personal_data(code, "`confidential_reason`", ": a refusal code names no one")


MAX_BATCH_RECORD_TYPES = 100
"""Distinct record types one enrolment batch may name. Its ``index.enrolment`` entry lists them, and an audit
entry holds at most ``audit.canonical.MAX_EVENT_BYTES`` (32 KiB): some 500 types of the pattern's 64 characters
made the entry too large to write. A holder has a handful of record types; a hundred leave the entry room."""


def ensure_record_types_name_no_one(items: list[Item]) -> None:
    """422 for a batch whose record types the batch's ``index.enrolment`` entry (which lists them) cannot carry,
    so that such a batch is not refused only when that entry is written — as 503, an outage of the log, which the
    partner retries as one: more than :data:`MAX_BATCH_RECORD_TYPES` of them (an entry over the log's size
    limit), or one, of ``RECORD_TYPE_PATTERN``'s shape, that the audit log's guard takes for personal data
    (``x-123456782``: a BSN inside a code, which the index would also keep with the subject). Each distinct type
    is checked once (a batch repeats a few); the item named is the first that carries it, the kind found, never
    the value."""
    distinct = {kind for item in items for kind in item.record_types}
    if len(distinct) > MAX_BATCH_RECORD_TYPES:
        raise Unprocessable(f"a batch names at most {MAX_BATCH_RECORD_TYPES} different record types, this one "
                            f"{len(distinct)}: nothing was enrolled; send the subjects in batches of fewer types")
    checked: set[str] = set()
    for position, item in enumerate(items):
        for record_type in item.record_types:
            if record_type not in checked:
                checked.add(record_type)
                refuse_personal_data(record_type, f"item {position}: a record type",
                                     ": a record type is a code and names no one")


CONFIDENTIAL = "confidential"
"""The refusal code of a confidential subject whose participant gave no code of its own at enrolment."""


@dataclass(frozen=True)
class IndexHolding:
    """What the index knows of one participant for the subjects of a discovery: the categories of the
    records it enrolled for them, and whether it would refuse discovery about them if it were asked itself —
    ``confidential_reason`` (the code it refuses with) when it keeps any of them confidential, ``minor`` when
    any of them is a minor. The exchange refuses on those exactly as ``connectors.holder.Holder.discover``
    does, so that asking the index and asking the holder agree."""

    categories: frozenset[str]
    confidential_reason: str | None = None
    minor: bool = False


@dataclass
class _Holding:
    """One subject's index entry as a batch builds it: the union of what its items say (see ``enrol``)."""

    key_version: int
    own_tag: str  # the index's tag of the participant's own pseudonym of the subject (``enrolments.own_tag``)
    record_types: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    confidential: bool = False
    minor: bool = False

    def add(self, item: Item) -> None:
        self.record_types.update(item.record_types)
        self.categories.update(item.categories)
        self.confidential = self.confidential or item.confidential
        self.minor = self.minor or item.minor


_PSEUDONYM_PREFIX = re.compile(r"[a-z]+\.v[0-9]+\.", re.IGNORECASE)


def is_pseudonym(text: str) -> bool:
    """Whether ``text`` is an encoded domain pseudonym (rather than an opaque pre-enrolment reference).

    A text that does not even start like one (``looks_like_pseudonym``) is none, told by one regular expression
    match instead of a decode that ends in an exception: an exchange asks this of its subjects several times,
    and of the texts in holders' records, nearly all of which are no pseudonym."""
    return _decoded(text) is not None


def _decoded(text: str) -> Pseudonym | None:
    """``text`` as the domain pseudonym it encodes, or None when it is none (see ``is_pseudonym``)."""
    if not isinstance(text, str) or _PSEUDONYM_PREFIX.match(text) is None:
        return None
    try:
        return Pseudonym.decode(text)
    except (InvalidPseudonym, ValueError):
        return None


def looks_like_pseudonym(text: str) -> bool:
    """Whether ``text`` starts like an encoded pseudonym (``<type>.v<version>.``, in any letter case).

    A subject that looks like one and is none (``is_pseudonym`` false) is a pseudonym corrupted on its way
    (capitals, base64 padding, a second encoding of the point) or forged — never an opaque reference, which
    it would otherwise pass for: answered ``no-hit`` without a word, and handed to every holder and written to
    the audit log as it is, the requester's own pseudonym where only the holder's or the partnership's may go.
    """
    return _PSEUDONYM_PREFIX.match(text) is not None


@dataclass(frozen=True)
class PseudonymBatch:
    """One pseudonym enrolment, computed and checked, ready to be written with its audit entry
    (:mod:`gateway.enrolment.audited`): the index rows to add or replace, the subjects to withdraw, and the
    participant's own pseudonyms to answer with."""

    partnership: str
    organisation: str
    system: str
    subjects: int
    rows: list[dict[str, Any]]
    gone: list[str]
    answer: list[str]
    index: str = "pseudonyms"
    quota_day: str | None = None  # the day the batch's pseudonyms were counted under (given back if not enrolled)

    def _mine(self) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
        return enrolments.c.partnership == self.partnership, enrolments.c.organisation == self.organisation

    def categories(self) -> list[str]:
        return sorted({category for row in self.rows for category in row["categories"]})

    def described(self) -> dict[str, object]:
        return {"subjects": self.subjects,
                "record_types": sorted({kind for row in self.rows for kind in row["record_types"]}),
                "confidential": sum(1 for row in self.rows if row["confidential"]),
                "minor": sum(1 for row in self.rows if row["minor"])}

    def expect(self, session: Session) -> IndexCounts:
        held = held_among(session, enrolments.c.pseudonym, self._mine(),
                          [row["pseudonym"] for row in self.rows] + self.gone)
        updated = sum(1 for row in self.rows if row["pseudonym"] in held)
        return IndexCounts(added=len(self.rows) - updated, updated=updated,
                           removed=sum(1 for key in self.gone if key in held))

    def apply(self, connection: Connection) -> IndexCounts:
        """Withdraw, then add or replace (:func:`~gateway.enrolment.audited.add_or_update`) — counting what each
        statement did, so that the entry's counts are checked against the transaction itself."""
        removed = delete_among(connection, enrolments, enrolments.c.pseudonym, self._mine(), self.gone)
        added, updated = add_or_update(
            connection, enrolments, enrolments.c.pseudonym,
            [enrolments.c.partnership, enrolments.c.organisation, enrolments.c.pseudonym], self._mine(), self.rows,
            _REPLACED, "a subject was withdrawn by another batch meanwhile")
        return IndexCounts(added=added, updated=updated, removed=removed)


_REPLACED = ("key_version", "own_tag", "record_types", "categories", "updated_at", "confidential",
             "confidential_reason", "minor")


def participant_of(register: Register, principal: Principal, partnership: str) -> str:
    """The caller's organisation, if it is a partner system of an active participant of ``partnership``
    (403 otherwise): who may enrol anything into, or look anything up in, a partnership's indexes.

    The system itself must be one the register lists for the participant, as the policy requires of a
    requester (rule 1): an organisation's system listed for another partnership only, or a participant that
    lists no system, wrote into the organisation's index here."""
    found = register.partnerships.get(partnership)
    participant = found.participant_of_organisation(principal.organisation) if found else None
    if found is None or participant is None or principal.kind != "system":
        raise Forbidden(f"`{principal.organisation}` is not a participant of `{partnership}`")
    if principal.subject not in participant.systems:
        raise Forbidden(f"system `{principal.subject}` does not act for `{principal.organisation}` in `{partnership}`")
    if found.status != "active" or participant.status != "active":
        raise Forbidden(f"`{principal.organisation}` does not take part in `{partnership}` any more")
    return principal.organisation


_ENROLLED_AMONG = select(enrolments.c.pseudonym).where(
    enrolments.c.partnership == bindparam("partnership"), enrolments.c.organisation == bindparam("organisation"),
    enrolments.c.pseudonym.in_(bindparam("pseudonyms", expanding=True)))
"""Which of some partnership pseudonyms an organisation enrolled: asked for every holder answer that names a
related subject. One constant statement on a plain connection, not a new ORM statement in a session each time:
that cost 0.24 ms of a worker thread per answer, more than the four multiplications of its two directors'
translations together; this costs 0.07 ms."""

_OWN_ENROLLED_AMONG = select(enrolments.c.own_tag).where(
    enrolments.c.partnership == bindparam("partnership"), enrolments.c.organisation == bindparam("organisation"),
    enrolments.c.key_version == bindparam("key_version"),
    enrolments.c.own_tag.in_(bindparam("tags", expanding=True)))
"""Which of some tags (``Transcryptor.index_tag`` of an organisation's own pseudonyms, as it holds them) are of
subjects it enrolled, under ``key_version`` (the current one): the related subjects of a holder's answer, found
without converting each into the partnership domain first (``PseudonymService.related_for_requester``). Only rows
of the current version: ``_ENROLLED_AMONG`` finds a value by its current partnership pseudonym only, and the two
must agree. Tags, not the pseudonyms: the database alone must not link a participant's pseudonyms to the index."""

_LOOKUP_CHUNK = 10_000
"""Values per index look-up statement (``_OWN_ENROLLED_AMONG``, ``_ENROLLED_AMONG``): a holder's answer may name up
to ``connectors.protocol.MAX_ANSWER_VALUES`` (100,000) related subjects, and PostgreSQL takes at most 65,535
parameters a statement (SQLite's limit is lower in some builds). An answer naming a few, as nearly all do, is
still one statement."""


def _chunked(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _LOOKUP_CHUNK):
        yield values[start:start + _LOOKUP_CHUNK]


_HOLDINGS_OF = select(enrolments.c.organisation, enrolments.c.categories, enrolments.c.confidential,
                      enrolments.c.confidential_reason, enrolments.c.minor).where(
    enrolments.c.partnership == bindparam("partnership"),
    enrolments.c.pseudonym.in_(bindparam("pseudonyms", expanding=True)))
"""What the index holds on some subjects (partnership pseudonyms), per organisation: every discovery by
pseudonyms asks it. A constant statement on a plain connection, as ``_ENROLLED_AMONG``."""


class PseudonymService:
    """``transcryptor``: a fixed one, or where to get the current one on each use — the gateway passes a
    :class:`~gateway.pseudonyms.following.FollowedTranscryptor`, so that a key rotation made by another
    process (``wgs-gateway pseudonyms rotate``) is in force from the next request, without a restart. Each
    call takes the transcryptor once and does all its work with that one ring."""

    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock, register: Register,
                 transcryptor: Transcryptor | Callable[[], Transcryptor],
                 quota: DailyPseudonymQuota | None = None, writer: AsyncAuditWriter | None = None) -> None:
        self.sessions = sessions
        self.clock = clock
        self.register = register
        self._transcryptor: Callable[[], Transcryptor] = (
            transcryptor if callable(transcryptor) else lambda: transcryptor)
        self.quota = quota or DailyPseudonymQuota(sessions, clock, 0)
        self.writer = writer  # enrolments are logged through it; without it nothing is enrolled (503)

    @property
    def transcryptor(self) -> Transcryptor:
        """The transcryptor of the key ring in force now. A key ring that changed into one the gateway cannot
        trust (see ``gateway.pseudonyms.following``) fails closed: 503, nothing pseudonymised or translated;
        the reason (no key material in it) goes to the log, not to the partner."""
        try:
            return self._transcryptor()
        except KeyStoreError as exc:
            log.error("pseudonym_keys_unusable", reason=str(exc))
            raise ServiceUnavailable("the gateway's pseudonym keys cannot be used at the moment; nothing was "
                                     "pseudonymised or disclosed") from exc

    # -- participants ------------------------------------------------------------------------------
    def _participant(self, principal: Principal, partnership: str) -> str:
        return participant_of(self.register, principal, partnership)

    def public_key(self) -> dict[str, Any]:
        transcryptor = self.transcryptor
        return {"public_key": transcryptor.public_key(), "version": transcryptor.public_key_version}

    def recipient_key(self, principal: Principal, partnership: str) -> str:
        """The caller's secret to open its encrypted pseudonyms (handed over the authenticated channel)."""
        organisation = self._participant(principal, partnership)
        return self.transcryptor.recipient_key(partnership, organisation).encode()

    @staticmethod
    def _decode(items: Iterable[Item], transcryptor: Transcryptor) -> list[tuple[Item, PolymorphicPseudonym]]:
        decoded = []
        for position, item in enumerate(items):
            with _refused_as_unprocessable(position):
                IdentifierType(item.identifier_type)
                polymorphic = PolymorphicPseudonym.decode(item.polymorphic)
                transcryptor.accept(polymorphic)
            decoded.append((item, polymorphic))
        return decoded

    def pseudonymise(self, principal: Principal, partnership: str, items: list[Item]) -> list[str]:
        """The caller's own pseudonyms for ``items``, encrypted for it; nothing is stored."""
        organisation = self._participant(principal, partnership)
        transcryptor = self.transcryptor
        decoded = self._decode(items, transcryptor)
        answer = []
        with self.quota.counted(principal.subject, len(items)):  # given back when an item is refused
            for position, (item, polymorphic) in enumerate(decoded):
                with _refused_as_unprocessable(position):
                    answer.append(transcryptor.encrypted_pseudonym(polymorphic, item.identifier_type, partnership,
                                                                   organisation).encode())
        return answer

    def partnership_pseudonym_of(self, item: Item, partnership: str) -> str:
        """The subject's partnership-domain pseudonym, for the contact point's look-up in the audit log."""
        if partnership not in self.register.partnerships:
            raise Unprocessable(f"unknown partnership `{partnership}`")
        transcryptor = self.transcryptor
        ((_, polymorphic),) = self._decode([item], transcryptor)
        with _refused_as_unprocessable(0):
            return transcryptor.partnership_pseudonym(polymorphic, item.identifier_type, partnership).encode()

    def in_every_key_version(self, pseudonym: str, partnerships: Iterable[str]) -> list[str]:
        """``pseudonym`` and the same subject's pseudonym under every other key version the ring holds, in each
        of ``partnerships`` — what a data-subject request must look for in the log.

        Why: an entry keeps the partnership-domain pseudonym it was written under, key version included, and a
        rotation (``wgs-gateway pseudonyms rotate``) never rewrites the append-only log. Searched for under one
        version only, every disclosure made under another was missing from the answer to the data subject.
        Which partnership the pseudonym is of is not said (the log's pseudonym is what the contact point has),
        so it is converted in each of ``partnerships``: converted in another partnership's domain it is no
        subject's pseudonym there, and finds nothing. A text that is no pseudonym of ours, or of a retired key
        version, is looked for as it is."""
        try:
            parsed = Pseudonym.decode(pseudonym)
        except PseudonymError:
            return [pseudonym]
        transcryptor = self.transcryptor
        versions = transcryptor.keys.versions
        if parsed.key_version not in versions:
            return [pseudonym]
        found = {pseudonym}
        for partnership in sorted(set(partnerships)):
            domain = Domain(partnership)
            found.update(transcryptor.convert(parsed, domain, domain, target_version=version).encode()
                         for version in versions if version != parsed.key_version)
        return sorted(found)

    def _known_categories(self, items: list[Item]) -> None:
        """422 for a category the register does not know, before anything is computed or written.

        Indexed as it came, such a category (a typo, one of a newer register) could never be asked for: the
        subject answered ``no-hit`` in the category meant, for ever after, while its partner believed it
        enrolled. The names are codes (the request's pattern), so naming them leaks nothing."""
        known = self.register.categories.keys()
        for position, item in enumerate(items):
            unknown = sorted(set(item.categories) - known)
            if unknown:
                raise Unprocessable(f"item {position}: categories the register does not know: "
                                    f"{', '.join(unknown)} (register {self.register.version})")

    async def enrol(self, principal: Principal, partnership: str, items: list[Item],
                    confidential_reason: str | None = None, trace: EntryTrace | None = None
                    ) -> tuple[list[str], int, int]:
        """Pseudonymise and (re)index; returns the encrypted pseudonyms, rows indexed and subjects withdrawn.

        The index changes in the transaction that logs the batch (``index.enrolment``, counts only): 503 with
        nothing changed when the log cannot be written (see :mod:`gateway.enrolment.audited`)."""
        batch = await asyncio.to_thread(self.prepare_enrolment, principal, partnership, items, confidential_reason)
        try:
            await write_logged(self.writer, self.sessions, batch, trace)
        except Exception:  # nothing enrolled (503, 409, 500): the pseudonyms made are not given out either
            try:
                await asyncio.to_thread(self.quota.give_back, principal.subject, len(items), batch.quota_day)
            except Exception as failure:  # the refusal is what the partner must see, not this
                log.error("pseudonym_quota_not_given_back", error_type=type(failure).__name__)
            raise
        return batch.answer, len(batch.rows), len(batch.gone)

    def prepare_enrolment(self, principal: Principal, partnership: str, items: list[Item],
                          confidential_reason: str | None = None) -> PseudonymBatch:
        """The batch ``enrol`` writes: every check and every pseudonym computed, nothing written.

        ``confidential_reason``: the code the participant refuses with about a subject it keeps confidential
        (``CONFIDENTIAL`` when it gives none), kept with each such subject's entry.

        A subject sent more than once (a participant with two references for one person enrols per
        reference) gets one entry with what all its items say: every record type and category, confidential
        or a minor if any item says so, and removed only if no item lists records. The last item alone would
        drop the others' categories, and a confidential item followed by a plain one would let the index
        answer ``hit`` where the participant refuses."""
        organisation = self._participant(principal, partnership)
        ensure_refusal_code_names_no_one(confidential_reason)
        self._known_categories(items)
        ensure_record_types_name_no_one(items)
        transcryptor = self.transcryptor
        decoded = self._decode(items, transcryptor)
        now = self.clock.now()
        held: dict[str, _Holding] = {}
        gone: set[str] = set()
        answer = []
        with self.quota.counted(principal.subject, len(items)) as quota_day:  # given back when an item is refused
            for position, (item, polymorphic) in enumerate(decoded):
                with _refused_as_unprocessable(position):  # one step gives both: 3 multiplications, not 4
                    own, shared, plain = transcryptor.enrolment_pseudonyms(polymorphic, item.identifier_type,
                                                                           partnership, organisation)
                answer.append(own.encode())
                key = shared.encode()
                if item.record_types:
                    held.setdefault(key, _Holding(shared.key_version, transcryptor.index_tag(
                        plain.encode(), plain.key_version, partnership, organisation))).add(item)
                else:
                    gone.add(key)
        gone -= held.keys()
        rows = [{"partnership": partnership, "organisation": organisation, "pseudonym": key,
                 "key_version": holding.key_version, "own_tag": holding.own_tag,
                 "record_types": sorted(holding.record_types),
                 "categories": sorted(holding.categories), "updated_at": now, "confidential": holding.confidential,
                 "minor": holding.minor,
                 "confidential_reason": (confidential_reason or CONFIDENTIAL) if holding.confidential else None}
                for key, holding in sorted(held.items())]
        return PseudonymBatch(partnership=partnership, organisation=organisation, system=principal.subject,
                              subjects=len(items), rows=rows, gone=sorted(gone), answer=answer, quota_day=quota_day)

    # -- the exchange's translations ---------------------------------------------------------------
    def _decode_own(self, text: str) -> Pseudonym:
        try:
            return Pseudonym.decode(text)
        except (InvalidPseudonym, ValueError) as exc:
            raise Unprocessable("a subject is not a pseudonym of yours") from exc

    def to_holder(self, subject: str, partnership: str, requester: str, holder: str, *,
                  transcryptor: Transcryptor | None = None) -> str:
        own = self._decode_own(subject)
        transcryptor = transcryptor or self.transcryptor
        with _not_yours():
            return transcryptor.translate(own, partnership, requester, holder).encode()

    def to_holder_all(self, subject: str, partnership: str, requester: str, holder: str) -> list[str]:
        """The holder's pseudonyms of the requester's ``subject`` under every key version the ring holds, the
        current one first, then the older ones, newest first.

        Why: a holder learns its pseudonyms of a new key version only when it enrols again, and the gateway moves
        the index at a rotation without anyone enrolling (``wgs-gateway pseudonyms rotate``). Asked only by the
        current version, a holder that had not enrolled again yet recognised none of its subjects and answered
        nothing, while the index answered ``hit``. Each version is the holder's own domain: it learns no one
        else's pseudonym, only which of its own old and new ones are one subject (what enrolling again tells it
        anyway)."""
        own = self._decode_own(subject)
        transcryptor = self.transcryptor
        versions = sorted(transcryptor.keys.versions, key=lambda v: (v != transcryptor.keys.current, -v))
        with _not_yours():
            return [transcryptor.convert(own, Domain(partnership, requester), Domain(partnership, holder),
                                         target_version=version).encode() for version in versions]

    def to_partnership(self, subject: str, partnership: str, participant: str, *,
                       transcryptor: Transcryptor | None = None) -> str:
        own = self._decode_own(subject)
        transcryptor = transcryptor or self.transcryptor
        with _not_yours():
            return transcryptor.to_partnership(own, partnership, participant).encode()

    def related_for_requester(self, values: set[str], partnership: str, holder: str,
                              requester: str) -> dict[str, str | None]:
        """Pseudonyms of related subjects inside a holder's records (e.g. a company's director) → the
        requester's pseudonyms. Translated only when the holder enrolled that subject (so the holder cannot
        use the gateway as a translation oracle for arbitrary points); anything else becomes None.

        Enrolled is looked up by the holder's own pseudonym first (stored with the enrolment: no multiplication),
        then, for what that does not find, by the partnership pseudonym (one each, as before 0042): the answer is
        the same either way, and a subject enrolled since costs one multiplication (the translation), not two."""
        transcryptor = self.transcryptor  # one ring for the look-ups and the translation
        decoded = {value: pseudonym for value in values if (pseudonym := _decoded(value)) is not None}
        translated: dict[str, str | None] = dict.fromkeys(values)
        if not decoded:
            return translated
        with self.sessions.kw["bind"].connect() as connection:
            enrolled = self._own_enrolled(connection, decoded, partnership, holder, transcryptor)
            enrolled |= self._enrolled_by_partnership_pseudonym(
                connection, {v: p for v, p in decoded.items() if v not in enrolled}, partnership, holder, transcryptor)
        for value in sorted(enrolled):
            with _not_yours():
                translated[value] = transcryptor.translate(decoded[value], partnership, holder, requester).encode()
        return translated

    @staticmethod
    def _own_enrolled(connection: Connection, decoded: dict[str, Pseudonym], partnership: str, holder: str,
                      transcryptor: Transcryptor) -> set[str]:
        """Which of the values are the holder's own pseudonyms of subjects it enrolled under the current key
        version, found by their index tags (``Transcryptor.index_tag``: an HMAC, no multiplication). A row's own
        pseudonym is the same subject as its partnership pseudonym, so whatever this finds the partnership-domain
        look-up would find too."""
        version = transcryptor.keys.current
        tags = {transcryptor.index_tag(value, version, partnership, holder): value
                for value, pseudonym in decoded.items() if pseudonym.key_version == version}
        if not tags:
            return set()
        return {tags[tag] for chunk in _chunked(sorted(tags)) for tag in connection.execute(_OWN_ENROLLED_AMONG, {
            "partnership": partnership, "organisation": holder, "key_version": version, "tags": chunk}).scalars()}

    @staticmethod
    def _enrolled_by_partnership_pseudonym(connection: Connection, decoded: dict[str, Pseudonym], partnership: str,
                                           holder: str, transcryptor: Transcryptor) -> set[str]:
        """Which of the values the holder enrolled, found by their partnership pseudonyms (one multiplication
        each): those the own-pseudonym look-up cannot find — rows written before migration 0042 (no own
        pseudonym) and values of an older key version. A value that does not convert (a key version the ring
        does not hold) is not translated."""
        candidates: dict[str, str] = {}
        for value, pseudonym in decoded.items():
            with contextlib.suppress(Unprocessable), _not_yours():  # the holder's garbage is not translated
                candidates[value] = transcryptor.to_partnership(pseudonym, partnership, holder).encode()
        if not candidates:
            return set()
        enrolled = {shared for chunk in _chunked(sorted(set(candidates.values()))) for shared in connection.execute(
            _ENROLLED_AMONG, {"partnership": partnership, "organisation": holder, "pseudonyms": chunk}).scalars()}
        return {value for value, shared in candidates.items() if shared in enrolled}

    def holders_of(self, partnership: str, shared: list[str]) -> dict[str, IndexHolding]:
        """Per organisation that enrolled any of these subjects (partnership-domain pseudonyms): the
        categories of its records on them and its grounds to refuse. The index answers hit/no-hit without
        asking anyone. A participant's grounds hold whatever categories are asked, as the holder's own."""
        categories: dict[str, set[str]] = {}
        reasons: dict[str, set[str]] = {}
        minors: set[str] = set()
        with self.sessions.kw["bind"].connect() as connection:
            for row in connection.execute(_HOLDINGS_OF, {"partnership": partnership, "pseudonyms": shared}):
                categories.setdefault(row.organisation, set()).update(row.categories)
                if row.confidential:
                    reasons.setdefault(row.organisation, set()).add(row.confidential_reason or CONFIDENTIAL)
                if row.minor:
                    minors.add(row.organisation)
        return {organisation: IndexHolding(categories=frozenset(held),
                                           confidential_reason=min(reasons.get(organisation, set()),
                                                                   default=None),
                                           minor=organisation in minors)
                for organisation, held in categories.items()}
