"""Related subjects a holder names in its records are found by the holder's own pseudonym, stored with each
enrolment (``enrolments.own_tag``, migration 0042), one elliptic-curve multiplication cheaper than by
converting each into the partnership domain — and the answer is the same for every input as by that conversion
(:func:`_by_partnership_domain`, the look-up as it was before): enrolled subjects, rows without an own pseudonym
(written before 0042), values of an older key version after a rotation, another participant's subjects, subjects
nobody enrolled and texts that are no pseudonym. Real SQLite and PostgreSQL, the real enrolment write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.orm import Session

from audit import AuditLog, EventType
from audit.tables import audit_entries
from gateway.auth.principal import Principal
from gateway.client.pseudonyms import PseudonymClient
from gateway.clock import FixedClock
from gateway.db.engine import make_engine, make_session_factory
from gateway.enrolment.rekey import Key, rekey_index, untagged_rows
from gateway.enrolment.service import Item, PseudonymService, is_pseudonym
from gateway.enrolment.tables import enrolments
from gateway.pseudonyms.errors import PseudonymError
from gateway.pseudonyms.keys import KeyRing, KeyVersion
from gateway.pseudonyms.pep import PolymorphicPseudonym, Pseudonym
from gateway.pseudonyms.transcryptor import Transcryptor
from gateway.register.loader import load_register
from gateway.register.model import Register
from gateway.settings import SHIPPED_REGISTER
from tests.audit_support import log_signer

RIEC = "riec-amsterdam-amstelland"
HOLDER, OTHER, REQUESTER = "kvk", "politie", "gemeente-amsterdam"
SYSTEMS = {HOLDER: "kvk-handelsregister", OTHER: "politie-bvh"}
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
ENROLLED, OLD_ROW, OTHERS, NOBODYS = ("11111111", "22222222"), "33333333", "44444444", "55555555"


class CountingTranscryptor(Transcryptor):
    """The real transcryptor, counting the multiplications a related-subject translation makes: into the
    partnership domain (the look-up by partnership pseudonym) and into the requester's domain."""

    def __init__(self, keys: KeyRing) -> None:
        super().__init__(keys)
        self.to_partnership_calls = 0
        self.translate_calls = 0

    def to_partnership(self, pseudonym: Pseudonym, partnership: str, participant: str) -> Pseudonym:
        self.to_partnership_calls += 1
        return super().to_partnership(pseudonym, partnership, participant)

    def translate(self, pseudonym: Pseudonym, partnership: str, source_participant: str,
                  target_participant: str) -> Pseudonym:
        self.translate_calls += 1
        return super().translate(pseudonym, partnership, source_participant, target_participant)


@dataclass
class Gateway:
    """A pseudonym service on a migrated database, a key ring it can be rotated to, and the KvK's subjects."""

    engine: Engine
    register: Register
    ring: KeyRing
    transcryptor: CountingTranscryptor = field(init=False)

    def __post_init__(self) -> None:
        self.transcryptor = CountingTranscryptor(self.ring)

    def service(self) -> PseudonymService:
        return PseudonymService(sessions=make_session_factory(self.engine), clock=FixedClock(NOW),
                                register=self.register, transcryptor=self.transcryptor)

    def polymorphic(self, number: str) -> str:
        return PseudonymClient(self.transcryptor.public_key()).polymorphic("kvk", number)

    def enrol(self, organisation: str, *numbers: str) -> None:
        """``numbers`` enrolled by ``organisation`` as the gateway writes an enrolment (audit entry aside)."""
        principal = Principal(kind="system", subject=SYSTEMS[organisation], organisation=organisation,
                              scopes=frozenset({"enrol"}))
        items = [Item("kvk", self.polymorphic(n), ("trade-name",), ("company_registration",)) for n in numbers]
        batch = self.service().prepare_enrolment(principal, RIEC, items)
        with self.engine.begin() as connection:
            batch.apply(connection)

    def own(self, number: str, organisation: str = HOLDER) -> str:
        """``organisation``'s own pseudonym of the company ``number``, as it holds it (current key version)."""
        return self.transcryptor.participant_pseudonym(PolymorphicPseudonym.decode(self.polymorphic(number)), "kvk",
                                                       RIEC, organisation).encode()

    def tag(self, own: str, organisation: str = HOLDER) -> str:
        """The index's tag of ``organisation``'s own pseudonym ``own`` (what ``enrolments.own_tag`` keeps)."""
        return self.transcryptor.index_tag(own, Pseudonym.decode(own).key_version, RIEC, organisation)

    def set_own_pseudonym(self, number: str, value: str | None) -> None:
        """Overwrite the stored own-pseudonym tag of the KvK's row of ``number`` with the tag of ``value``."""
        shared = self.transcryptor.partnership_pseudonym(PolymorphicPseudonym.decode(self.polymorphic(number)),
                                                         "kvk", RIEC).encode()
        with self.engine.begin() as connection:
            done = connection.execute(update(enrolments).where(
                enrolments.c.organisation == HOLDER, enrolments.c.pseudonym == shared).values(
                own_tag=None if value is None else self.tag(value)))
        assert done.rowcount == 1

    def new_key_version(self) -> None:
        """A new current key version, the index not moved yet (a rotation interrupted before its first batch)."""
        self.ring = self.ring.with_version(KeyVersion.generate(max(self.ring.versions) + 1, NOW))
        self.transcryptor = CountingTranscryptor(self.ring)

    def rotate(self) -> None:
        """``wgs-gateway pseudonyms rotate``: a new current key version, and the index moved to it."""
        self.new_key_version()
        rekey_index(make_session_factory(self.engine), self.ring, AuditLog(self.engine, log_signer()),
                    command="rotate")

    def untagged(self) -> int:
        with self.engine.connect() as connection:
            return untagged_rows(connection, self.ring.current)


