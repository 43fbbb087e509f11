"""The personal-data guard refuses obvious identifiers and leaves ordinary audit content alone."""

from __future__ import annotations

import hashlib

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
def test_obvious_personal_data_is_refused_without_echoing_it(overrides: dict[str, object], path: str,
                                                             kind: str) -> None:
    event = make_event(**overrides)
    with pytest.raises(PersonalDataError) as caught:
        ensure_no_personal_data(event)
    assert (caught.value.path, caught.value.kind) == (path, kind)
    assert VALID_BSN not in str(caught.value)
    assert "@" not in str(caught.value)
    assert "ABNA" not in str(caught.value)


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
                             "jan@example.nl", "111222334", "NL92ABNA0417164300", "ab12"])
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
