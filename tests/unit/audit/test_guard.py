"""The personal-data guard refuses obvious identifiers and leaves ordinary audit content alone."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.canonical import event_canonical
from audit.errors import PersonalDataError
from audit.events import Requester
from audit.guard import ensure_no_personal_data, find_personal_data, passes_eleven_test, passes_iban_check
from tests.audit_support import make_event

VALID_BSN = "111222333"  # passes the eleven-test (a well-known test number)
VALID_IBAN = "NL91ABNA0417164300"


def test_checksums() -> None:
    assert passes_eleven_test(VALID_BSN)
    assert not passes_eleven_test("111222334")
    assert not passes_eleven_test("000000000")
    assert passes_iban_check(VALID_IBAN)
    assert passes_iban_check("NL91 ABNA 0417 1643 00")
    assert not passes_iban_check("NL92ABNA0417164300")


@pytest.mark.parametrize(("overrides", "path", "kind"), [
    pytest.param({"reasons": (f"subject {VALID_BSN} matched",)}, "reasons[0]", "bsn", id="bsn in a reason"),
    pytest.param({"extra": {"note": "bsn 1112.22.333"}}, "extra.note", "bsn", id="grouped bsn"),
    pytest.param({"extra": {"n": int(VALID_BSN)}}, "extra.n", "bsn", id="bsn as integer"),
    pytest.param({"exchange_id": VALID_IBAN}, "exchange_id", "iban", id="iban"),
    pytest.param({"extra": {"account": "NL91 ABNA 0417 1643 00 AND MORE"}}, "extra.account", "iban",
                 id="grouped iban followed by text"),
    pytest.param({"requester": Requester(org="gemeente-x", user="jan.jansen@example.nl")}, "requester.user",
                 "email", id="e-mail as user"),
    pytest.param({"obligations": {"notify": {"to": "fg@gemeente.example"}}}, "obligations.notify.to", "email",
                 id="nested e-mail"),
    pytest.param({"extra": {VALID_BSN: True}}, "extra.<key> (key)", "bsn", id="bsn as a key"),
])
def test_obvious_personal_data_is_refused_without_echoing_it(overrides: dict[str, Any], path: str,
                                                             kind: str) -> None:
    event = make_event(**overrides)
    with pytest.raises(PersonalDataError) as caught:
        ensure_no_personal_data(event)
    assert (caught.value.path, caught.value.kind) == (path, kind)
    assert VALID_BSN not in str(caught.value)
    assert "@" not in str(caught.value)
    assert "ABNA" not in str(caught.value)


@pytest.mark.parametrize("written", [
    pytest.param("111-222-333", id="dashes 3-3-3"),
    pytest.param("111.222.333", id="dots 3-3-3"),
    pytest.param("111 222 333", id="spaces 3-3-3"),
    pytest.param("1112-22-333", id="dashes 4-2-3"),
    pytest.param("1112.22.333", id="dots 4-2-3"),
    pytest.param("111\u2013222\u2013333", id="en dashes"),
    pytest.param("111\u00a0222\u00a0333", id="no-break spaces"),
    pytest.param("\uff11\uff11\uff11\uff12\uff12\uff12\uff13\uff13\uff13", id="fullwidth digits"),
    pytest.param("\uff11\uff11\uff11\uff12\uff0e\uff12\uff12\uff0e\uff13\uff13\uff13",
                 id="fullwidth digits and dots"),
    pytest.param("\u0661\u0661\u0661-\u0662\u0662\u0662-\u0663\u0663\u0663", id="arabic-indic digits"),
    pytest.param("\u0967\u0967\u0967\u0968\u0968\u0968\u0969\u0969\u0969", id="devanagari digits"),
])
def test_a_bsn_with_separators_or_in_other_digits_is_refused(written: str) -> None:
    """The same number as 111222333, written as people and forms write it: refused on the screened path (the
    canonical JSON given) and on the field walk alike, without echoing it. (A key must be printable ASCII: the
    event refuses any other itself.)"""
    events = [make_event(extra={"note": f"subject {written} matched"})]
    if written.isascii():
        events.append(make_event(extra={written: True}))
    for event, canonical in [(each, screened) for each in events for screened in (event_canonical(each), None)]:
        with pytest.raises(PersonalDataError) as caught:
            ensure_no_personal_data(event, canonical)
        assert caught.value.kind == "bsn"
        assert written not in str(caught.value)


@pytest.mark.parametrize(("written", "kind"), [
    pytest.param("jan\uff20example.nl", "email", id="fullwidth at sign"),
    pytest.param("\uff2e\uff2c\uff19\uff11\uff21\uff22\uff2e\uff21\uff10\uff14\uff11\uff17\uff11\uff16"
                 "\uff14\uff13\uff10\uff10", "iban", id="fullwidth iban"),
])
def test_other_identifiers_in_fullwidth_forms_are_refused(written: str, kind: str) -> None:
    event = make_event(extra={"note": written})
    for canonical in (event_canonical(event), None):
        with pytest.raises(PersonalDataError) as caught:
            ensure_no_personal_data(event, canonical)
        assert caught.value.kind == kind


@pytest.mark.parametrize("harmless", [
    "RIEC-2026-0042",          # a case reference with dashes
    "RIEC-2026-0042-17",
    "zaak 2026-001-042",       # ten digits in groups
    "111-222-334",             # grouped, fails the eleven-test
    "1112-223-33",             # nine digits, but not grouped as a BSN is
    "\uff11\uff11\uff11\uff12\uff12\uff12\uff13\uff13",  # eight fullwidth digits
    "2026-12-05T06:18:25.123456Z",
    "ex-2026-11-25-0001-ná",   # not ASCII, nothing shaped like an identifier
])
def test_ordinary_values_with_separators_or_other_characters_pass(harmless: str) -> None:
    event = make_event(extra={"value": harmless})
    ensure_no_personal_data(event, event_canonical(event))
    ensure_no_personal_data(event)


@pytest.mark.parametrize(("field", "kinds"), [
    pytest.param("1-" * 15_000, [], id="digits and dashes"),
    pytest.param("1" * 30_000, [], id="one run of digits"),
    pytest.param("1112 " * 6_000, [], id="groups of four"),
    pytest.param("\uff11." * 15_000, [], id="fullwidth digits and dots"),
    pytest.param("a" * 30_000, [], id="local-part run without an at sign"),
    pytest.param("NL91 " * 6_000, [], id="iban starts"),
    pytest.param("1-" * 14_990 + " 111-222-333", ["bsn"], id="a bsn at the end of a long field"),
    pytest.param("\uff21" * 29_990 + "\uff20example.nl", ["email"], id="fullwidth address at the end"),
])
def test_a_30000_character_field_gets_its_verdict(field: str, kinds: list[str]) -> None:
    """Every pattern is fixed-width or starts only where a run starts (the e-mail one), and normalising is one
    pass: a field of 30,000 characters, far beyond what an event field holds, is answered (a quadratic pattern
    here kept the writer's callers waiting for seconds)."""
    assert [finding.kind for finding in find_personal_data({"v": field})] == kinds


@pytest.mark.parametrize("harmless", [
    "111222334",               # nine digits, fails the eleven-test
    "ex-2026-11-25-0001",      # reference numbers
    "12345678",                # eight digits
    "1234567890",              # ten digits
    "NL92ABNA0417164300",      # IBAN shape, wrong check digits
    "policy 2026.11.1",
    "user at example dot nl",
])
def test_ordinary_values_pass(harmless: str) -> None:
    ensure_no_personal_data(make_event(extra={"value": harmless}))


def test_faker_nl_bsns_ibans_and_emails_are_all_caught() -> None:
    fake = Faker("nl_NL")
    fake.seed_instance(1)
    for _ in range(50):
        for value in (fake.ssn(), fake.iban(), fake.email()):
            assert find_personal_data({"v": value}), "a Faker identifier slipped through the guard"


PERSONAL = st.sampled_from([VALID_BSN, "1112.22.333", "1112 22 333", VALID_IBAN, "NL91 ABNA 0417 1643 00",
                             "jan@example.nl", "111222334", "NL92ABNA0417164300", "ab12", "111-222-333",
                             "111.222.333", "1112-22-333", "111-222-334", "RIEC-2026-0042",
                             "\uff11\uff11\uff11\uff12\uff12\uff12\uff13\uff13\uff13"])
CONTEXT = st.text(max_size=6)


@settings(max_examples=400, deadline=None)
@given(before=CONTEXT, value=PERSONAL, after=CONTEXT, as_key=st.booleans())
def test_the_fast_screen_over_canonical_json_never_misses_what_the_field_walk_finds(
        before: str, value: str, after: str, as_key: bool) -> None:
    text = before + value + after
    event = make_event(extra={text[:100] if text.isascii() and text.isprintable() and text else "k": 1}
                       if as_key else {"v": text})
    walk_finds = bool(find_personal_data(event.to_document()))
    try:
        ensure_no_personal_data(event, event_canonical(event))
    except PersonalDataError:
        assert walk_finds
    else:
        assert not walk_finds


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), st.binary(min_size=4))
def test_hex_ids_hashes_and_pseudonyms_never_trigger(trace: bytes, span: bytes, payload: bytes) -> None:
    digest = hashlib.sha256(payload).hexdigest()
    event = make_event(trace_id=trace.hex() if any(trace) else "1" * 32,
                       span_id=span.hex() if any(span) else "1" * 16,
                       payload_sha256=digest, data_subject={"pseudonym": digest + ":" + trace.hex()})
    ensure_no_personal_data(event)