@pytest.fixture
def gateway(db_url: str) -> Iterator[Gateway]:
    engine = make_engine(db_url)
    made = Gateway(engine, load_register(SHIPPED_REGISTER)[0], KeyRing({1: KeyVersion.generate(1, NOW)}, 1))
    made.enrol(HOLDER, *ENROLLED, OLD_ROW)
    made.enrol(OTHER, OTHERS)
    made.set_own_pseudonym(OLD_ROW, None)  # as a row written before migration 0042 is
    try:
        yield made
    finally:
        engine.dispose()


def _by_partnership_domain(gateway: Gateway, values: set[str]) -> dict[str, str | None]:
    """The answer as the look-up by partnership pseudonym gives it (the only one before 0042): a value is
    translated when it decodes, converts into the partnership domain, and the holder enrolled that."""
    transcryptor = Transcryptor(gateway.ring)
    with gateway.engine.connect() as connection:
        enrolled = set(connection.execute(select(enrolments.c.pseudonym).where(
            enrolments.c.partnership == RIEC, enrolments.c.organisation == HOLDER)).scalars())
    answer: dict[str, str | None] = dict.fromkeys(values)
    for value in values:
        if not is_pseudonym(value):
            continue
        pseudonym = Pseudonym.decode(value)
        try:
            shared = transcryptor.to_partnership(pseudonym, RIEC, HOLDER).encode()
        except PseudonymError:
            continue
        if shared in enrolled:
            answer[value] = transcryptor.translate(pseudonym, RIEC, HOLDER, REQUESTER).encode()
    return answer


def _related(gateway: Gateway, values: set[str]) -> dict[str, str | None]:
    return gateway.service().related_for_requester(values, RIEC, HOLDER, REQUESTER)


def _garbage(gateway: Gateway) -> set[str]:
    """Texts that are no pseudonym the gateway writes (each decodes to nothing), beside a real one's variants."""
    real = gateway.own(ENROLLED[0])
    kind, version, body = real.split(".")
    return {"plain text", real.upper(), f"{kind}.v0{version[1:]}.{body}", f"{real}=", f"{kind}.{version}.{body[:-2]}",
            f"bsn.{version}.{body}", f"{kind}.v99.{body}", ""}


def test_every_kind_of_value_gets_the_answer_the_partnership_domain_look_up_gives(gateway: Gateway) -> None:
    enrolled = {gateway.own(n) for n in ENROLLED}
    old_row, others = gateway.own(OLD_ROW), {gateway.own(OTHERS), gateway.own(OTHERS, OTHER)}
    values = enrolled | {old_row, gateway.own(NOBODYS)} | others | _garbage(gateway)
    answer = _related(gateway, values)
    assert answer == _by_partnership_domain(gateway, values)
    assert {value for value, mine in answer.items() if mine is not None} == enrolled | {old_row}
    assert answer[old_row] == gateway.transcryptor.translate(Pseudonym.decode(old_row), RIEC, HOLDER,
                                                             REQUESTER).encode()


