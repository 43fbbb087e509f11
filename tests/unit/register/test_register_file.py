"""The shipped register follows REGISTER.md, and bad register files are refused with line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import InvalidRegister
from gateway.register.loader import load_register, parse_register
from gateway.register.model import Register, Status
from gateway.settings import SHIPPED_REGISTER

TEXT = SHIPPED_REGISTER.read_text()


@pytest.fixture(scope="module")
def register() -> Register:
    return load_register(SHIPPED_REGISTER)[0]


def test_shipped_register_has_the_four_partnerships_with_nsoc_retired(register: Register) -> None:
    assert set(register.partnerships) == {"riec-amsterdam-amstelland", "zvh-amsterdam", "fec", "nsoc"}
    assert register.partnerships["nsoc"].status is Status.RETIRED
    assert all(p.status is Status.ACTIVE for k, p in register.partnerships.items() if k != "nsoc")


def test_shipped_register_encodes_the_reference_facts(register: Register) -> None:
    riec = register.partnerships["riec-amsterdam-amstelland"]
    bibob = riec.purposes["bibob-integrity-check"]
    assert bibob.requesters == ["municipality"]
    assert "directorships" in bibob.supplies["registry"]
    assert "income" not in bibob.supplies["tax"]
    assert bibob.hit_only_holders == ["investigation"]
    assert [p for p in register.partnerships.values() for k, purpose in p.purposes.items()
            if purpose.minors_allowed] == [register.partnerships["zvh-amsterdam"]]
    assert register.categories["criminal_intelligence"].never_shared
    fec = register.partnerships["fec"]
    for purpose in fec.purposes.values():
        assert set(purpose.receives.get("bank", [])) <= {"ongoing_investigation"}
    assert "income" not in riec.purposes["unexplained-wealth"].receives["municipality"]


def _refused(text: str) -> InvalidRegister:
    with pytest.raises(InvalidRegister) as refused:
        parse_register(text, "register.yaml")
    return refused.value


def _line_of(needle: str, text: str = TEXT) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("old", "new", "needle", "reason"), [
    ("  gemeente-amsterdam:\n    name: Gemeente Amsterdam\n    sector: public",
     "  gemeente-amsterdam:\n    name: Gemeente Amsterdam\n    sectr: public", "sectr: public", "Extra inputs"),
    ("          registry: [identity, address, company_registration, directorships]\n",
     "          registry: [identity, adress, company_registration, directorships]\n", "[identity, adress",
     "unknown category `adress`"),
    ("        requesters: [municipality]\n", "        requesters: [notary]\n", "requesters: [notary]",
     "no participant has role `notary`"),
    ("          police: [police_incidents]\n          prosecution: [convictions]\n",
     "          police: [police_incidents, criminal_intelligence]\n          prosecution: [convictions]\n",
     "police: [police_incidents, criminal_intelligence]", "never shared"),
    ("{organisation: politie, role: police, systems: [politie-bvh]}\n      - {organisation: om-amsterdam",
     "{organisation: politie, role: police, systems: [kvk-handelsregister]}\n      - {organisation: om-amsterdam",
     "systems: [kvk-handelsregister]}", "does not act for `politie`"),
    ("    retired: 2024-12-31\n", "", "status: retired", "needs a `retired` date"),
    ("        retention: {months: 12, counted_from: disclosure}\n        bulk_threshold: 25\n        "
     "daily_limit_per_system: 200\n\n  fec:",
     "        retention: {months: many, counted_from: disclosure}\n        bulk_threshold: 25\n        "
     "daily_limit_per_system: 200\n\n  fec:", "months: many", "valid integer"),
    # Office hours rule 7 could not apply: refused when loaded, not a 500 at the first request that reads them.
    ("timezone: Europe/Amsterdam,", "timezone: Europe/Amsterdan,", "Europe/Amsterdan", "unknown time zone"),
    ('start: "07:00", end: "19:00"', 'start: "99:99", end: "19:00"', '"99:99"', "should match pattern"),
    ('start: "07:00", end: "19:00"', 'start: "19:00", end: "07:00"', 'start: "19:00"', "start before they end"),
    ("weekdays: [1, 2, 3, 4, 5]", "weekdays: [1, 2, 9]", "weekdays: [1, 2, 9]", "less than or equal to 7"),
    # Who a participant is must not depend on which of two entries is read.
    ("      - {organisation: kvk, role: registry, systems: [kvk-handelsregister]}\n",
     "      - {organisation: kvk, role: registry, systems: [kvk-handelsregister]}\n"
     "      - {organisation: kvk, role: tax, systems: [kvk-handelsregister], status: retired}\n",
     "role: tax, systems: [kvk-handelsregister]", "`kvk` is a participant already"),
    # Ids no request could name.
    ("\n  fec:\n", "\n  FEC centre:\n", "FEC centre:", "no valid id"),
    # A partner system id no token could carry (client ids are slugs): a case or whitespace variant of a
    # system would be a second id for it that nothing can use.
    ("    sector: public\n    systems: []\n  zvh-aa:", "    sector: public\n    systems: [Politie-BVH]\n  zvh-aa:",
     "systems: [Politie-BVH]", "no valid id"),
    # A partnership cannot be retired before it was established (its dates would overlap nothing).
    ("    established: 2019-01-01\n    retired: 2024-12-31\n", "    established: 2025-06-01\n    retired: 2024-12-31\n",
     "retired: 2024-12-31", "retired before it was established"),
    # What the partnership never discloses cannot be configured as supplied or received in it (rule 4): the
    # register would contradict itself, as with a category never shared anywhere.
    ("          municipality: [identity, address, company_registration, directorships, tax_debts, tax_compliance,",
     "          municipality: [bank_accounts, identity, address, company_registration, directorships, tax_debts, "
     "tax_compliance,", "municipality: [bank_accounts, identity", "never discloses `bank_accounts`"),
    # A list of ids names each id once (as a mapping names each key once: duplicate keys are refused).
    ("        requesters: [municipality]\n", "        requesters: [municipality, municipality]\n",
     "requesters: [municipality, municipality]", "`municipality` is listed twice"),
    ("registry: [identity, address, company_registration, directorships]",
     "registry: [identity, address, company_registration, directorships, address]",
     "directorships, address]", "`address` is listed twice"),
    ("never_disclosed: [criminal_intelligence, bank_accounts]",
     "never_disclosed: [criminal_intelligence, bank_accounts, criminal_intelligence]",
     "bank_accounts, criminal_intelligence]", "`criminal_intelligence` is listed twice"),
    ("hit_only_holders: [investigation]", "hit_only_holders: [investigation, investigation]",
     "hit_only_holders: [investigation, investigation]", "`investigation` is listed twice"),
    ("{organisation: politie, role: police, systems: [politie-bvh]}\n      - {organisation: om-amsterdam",
     "{organisation: politie, role: police, systems: [politie-bvh, politie-bvh]}\n      - {organisation: om-amsterdam",
     "systems: [politie-bvh, politie-bvh]", "`politie-bvh` is listed twice"),
    ("deciders: [riec-aa, landelijk-steunpunt], min_deciders: 1}", "deciders: [riec-aa, riec-aa], min_deciders: 1}",
     "deciders: [riec-aa, riec-aa]", "`riec-aa` is listed twice"),
    ("weekdays: [1, 2, 3, 4, 5]", "weekdays: [1, 2, 3, 4, 5, 1]", "weekdays: [1, 2, 3, 4, 5, 1]",
     "`1` is listed twice"),
])
def test_bad_register_is_refused_with_line_and_reason(old: str, new: str, needle: str, reason: str) -> None:
    assert old in TEXT
    bad = TEXT.replace(old, new, 1)
    error = _refused(bad)
    assert reason in error.detail
    lines = {p["line"] for p in error.extra["problems"]}
    assert _line_of(needle, bad) in lines, (error.detail, lines)


def test_duplicate_key_is_refused_with_its_line() -> None:
    bad = TEXT.replace("  address: {description: \"Registered address\"}\n",
                       "  address: {description: \"Registered address\"}\n  address: {description: \"again\"}\n", 1)
    error = _refused(bad)
    assert "duplicate key `address`" in error.detail
    assert error.extra["problems"][0]["line"] == _line_of('address: {description: "again"}', bad)


def test_yaml_syntax_error_names_the_line() -> None:
    bad = TEXT.replace("  identity: {description:", "  identity: {description: [unclosed", 1)
    error = _refused(bad)
    assert "YAML syntax error" in error.detail
    assert error.detail.startswith("register.yaml:")


def test_missing_field_points_at_its_parent() -> None:
    bad = TEXT.replace("        legal_basis: WGS (ZVH)\n", "", 1)
    error = _refused(bad)
    assert "Field required" in error.detail
    assert "youth-prevention" in error.detail


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRegister, match="cannot read"):
        load_register(tmp_path / "missing.yaml")


def test_a_file_not_in_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    """A register saved as Latin-1 (an editor's default on some desks) ended the loader in a
    UnicodeDecodeError traceback, at `register check` and at the start alike."""
    path = tmp_path / "register.yaml"
    bad = TEXT.replace("name: Gemeente Amsterdam", "name: Gemeente Amsterdam (café)", 1)
    path.write_bytes(bad.encode("latin-1"))
    with pytest.raises(InvalidRegister) as refused:
        load_register(path)
    line = _line_of("name: Gemeente Amsterdam (caf", bad)
    assert refused.value.detail.startswith(f"{path}:{line}:"), refused.value.detail
    assert "not UTF-8" in refused.value.detail
    assert refused.value.extra["problems"][0]["line"] == line


def test_a_control_character_is_refused_with_its_line() -> None:
    """PyYAML refuses control characters with a ReaderError, which is no MarkedYAMLError: it passed the
    loader's syntax-error handling as a traceback."""
    bad = TEXT.replace("name: Gemeente Amsterdam", "name: Gemeente\x01Amsterdam", 1)
    error = _refused(bad)
    assert error.detail.startswith(f"register.yaml:{_line_of('name: Gemeente', bad)}:"), error.detail
    assert "#x0001" in error.detail


def test_a_recursive_alias_is_refused_with_its_line() -> None:
    """An anchor aliased inside itself composes into a document without end; walking it to index the lines
    ended the loader in a RecursionError."""
    bad = TEXT.replace("never_disclosed: [criminal_intelligence, bank_accounts]",
                       "never_disclosed: &loop [criminal_intelligence, *loop]", 1)
    assert bad != TEXT
    error = _refused(bad)
    assert "recursive anchor" in error.detail
    assert error.extra["problems"][0]["line"] == _line_of("never_disclosed: &loop", bad)


@pytest.mark.parametrize(("new", "reason"), [
    ('legal_basis: " "\n', "the legal basis is blank"),
    ("legal_basis: >\n          WGS (ZVH)\n", "begins or ends with whitespace"),
    ('legal_basis: "' + "WGS (ZVH) with the municipality's covenant " * 5 + 'x"\n', "a request states at most 200"),
], ids=["blank", "folded-with-a-newline", "longer-than-a-request"])
def test_a_legal_basis_no_request_can_state_is_refused(new: str, reason: str) -> None:
    """The policy denies every request whose legal basis is not exactly the purpose's; each of these passed the
    loader and made the purpose one no request could use (a blank one: a purpose without a legal basis)."""
    old = "        legal_basis: WGS (ZVH)\n"
    assert old in TEXT
    bad = TEXT.replace(old, "        " + new, 1)
    error = _refused(bad)
    assert reason in error.detail
    assert error.extra["problems"][0]["path"] == "partnerships.zvh-amsterdam.purposes.youth-prevention.legal_basis"
    assert error.extra["problems"][0]["line"] == _line_of("legal_basis: ", bad[bad.index("zvh-amsterdam:"):]) \
        + bad[:bad.index("zvh-amsterdam:")].count("\n")