def test_an_enrolled_subject_costs_one_multiplication_and_a_row_without_its_own_pseudonym_two(
        gateway: Gateway) -> None:
    """The point of the stored own pseudonym: a subject the holder enrolled since 0042 is translated only."""
    _related(gateway, {gateway.own(n) for n in ENROLLED})
    assert (gateway.transcryptor.to_partnership_calls, gateway.transcryptor.translate_calls) == (0, 2)
    _related(gateway, {gateway.own(OLD_ROW)})
    assert (gateway.transcryptor.to_partnership_calls, gateway.transcryptor.translate_calls) == (1, 3)


def test_the_stored_own_pseudonym_is_what_finds_a_subject(gateway: Gateway) -> None:
    """Shown by a row whose own pseudonym is deliberately another subject's: that subject, which the holder did
    not enrol, is then translated (only a look-up of the stored own pseudonym can find it), while the row's
    real subject is still found by its partnership pseudonym. Never the case with what the gateway writes."""
    wrong = gateway.own(NOBODYS)
    gateway.set_own_pseudonym(ENROLLED[0], wrong)
    answer = _related(gateway, {wrong, gateway.own(ENROLLED[0])})
    assert _by_partnership_domain(gateway, {wrong})[wrong] is None
    assert answer[wrong] == gateway.transcryptor.translate(Pseudonym.decode(wrong), RIEC, HOLDER,
                                                           REQUESTER).encode()
    assert answer[gateway.own(ENROLLED[0])] is not None


def test_another_participants_enrolled_subject_is_no_translation_for_the_holder(gateway: Gateway) -> None:
    """No translation oracle through the stored own pseudonyms: the police's own pseudonym of a subject it
    enrolled, named by the KvK, is translated for the police only; the KvK's pseudonym of that subject, which
    the KvK did not enrol, and of one nobody enrolled, are not translated either."""
    theirs, mine_unenrolled, nobodys = gateway.own(OTHERS, OTHER), gateway.own(OTHERS), gateway.own(NOBODYS)
    assert _related(gateway, {theirs, mine_unenrolled, nobodys}) == dict.fromkeys(
        {theirs, mine_unenrolled, nobodys})
    for_the_police = gateway.service().related_for_requester({theirs}, RIEC, OTHER, REQUESTER)
    assert for_the_police[theirs] is not None  # a real own pseudonym in the index: the refusal above is the rule
    with gateway.engine.connect() as connection:
        stored = set(connection.execute(select(enrolments.c.own_tag)).scalars())
    assert gateway.tag(theirs, OTHER) in stored
    assert theirs not in stored  # a keyed tag: the database alone links no participant's pseudonym to the index


def test_after_a_rotation_both_key_versions_get_the_same_answer_and_the_new_one_costs_one_multiplication(
        gateway: Gateway) -> None:
    """``pseudonyms rotate`` moves each row's own pseudonym to the new version (a row without one gets one): the
    holder's new pseudonyms are found by the stored own pseudonym, its old ones by the partnership domain as
    before, with the same translations."""
    before = {n: gateway.own(n) for n in (*ENROLLED, OLD_ROW, OTHERS, NOBODYS)}
    gateway.rotate()
    after = {n: gateway.own(n) for n in before}
    assert {Pseudonym.decode(value).key_version for value in after.values()} == {2}
    with gateway.engine.connect() as connection:
        stored = set(connection.execute(select(enrolments.c.own_tag).where(
            enrolments.c.organisation == HOLDER)).scalars())
    assert stored == {gateway.tag(after[n]) for n in (*ENROLLED, OLD_ROW)}

    values = set(before.values()) | set(after.values()) | _garbage(gateway)
    answer = _related(gateway, values)
    assert answer == _by_partnership_domain(gateway, values)
    for number in (*ENROLLED, OLD_ROW):
        assert answer[before[number]] == answer[after[number]] is not None
    assert answer[after[OTHERS]] is answer[after[NOBODYS]] is None

    counted = CountingTranscryptor(gateway.ring)
    gateway.transcryptor = counted
    _related(gateway, {after[n] for n in (*ENROLLED, OLD_ROW)})
    assert (counted.to_partnership_calls, counted.translate_calls) == (0, 3)


def test_rows_not_moved_to_the_current_key_version_yet_answer_as_by_the_partnership_domain(gateway: Gateway) -> None:
    """Rows (and their own pseudonyms) still under the old version after a new one became current: the
    partnership-domain look-up finds none of them (it converts into the current version), so neither does the
    look-up of the stored own pseudonyms — not by the old pseudonyms the rows still hold."""
    before = {n: gateway.own(n) for n in (*ENROLLED, OLD_ROW)}
    gateway.new_key_version()
    values = set(before.values()) | {gateway.own(n) for n in before}
    assert _related(gateway, values) == _by_partnership_domain(gateway, values) == dict.fromkeys(values)


def _rekeyed_entries(gateway: Gateway) -> list[dict[str, object]]:
    """The ``extra`` of the log's ``index.rekeyed`` entries, in order."""
    with gateway.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.event_type == EventType.INDEX_REKEYED.value).order_by(audit_entries.c.log_index))
        return [json.loads(canonical)["event"]["extra"] for canonical in rows.scalars()]


def test_rekey_gives_rows_from_before_0042_their_tag_and_then_they_cost_one_multiplication(gateway: Gateway) -> None:
    """``pseudonyms rekey`` with every row under the current version (nothing to move): the row enrolled before
    0042 gets its tag, audited as the partnership's ``index.rekeyed`` entry (counts only); the answer stays the
    same, and the subject is then translated only. A second run finds nothing to do."""
    old_row = gateway.own(OLD_ROW)
    before = _related(gateway, {old_row})
    assert gateway.untagged() == 1
    log = AuditLog(gateway.engine, log_signer())
    done = rekey_index(make_session_factory(gateway.engine), gateway.ring, log)
    assert (done.moved, done.superseded, done.tagged) == (0, 0, 1)
    assert gateway.untagged() == 0
    [entry] = _rekeyed_entries(gateway)
    assert entry == {"index": "pseudonyms", "channel": "cli", "command": "rekey", "from_versions": [1],
                     "key_version": 1, "moved": 0, "superseded": 0, "tagged": 1}
    counted = CountingTranscryptor(gateway.ring)
    gateway.transcryptor = counted
    assert _related(gateway, {old_row}) == before
    assert (counted.to_partnership_calls, counted.translate_calls) == (0, 1)
    again = rekey_index(make_session_factory(gateway.engine), gateway.ring, log)
    assert (again.moved, again.tagged) == (0, 0)
    assert len(_rekeyed_entries(gateway)) == 1


def test_a_row_enrolled_again_while_it_is_tagged_keeps_the_enrolment_and_no_entry_counts_it(
        gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder enrols the row's subject again between the batch's read and its write (the enrolment writes
    the tag itself): the batch writes nothing, since its entry would count a row it did not tag, and is planned
    again, finding nothing left. No ``index.rekeyed`` entry, and the row has the enrolment's tag."""
    from gateway.enrolment import rekey

    reading = rekey._untagged
    enrolled = [False]

    def enrolled_after_the_read(connection: Connection | Session, current: int, batch: int) -> list[Key]:
        rows = reading(connection, current, batch)
        if not enrolled[0]:
            enrolled[0] = True
            gateway.enrol(HOLDER, OLD_ROW)  # its own commit, on another connection
        return rows

    monkeypatch.setattr(rekey, "_untagged", enrolled_after_the_read)
    done = rekey_index(make_session_factory(gateway.engine), gateway.ring, AuditLog(gateway.engine, log_signer()))
    assert enrolled[0]
    assert done.tagged == 0
    assert _rekeyed_entries(gateway) == []
    assert gateway.untagged() == 0
    with gateway.engine.connect() as connection:
        tags = set(connection.execute(select(enrolments.c.own_tag).where(enrolments.c.organisation == HOLDER))
                   .scalars())
    assert gateway.tag(gateway.own(OLD_ROW)) in tags


def test_a_holder_answer_naming_more_related_subjects_than_one_statement_takes_is_answered(gateway: Gateway) -> None:
    """Found by a review: a holder's answer may hold up to ``MAX_ANSWER_VALUES`` (100,000) values, and every
    pseudonym-shaped one was looked up in the index in one statement — by its tag, then by its partnership
    pseudonym — with a parameter each. PostgreSQL takes at most 65,535 parameters a statement: an answer naming
    more related subjects than that (10,000 records of 7 directors each) failed whole, as the gateway's error.
    The look-ups go in chunks now; the answer is the one a small answer gets."""
    from gateway.pseudonyms.pep import Scalar

    kind = Pseudonym.decode(gateway.own(NOBODYS)).identifier_type
    many = {Pseudonym(kind, gateway.ring.current, Scalar.random().times_base()).encode() for _ in range(66_000)}
    enrolled = {gateway.own(n) for n in ENROLLED} | {gateway.own(OLD_ROW)}
    answer = _related(gateway, many | enrolled)
    assert {value for value, mine in answer.items() if mine is not None} == enrolled
