"""The operator's CLI: migrations, register check, partner-system clients, people's accounts, keys."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI, Request, Response
from joserfc.jwk import OKPKey
from typer.testing import CliRunner, Result

from gateway.cli import app
from gateway.settings import SHIPPED_REGISTER
from tests.audit_support import enrol_logged
from tests.logging_state import kept_logging

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from audit.review import EntryScope
    from escalation.cases import Case

runner = CliRunner()


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """See :mod:`tests.logging_state`."""
    with kept_logging():
        yield


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no wrapping of names
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    return tmp_path


def test_register_check_accepts_the_shipped_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    good = runner.invoke(app, ["register", "check", str(SHIPPED_REGISTER)])
    assert good.exit_code == 0
    assert "valid, version 2026.11.1" in good.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(SHIPPED_REGISTER.read_text().replace("legal_basis: WGS (ZVH)\n", "legal_basis: 42\n", 1))
    refused = runner.invoke(app, ["register", "check", str(bad)])
    assert refused.exit_code == 1
    assert "bad.yaml:" in refused.output


def test_register_check_refuses_police_records_to_a_bank_one_line_per_bank(tmp_path: Path) -> None:
    """A private participant gets police, tax and prosecution data as hit/no-hit only (REGISTER.md, FEC):
    a file giving the banks police records is refused, each bank in one line naming the purpose, the
    participant and the category, at the category's line."""
    text = SHIPPED_REGISTER.read_text()
    for old, new in (("police: [ongoing_investigation]", "police: [police_incidents]"),
                     ("bank: [ongoing_investigation]", "bank: [ongoing_investigation, police_incidents]"),
                     ("hit_only_holders: [investigation, police]", "hit_only_holders: [investigation]")):
        assert text.count(old) == 1
        text = text.replace(old, new)
    bad = tmp_path / "bank.yaml"
    bad.write_text(text)
    refused = runner.invoke(app, ["register", "check", str(bad)])
    assert refused.exit_code == 1
    line, column = next((n, row.index("police_incidents") + 1) for n, row in enumerate(text.splitlines(), 1)
                        if "bank: [ongoing_investigation, police" in row)
    lines = refused.stderr.strip().splitlines()
    assert [row.split(" private participant ")[0] for row in lines] == [
        f"{bad}:{line}:{column}: partnerships.fec.purposes.taskforce-subject-check.receives.bank.1"] * 2, lines
    for row, bank in zip(lines, ("abn-amro", "rabobank"), strict=True):
        assert f"private participant `{bank}` (role `bank`) would receive `police_incidents` from `police` as " \
               "records for `taskforce-subject-check`" in row


def test_register_check_refuses_a_system_named_like_the_token_audience(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the start refuses it (``load_register(audience=...)``): a file ``register check`` passes must not stop
    the gateway."""
    monkeypatch.delenv("WGS_AUDIENCE", raising=False)
    named = runner.invoke(app, ["register", "check", str(SHIPPED_REGISTER), "--audience", "kvk-handelsregister"])
    assert named.exit_code == 1
    assert "token audience" in named.output
    monkeypatch.setenv("WGS_AUDIENCE", "kvk-handelsregister")
    assert runner.invoke(app, ["register", "check", str(SHIPPED_REGISTER)]).exit_code == 1
    monkeypatch.delenv("WGS_AUDIENCE")
    assert runner.invoke(app, ["register", "check", str(SHIPPED_REGISTER)]).exit_code == 0


def test_register_check_of_a_valid_file_is_one_line_however_long_its_path(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The path is printed as it is: not wrapped at the terminal's width (a checkout in a deep directory
    broke the line in two), nor read as markup (``[...]`` in a directory name)."""
    monkeypatch.setenv("COLUMNS", "40")
    copy = tmp_path / "a-rather-long-directory-name-[deploy]" / "register.yaml"
    copy.parent.mkdir()
    copy.write_text(SHIPPED_REGISTER.read_text())
    good = runner.invoke(app, ["register", "check", str(copy)])
    assert good.exit_code == 0
    assert good.output.splitlines() == [f"{copy}: valid, version 2026.11.1, 4 partnerships"]


@pytest.mark.parametrize("target", ["a-directory", "missing.yaml"])
def test_register_check_of_an_unreadable_path_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    target: str) -> None:
    """A directory or a missing file is one line naming the path once, not a `path:?:?:` problem without a
    line; a long path is not wrapped into two lines."""
    monkeypatch.setenv("COLUMNS", "40")
    (tmp_path / "a-directory").mkdir()
    path = tmp_path / target
    line = _refusal(runner.invoke(app, ["register", "check", str(path)]))
    assert line.startswith(f"{path}: cannot read the register file ("), line
    assert "?" not in line


@pytest.mark.parametrize("command", [["db", "upgrade"], ["keys", "init"]], ids=" ".join)
@pytest.mark.parametrize("under", [False, True], ids=["a-file", "under-a-file"])
def test_a_data_directory_that_is_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     command: list[str], under: bool) -> None:
    """A WGS_DATA_DIR naming a file (or a path through one) ended `db upgrade` in a FileExistsError or
    NotADirectoryError traceback, `keys init` in a NotADirectoryError one; now a line naming the path."""
    afile = tmp_path / "not-a-directory"
    afile.write_text("")
    monkeypatch.setenv("WGS_DATA_DIR", str(afile / "data" if under else afile))
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    line = _refusal(runner.invoke(app, command))
    assert line.startswith("cannot make the "), line
    assert line.endswith("check WGS_DATA_DIR"), line
    assert afile.read_text() == ""


@pytest.mark.parametrize("content", [
    'format: "wgs-register/1"\nversion: "caf\xe9"\n'.encode("latin-1"),
    b'format: "wgs-register/1"\nversion: "a\x01b"\n',
    b"format: &loop [*loop]\n",
], ids=["latin-1", "control-character", "recursive-alias"])
def test_register_check_of_a_file_yaml_cannot_read_says_so_in_one_line(tmp_path: Path, content: bytes) -> None:
    """Each of these ended `register check` (and the start) in a traceback: a UnicodeDecodeError, PyYAML's
    ReaderError (no MarkedYAMLError) and a RecursionError; now the file's line and exit code 1."""
    path = tmp_path / "register.yaml"
    path.write_bytes(content)
    line = _refusal(runner.invoke(app, ["register", "check", str(path)]))
    assert re.match(rf"{re.escape(str(path))}:[12]:\d+: ", line), line


@pytest.mark.parametrize("command", [
    ["register", "show"],
    ["clients", "add", "politie-bvh", "--generate-secret"],
    ["users", "add", "po-2", "--organisation", "politie", "--role", "privacy-officer", "--password-stdin"],
    ["escalations", "list", "--overdue"],
], ids=" ".join)
def test_a_command_reading_a_register_file_it_cannot_read_says_so_in_one_line(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    """A mistyped ``WGS_REGISTER_FILE`` is the register's own line (as ``serve`` and ``register check`` give it)
    and exit code 1, not a traceback of the loader; nothing is registered."""
    missing = data_dir / "register-typo.yaml"
    monkeypatch.setenv("WGS_REGISTER_FILE", str(missing))
    line = _refusal(runner.invoke(app, command, input="a long enough password\n"))
    assert line == f"{missing}: cannot read the register file (No such file or directory)"
    monkeypatch.delenv("WGS_REGISTER_FILE")
    listing = runner.invoke(app, ["clients", "list"]).output + runner.invoke(app, ["users", "list"]).output
    assert "politie-bvh" not in listing
    assert "po-2" not in listing


def test_clients_users_and_keys(data_dir: Path) -> None:
    jwks = data_dir / "vth.jwks"
    jwks.write_text(json.dumps({"keys": [OKPKey.generate_key("Ed25519").as_dict(private=False)]}))
    added = runner.invoke(app, ["clients", "add", "gemeente-amsterdam-vth", "--jwks-file", str(jwks)])
    assert added.exit_code == 0, added.output
    secret = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret", "--scopes", "exchange"])
    assert secret.exit_code == 0
    assert "shown once" in secret.output
    unknown = runner.invoke(app, ["clients", "add", "no-such-system", "--generate-secret"])
    assert unknown.exit_code == 1
    private = data_dir / "private.jwks"
    private.write_text(json.dumps({"keys": [OKPKey.generate_key("Ed25519").as_dict(private=True)]}))
    assert runner.invoke(app, ["clients", "add", "politie-bvh", "--jwks-file", str(private)]).exit_code == 1
    single = data_dir / "single.jwk"  # one key, not a set: the file reads fine, so the refusal says what is expected
    single.write_text(json.dumps(OKPKey.generate_key("Ed25519").as_dict(private=False)))
    not_a_set = runner.invoke(app, ["clients", "add", "politie-bvh", "--jwks-file", str(single)])
    assert not_a_set.exit_code == 1
    assert 'a JWK set: a JSON object with a "keys" list' in " ".join(not_a_set.stderr.split())
    listing = runner.invoke(app, ["clients", "list"])
    assert "gemeente-amsterdam-vth" in listing.output
    assert "kvk-handelsregister" in listing.output
    user = runner.invoke(app, ["users", "add", "po-amsterdam", "--organisation", "gemeente-amsterdam",
                               "--role", "privacy-officer", "--password-stdin"], input="a long enough password\n")
    assert user.exit_code == 0, user.output
    short = runner.invoke(app, ["users", "add", "po-2", "--organisation", "gemeente-amsterdam", "--role",
                                "privacy-officer", "--password-stdin"], input="short\n")
    assert short.exit_code == 1
    assert "po-amsterdam" in runner.invoke(app, ["users", "list"]).output
    assert runner.invoke(app, ["keys", "rotate"]).exit_code == 0
    keys = runner.invoke(app, ["keys", "list"])
    assert keys.exit_code == 0
    assert keys.output.count("-") > 0
    stored = json.loads((data_dir / "keys" / "token-signing.json").read_text())
    assert len(stored["keys"]) == 2
    assert oct((data_dir / "keys" / "token-signing.json").stat().st_mode)[-3:] == "600"


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read the JWKS file (No such file or directory)"),
    ('{"keys": [{"kty": "OKP", "d": "c2VjcmV0', "the JWKS file is not JSON"),
    ("[" * 100_000 + "]" * 100_000, "the JWKS file is not JSON"),  # nested past the stack: was a RecursionError
])
def test_clients_add_refuses_a_jwks_file_it_cannot_read_in_one_line(data_dir: Path, content: str | None,
                                                                     expected: str) -> None:
    """A mistyped path or a truncated file is one line naming the file, not a traceback, and never repeats
    the file's content (an operator may have picked the private key by mistake); nothing is registered."""
    jwks = data_dir / "vth-public.jwks"
    if content is not None:
        jwks.write_text(content)
    line = _refusal(runner.invoke(app, ["clients", "add", "gemeente-amsterdam-vth", "--jwks-file", str(jwks)]))
    assert line == f"{jwks}: {expected}"
    assert "gemeente-amsterdam-vth" not in runner.invoke(app, ["clients", "list"]).output


@pytest.mark.parametrize(("username", "password", "expected"), [
    ("po-long", b"p" * 257 + b"\n", "password must have at most 256 characters"),
    ("p" * 65, b"a long enough password\n", "a username has 1 to 64 characters"),
    ("po\tamsterdam", b"a long enough password\n", "a username has 1 to 64 characters"),
    ("po-latin", "a long enough pässword\n".encode("latin-1"), "the password on standard input is not UTF-8 text"),
], ids=["password-too-long", "username-too-long", "username-with-a-tab", "password-not-utf8"])
def test_users_add_refuses_an_account_no_one_could_sign_in_with(data_dir: Path, username: str, password: bytes,
                                                               expected: str) -> None:
    """Sign-in (``/v1/auth/login``, the console) takes usernames of 1 to 64 characters without control
    characters and passwords of at most 256: `users add` made the first three accounts and said so, and each
    sign-in was then refused as bad input; a password that is not UTF-8 was a traceback. Now one refusal, and
    no account."""
    result = runner.invoke(app, ["users", "add", username, "--organisation", "gemeente-amsterdam",
                                 "--role", "privacy-officer", "--password-stdin"], input=password)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert "long enough" not in result.output
    assert username not in runner.invoke(app, ["users", "list"]).output
    if username == "po-long":
        added = runner.invoke(app, ["users", "add", username, "--organisation", "gemeente-amsterdam",
                                    "--role", "privacy-officer", "--password-stdin"], input="a long enough password\n")
        assert added.exit_code == 0, added.output
        longer = runner.invoke(app, ["users", "set-password", username, "--password-stdin"], input=password)
        assert longer.exit_code == 1
        assert expected in " ".join(longer.stderr.split()), longer.stderr


def test_users_set_password_replaces_the_password_and_refuses_a_short_one_or_nobody(data_dir: Path) -> None:
    from gateway.auth.passwords import verify_secret
    from gateway.auth.repository import get_account
    from gateway.db.engine import existing_engine_for, make_session_factory, transaction
    from gateway.settings import Settings

    def stored_hash() -> str:
        with transaction(make_session_factory(existing_engine_for(Settings()))) as session:
            found = get_account(session, "po-amsterdam")
        assert found is not None
        return found.password_hash

    added = runner.invoke(app, ["users", "add", "po-amsterdam", "--organisation", "gemeente-amsterdam",
                                "--role", "privacy-officer", "--password-stdin"], input="a long enough password\n")
    assert added.exit_code == 0, added.output
    before = stored_hash()
    short = runner.invoke(app, ["users", "set-password", "po-amsterdam", "--password-stdin"], input="short\n")
    assert short.exit_code == 1
    assert stored_hash() == before
    nobody = runner.invoke(app, ["users", "set-password", "po-nobody", "--password-stdin"],
                           input="another long password\n")
    assert nobody.exit_code == 1
    assert "no account" in nobody.output
    changed = runner.invoke(app, ["users", "set-password", "po-amsterdam", "--password-stdin"],
                            input="another long password\n")
    assert changed.exit_code == 0, changed.output
    assert verify_secret(stored_hash(), "another long password")
    assert not verify_secret(stored_hash(), "a long enough password")
    assert "another long password" not in changed.output


def _refused_case(session: Session, now: datetime) -> Case:
    """A case opened at ``now`` because the police refused the municipality's Bibob request (tier deadlines of
    5, 10 and 20 working days)."""
    from escalation.cases import open_case

    return open_case(session, partnership="riec-amsterdam-amstelland", purpose="bibob-integrity-check",
                     requester_org="gemeente-amsterdam", holder_org="politie", trigger="holder-refused",
                     register_version="2026.11.1", policy_reasons=["refused-by-holder"],
                     deadlines={1: 5, 2: 10, 3: 20}, now=now, timezone="Europe/Amsterdam")


def test_escalations_scan_moves_overdue_cases_and_logs_it(data_dir: Path) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from audit.tables import audit_entries
    from escalation.cases import get_case
    from gateway.db.engine import make_engine, make_session_factory, transaction

    engine = make_engine(f"sqlite:///{data_dir / 'gateway.sqlite'}")
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:  # opened long ago: tier 1's five working days are over
        case = _refused_case(session, datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    overdue = runner.invoke(app, ["escalations", "list", "--overdue"])
    assert overdue.exit_code == 0, overdue.output
    assert case.id in overdue.output
    scanned = runner.invoke(app, ["escalations", "scan"])
    assert scanned.exit_code == 0, scanned.output
    assert "1 overdue case(s) moved" in scanned.output
    with transaction(sessions) as session:
        assert get_case(session, case.id).tier == 2
    with engine.connect() as connection:
        steps = [json.loads(r.canonical)["event"] for r in connection.execute(
            select(audit_entries.c.canonical).where(audit_entries.c.event_type == "escalation.step"))]
    engine.dispose()
    assert [(s["extra"]["case_id"], s["extra"]["action"], s["extra"]["tier"]) for s in steps] == [
        (case.id, "deadline_missed", 2)]
    again = runner.invoke(app, ["escalations", "scan"])
    assert "0 overdue case(s) moved" in again.output  # the new tier has a new deadline
    gaps = runner.invoke(app, ["escalations", "gaps"])
    assert gaps.exit_code == 0
    assert gaps.stdout_bytes.decode("utf-8-sig").splitlines() == [
        "id,partnership,status,title,description,cases,created_at,updated_at,created_by_org,note,history"
    ]  # the API's export (test_legal_gaps compares them)


def test_escalations_scan_counts_the_cases_that_failed_and_exits_1(data_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A case whose step failed was only in the log (`escalation_scan_case_failed`), and the command said "0
    moved" and exited 0: a cron job never noticed. It counts them, names them by id only (never the error's
    text) and exits 1; the cases that did not fail are moved all the same."""
    from datetime import UTC, datetime

    from escalation import cases as case_store
    from gateway.db.engine import make_engine, make_session_factory, transaction

    engine = make_engine(f"sqlite:///{data_dir / 'gateway.sqlite'}")
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:  # both long past tier 1's deadline
        failing, moving = (_refused_case(session, datetime(2026, 1, 5, 10, 0, tzinfo=UTC)) for _ in range(2))
    engine.dispose()
    act = case_store.act

    def act_failing(*args: Any, **kwargs: Any) -> Any:
        if args[1] == failing.id:
            raise RuntimeError("a defect naming J. de Vries")
        return act(*args, **kwargs)

    monkeypatch.setattr(case_store, "act", act_failing)
    scanned = runner.invoke(app, ["escalations", "scan"])
    assert scanned.exit_code == 1, scanned.output
    assert "1 overdue case(s) moved" in scanned.stdout
    assert "1 case(s) failed" in scanned.stdout
    assert failing.id in scanned.stdout  # stdout is what cron mails: the ids, beside the gateway's log lines
    assert moving.id not in scanned.stdout
    assert "de Vries" not in scanned.output

    monkeypatch.setattr(case_store, "act", act)  # fixed: the next run takes the case it left, and exits 0
    again = runner.invoke(app, ["escalations", "scan"])
    assert again.exit_code == 0, again.output
    assert "1 overdue case(s) moved" in again.stdout
    assert "0 case(s) failed" in again.stdout


@pytest.mark.parametrize("command", [["escalations", "list"], ["escalations", "list", "--overdue"],
                                     ["escalations", "gaps"]], ids=" ".join)
def test_escalations_refuse_a_partnership_the_register_does_not_know(data_dir: Path, command: list[str]) -> None:
    """A mistyped --partnership selected nothing: an empty table (or a header-only CSV) and exit 0, read as "no
    cases" for a partnership that has some. It is refused in one line; a known one still lists its cases."""
    from datetime import UTC, datetime

    from gateway.db.engine import make_engine, make_session_factory, transaction

    engine = make_engine(f"sqlite:///{data_dir / 'gateway.sqlite'}")
    with transaction(make_session_factory(engine)) as session:
        case = _refused_case(session, datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    engine.dispose()
    line = _refusal(runner.invoke(app, [*command, "--partnership", "riec-amsterdam-amstelan"]))
    assert line.startswith("unknown partnership `riec-amsterdam-amstelan`: not in the register"), line
    known = runner.invoke(app, [*command, "--partnership", "riec-amsterdam-amstelland"])
    assert known.exit_code == 0, known.output
    if command[1] == "list":
        assert case.id in known.output


_CASE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _two_pages_of_cases(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pages of four for `escalations list`, and twice four cases, so that the last page is full and one more
    read finds none; their ids, oldest first."""
    import uuid
    from datetime import UTC, date, datetime

    from escalation.tables import escalation_cases
    from gateway.db.engine import make_engine, make_session_factory, transaction
    from gateway.escalations import cli as escalations_cli

    monkeypatch.setattr(escalations_cli, "LIST_PAGE", 4)
    engine = make_engine(f"sqlite:///{data_dir / 'gateway.sqlite'}")
    long_ago = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
    settled: list[dict[str, Any]]  # rows of the cases table
    settled = [{"id": str(uuid.UUID(int=n)), "seq": n, "exchange_id": None, "request_fingerprint": None,
                "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
                "requester_org": "gemeente-amsterdam", "holder_org": "politie", "trigger": "holder-refused",
                "state": "closed", "tier": 1, "version": 3, "deadline": date(2025, 1, 13), "opened_at": long_ago,
                "updated_at": long_ago, "register_version": "2026.11.1", "policy_reasons": [], "decision": None,
                "legal_gap": False, "requested_categories": [], "votes": []} for n in range(1, 8)]
    with transaction(make_session_factory(engine)) as session:  # ids below every UUIDv7: all of them older
        session.execute(escalation_cases.insert(), settled)
        newest = _refused_case(session, datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    engine.dispose()
    return [str(case["id"]) for case in settled] + [newest.id]


def test_escalations_list_lists_every_case_not_only_the_first_page(data_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`escalations list` read one page of 10,000 and stopped there without a word: the cases left out were
    the newest, those an operator lists the cases for. It reads page after page until none is left."""
    cases = _two_pages_of_cases(data_dir, monkeypatch)
    listed = runner.invoke(app, ["escalations", "list"])
    assert listed.exit_code == 0, listed.output
    assert _CASE_ID.findall(listed.output) == cases  # oldest first, each once
    assert listed.output.count("partnership") == 2  # a table per page; the empty read after the last prints none


def test_escalations_list_prints_each_page_before_it_reads_the_next(data_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """It collected every page before printing anything: a large list showed nothing until all of it was read,
    and held all of it in memory. Each page is printed as it is read."""
    import io

    from rich.console import Console

    from escalation.queries import list_cases
    from gateway.escalations import cli as escalations_cli

    cases = _two_pages_of_cases(data_dir, monkeypatch)
    printed = io.StringIO()
    monkeypatch.setattr(escalations_cli, "out", Console(file=printed, width=200))
    shown_before_each_read: list[list[str]] = []
    read_page = list_cases  # the real one, which the CLI looks up by this name

    def reading(*args: Any, **kwargs: Any) -> Any:
        shown_before_each_read.append(_CASE_ID.findall(printed.getvalue()))
        return read_page(*args, **kwargs)

    monkeypatch.setattr(escalations_cli, "list_cases", reading)
    listed = runner.invoke(app, ["escalations", "list"])
    assert listed.exit_code == 0, listed.output
    assert shown_before_each_read == [[], cases[:4], cases]
    assert _CASE_ID.findall(printed.getvalue()) == cases


def test_escalations_list_without_cases_prints_the_header(data_dir: Path) -> None:
    listed = runner.invoke(app, ["escalations", "list"])
    assert listed.exit_code == 0, listed.output
    assert "partnership" in listed.output
    assert _CASE_ID.findall(listed.output) == []


def test_escalations_scan_delivers_its_webhooks_before_it_exits(data_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """From cron, the scan is the only process that tells the parties a case moved up: its signed
    notifications must be delivered before the command ends, not dropped with its event loop."""
    from datetime import UTC, datetime

    from gateway.db.engine import make_engine, make_session_factory, transaction
    from tests.servers import serve_app

    received: list[tuple[str, dict[str, object]]] = []
    receiver = FastAPI()

    @receiver.post("/hooks/{organisation}")
    async def hook(organisation: str, request: Request) -> Response:
        received.append((organisation, json.loads(await request.body())))
        # The first delivery fails: the notifier tries again after a pause, which the scan must wait for.
        return Response(status_code=503 if len(received) == 1 else 200)

    engine = make_engine(f"sqlite:///{data_dir / 'gateway.sqlite'}")
    with transaction(make_session_factory(engine)) as session:  # tier 1's five working days are long over
        case = _refused_case(session, datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    engine.dispose()
    with serve_app(receiver) as base:
        monkeypatch.setenv("WGS_ESCALATION_WEBHOOKS", json.dumps(
            {"politie": {"url": f"{base}/hooks/politie", "secret": "0123456789abcdef0123"}}))
        scanned = runner.invoke(app, ["escalations", "scan"])
    assert scanned.exit_code == 0, scanned.output
    assert "1 overdue case(s) moved" in scanned.output
    assert [organisation for organisation, _ in received] == ["politie", "politie"], scanned.output
    assert case.id in json.dumps(received[-1][1])


def test_pseudonyms_rotate_rekeys_the_index_to_what_a_fresh_enrolment_gives(data_dir: Path) -> None:
    import asyncio

    from sqlalchemy import select

    from gateway.auth.principal import Principal
    from gateway.clock import SystemClock
    from gateway.db.engine import make_engine, make_session_factory
    from gateway.enrolment.service import Item, PseudonymService
    from gateway.enrolment.tables import enrolments
    from gateway.pseudonyms.keystore import FileKeyStore
    from gateway.pseudonyms.pep import PolymorphicPseudonym
    from gateway.pseudonyms.transcryptor import Transcryptor
    from gateway.register.loader import load_register

    register, _ = load_register(SHIPPED_REGISTER)
    engine = make_engine(f"sqlite:///{data_dir / 'gateway.sqlite'}")
    store = FileKeyStore(data_dir / "keys" / "pseudonyms")

    def service() -> PseudonymService:
        return PseudonymService(sessions=make_session_factory(engine), clock=SystemClock(), register=register,
                                transcryptor=Transcryptor(asyncio.run(store.initialise())))

    kvk = Principal(kind="system", subject="kvk-handelsregister", organisation="kvk", scopes=frozenset({"enrol"}))
    before = service()
    from gateway.client.pseudonyms import PseudonymClient

    partner = PseudonymClient(before.transcryptor.public_key())
    numbers = ["12345678", "87654321", "11223344"]
    items = [Item("kvk", partner.polymorphic("kvk", n), ("trade-name",), ("company_registration",)) for n in numbers]
    enrol_logged(before, data_dir / "keys", kvk, "riec-amsterdam-amstelland", items)
    status = runner.invoke(app, ["pseudonyms", "status"])
    assert "enrolments under key version 1: 3" in status.output
    rotated = runner.invoke(app, ["pseudonyms", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    assert "3 index rows re-keyed" in rotated.output
    _assert_rotation_procedure(rotated.output, added=2)
    after = service()
    assert after.transcryptor.public_key_version == 2
    with engine.connect() as connection:
        stored = {r.pseudonym for r in connection.execute(select(enrolments.c.pseudonym, enrolments.c.key_version))
                  if r.key_version == 2}
    fresh = {after.transcryptor.partnership_pseudonym(PolymorphicPseudonym.decode(i.polymorphic), "kvk",
                                                       "riec-amsterdam-amstelland").encode() for i in items}
    engine.dispose()
    assert stored == fresh  # no identifier was needed to move the index to the new key
    again = runner.invoke(app, ["pseudonyms", "rotate"])
    assert "3 index rows re-keyed" in again.output  # each rotation re-keys every row once, to the newest


def _assert_rotation_procedure(output: str, *, added: int | None) -> None:
    """What `rotate` tells the operator is docs/pseudonyms.md's procedure: running gateways follow the key file
    (no restart, no re-enrolment), then `rekey` for enrolments in flight and `status` to confirm."""
    lines = output.splitlines()
    if added is None:
        assert any("no key version was added" in line and "`wgs-gateway pseudonyms rotate` again" in line
                   for line in lines), output
    else:
        assert any(f"key version {added} added" in line and "from their next request" in line
                   and "no restart" in line for line in lines), output
    assert any("`wgs-gateway pseudonyms rekey`" in line and "in flight" in line for line in lines), output
    assert any("`wgs-gateway pseudonyms status`" in line and "0 rows" in line for line in lines), output
    assert "re-enrol" not in output
    assert "restart the" not in output.lower()


class _Index:
    """The discovery index of a CLI test's database, and gateway processes made from the key ring on disk."""

    RIEC = "riec-amsterdam-amstelland"

    def __init__(self, data_dir: Path) -> None:
        import asyncio

        from gateway.auth.principal import Principal
        from gateway.client.pseudonyms import PseudonymClient
        from gateway.db.engine import make_engine
        from gateway.pseudonyms.keystore import FileKeyStore

        self.engine = make_engine(f"sqlite:///{data_dir / 'gateway.sqlite'}")
        self.key_dir = data_dir / "keys"
        self.store = FileKeyStore(data_dir / "keys" / "pseudonyms")
        self.kvk = Principal(kind="system", subject="kvk-handelsregister", organisation="kvk",
                            scopes=frozenset({"enrol"}))
        self.partner = PseudonymClient(asyncio.run(self.store.initialise()).public_key)

    def gateway(self) -> Any:
        """A gateway process started now: it loads the key ring as it is on disk at this moment."""
        import asyncio

        from gateway.clock import SystemClock
        from gateway.db.engine import make_session_factory
        from gateway.enrolment.service import PseudonymService
        from gateway.pseudonyms.transcryptor import Transcryptor
        from gateway.register.loader import load_register

        register, _ = load_register(SHIPPED_REGISTER)
        return PseudonymService(sessions=make_session_factory(self.engine), clock=SystemClock(), register=register,
                                transcryptor=Transcryptor(asyncio.run(self.store.load())))

    def enrol(self, gateway: Any, items: list[Any]) -> Any:
        """An enrolment by the KvK through ``gateway``, logged as the gateway logs it."""
        return enrol_logged(gateway, self.key_dir, self.kvk, self.RIEC, items)

    def item(self, number: str, *categories: str) -> Any:
        from gateway.enrolment.service import Item

        return Item("kvk", self.partner.polymorphic("kvk", number), ("trade-name",),
                    categories or ("company_registration",))

    def rows(self) -> dict[str, tuple[int, list[str]]]:
        from sqlalchemy import select

        from gateway.enrolment.tables import enrolments

        with self.engine.connect() as connection:
            return {r.pseudonym: (r.key_version, r.categories) for r in connection.execute(
                select(enrolments.c.pseudonym, enrolments.c.key_version, enrolments.c.categories))}

    def discovered(self, gateway: Any, item: Any) -> dict[str, set[str]]:
        """What discovery finds for the subject: its partnership pseudonym under the gateway's current key,
        looked up in the index."""
        from gateway.pseudonyms.pep import PolymorphicPseudonym

        shared = gateway.transcryptor.partnership_pseudonym(PolymorphicPseudonym.decode(item.polymorphic), "kvk",
                                                            self.RIEC).encode()
        return {holder: set(holding.categories) for holder, holding in gateway.holders_of(self.RIEC, [shared]).items()}


@pytest.fixture
def index(data_dir: Path) -> Iterator[_Index]:
    made = _Index(data_dir)
    yield made
    made.engine.dispose()


def test_pseudonyms_rotate_interrupted_is_finished_by_a_rerun_without_another_key_version(index: _Index) -> None:
    """A rotation that dies after the key store got its new version (or part-way through the index) is
    finished by running `rotate` again: no further version, every row under the current one, discovery hits."""
    import asyncio

    from sqlalchemy import update

    from gateway.enrolment.tables import enrolments
    from gateway.pseudonyms.keys import Domain
    from gateway.pseudonyms.pep import Pseudonym
    from gateway.pseudonyms.rotation import rekey_pseudonyms

    items = [index.item(n) for n in ("12345678", "87654321", "11223344")]
    index.enrol(index.gateway(), items)
    ring = asyncio.run(index.store.rotate())  # the run is killed here: key store rotated, index untouched ...
    before = min(index.rows())  # ... or, in a rerun, killed after its first committed batch (of one row)
    ((_, after),) = rekey_pseudonyms([(0, Domain(index.RIEC), Pseudonym.decode(before))], ring, old_version=1,
                                     new_version=2)
    with index.engine.begin() as connection:
        connection.execute(update(enrolments).where(enrolments.c.pseudonym == before)
                           .values(pseudonym=after.encode(), key_version=2))
    assert sorted(version for version, _ in index.rows().values()) == [1, 1, 2]

    rerun = runner.invoke(app, ["pseudonyms", "rotate"])
    assert rerun.exit_code == 0, rerun.output
    assert "no new key version is added" in rerun.output
    assert "2 index rows re-keyed" in rerun.output
    assert "every index row is under the current key version" in rerun.output
    _assert_rotation_procedure(rerun.output, added=None)
    ring = asyncio.run(index.store.load())
    assert (sorted(ring.versions), ring.current) == ([1, 2], 2)
    assert [version for version, _ in index.rows().values()] == [2, 2, 2]
    restarted = index.gateway()
    for item in items:
        assert index.discovered(restarted, item) == {"kvk": {"company_registration"}}
    assert "index rows not under the current key version: 0" in runner.invoke(app, ["pseudonyms", "status"]).output


def test_pseudonyms_status_counts_rows_without_their_own_pseudonyms_tag_and_rekey_gives_them_one(
        index: _Index) -> None:
    """Rows enrolled before migration 0042 (no tag of the participant's own pseudonym: a related subject among
    them costs one conversion more) are counted by `status` and tagged by `rekey`, which adds no version."""
    from sqlalchemy import select, update

    from gateway.enrolment.tables import enrolments

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0  # the audit log's key (the ring is there)
    index.enrol(index.gateway(), [index.item("12345678"), index.item("87654321")])
    with index.engine.begin() as connection:  # as before 0042
        connection.execute(update(enrolments).values(own_tag=None))
    status = runner.invoke(app, ["pseudonyms", "status"])
    assert status.exit_code == 0, status.output
    assert "index rows without the tag of their participant's own pseudonym: 2" in status.output, status.output

    rekeyed = runner.invoke(app, ["pseudonyms", "rekey"])
    assert rekeyed.exit_code == 0, rekeyed.output
    assert "0 index rows re-keyed, 2 given the tag of their participant's own pseudonym" in rekeyed.output
    with index.engine.connect() as connection:
        assert None not in set(connection.execute(select(enrolments.c.own_tag)).scalars())
    assert [version for version, _ in index.rows().values()] == [1, 1]
    after = runner.invoke(app, ["pseudonyms", "status"]).output
    assert "without the tag" not in after
    assert [e["extra"]["tagged"] for e in _rekeyed_entries(index)] == [2]


def test_pseudonyms_rekey_moves_what_an_old_gateway_enrolled_after_the_rotation(index: _Index) -> None:
    """A gateway process still on the old key ring keeps enrolling under the old version after `rotate`; once
    the gateway runs on the new ring, `rekey` moves those rows (a re-enrolled subject keeps its newest entry)."""
    import asyncio

    old_gateway = index.gateway()
    first, second, later = index.item("12345678"), index.item("87654321"), index.item("11223344")
    index.enrol(old_gateway, [first, second])
    rotated = runner.invoke(app, ["pseudonyms", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    assert "2 index rows re-keyed" in rotated.output
    # Not restarted yet: a new subject, and a re-enrolment of one the rotation already moved, under version 1.
    index.enrol(old_gateway, [later, index.item("12345678", "directorships")])
    assert sorted(version for version, _ in index.rows().values()) == [1, 1, 2, 2]
    restarted = index.gateway()
    assert index.discovered(restarted, later) == {}  # stranded: discovery cannot see it
    status = runner.invoke(app, ["pseudonyms", "status"])
    assert "index rows not under the current key version: 2" in status.output, status.output

    rekeyed = runner.invoke(app, ["pseudonyms", "rekey"])
    assert rekeyed.exit_code == 0, rekeyed.output
    assert "2 index rows re-keyed, 1 older duplicate(s) dropped" in rekeyed.output
    assert "every index row is under the current key version" in rekeyed.output
    ring = asyncio.run(index.store.load())
    assert (sorted(ring.versions), ring.current) == ([1, 2], 2)  # rekey never adds a version
    assert sorted(index.rows().values()) == [(2, ["company_registration"]), (2, ["company_registration"]),
                                             (2, ["directorships"])]
    assert index.discovered(restarted, later) == {"kvk": {"company_registration"}}
    assert index.discovered(restarted, first) == {"kvk": {"directorships"}}  # the re-enrolment, not the old entry
    assert index.discovered(restarted, second) == {"kvk": {"company_registration"}}


def test_pseudonyms_rekey_with_nothing_pending_changes_nothing(index: _Index) -> None:
    index.enrol(index.gateway(), [index.item("12345678"), index.item("87654321")])
    rows, keys = index.rows(), index.store.path.read_bytes()
    rekeyed = runner.invoke(app, ["pseudonyms", "rekey"])
    assert rekeyed.exit_code == 0, rekeyed.output
    assert "key version 1 is current; 0 index rows re-keyed." in rekeyed.output
    assert "every index row is under the current key version" in rekeyed.output
    assert index.rows() == rows
    assert index.store.path.read_bytes() == keys


def _rekeyed_entries(index: _Index, scope: EntryScope | None = None) -> list[dict[str, Any]]:
    """The events of the log's ``index.rekeyed`` entries (only those ``scope`` may see, when given)."""
    from sqlalchemy import select

    from audit.review import scope_condition
    from audit.tables import audit_entries

    query = select(audit_entries.c.canonical).where(audit_entries.c.event_type == "index.rekeyed")
    if scope is not None:
        condition = scope_condition(scope)
        if condition is None:  # the scope sees no entry at all
            return []
        query = query.where(condition)
    with index.engine.connect() as connection:
        return [json.loads(c)["event"] for c in connection.execute(query.order_by(audit_entries.c.log_index))
                .scalars()]


def test_pseudonyms_rotate_and_rekey_are_audited_for_the_partnerships_coordinating_officer(index: _Index) -> None:
    """Found by a review: `rotate` and `rekey` rewrote every row of the discovery index without an audit entry.
    Each committed batch is now an `index.rekeyed` entry per partnership (counts and key versions, never a
    pseudonym), which the partnership's coordinating privacy officer sees and another organisation's does not."""
    from audit.review import EntryScope
    from gateway.register.loader import load_register

    old_gateway = index.gateway()
    index.enrol(old_gateway, [index.item("12345678"), index.item("87654321")])
    before = set(index.rows())
    assert runner.invoke(app, ["pseudonyms", "rotate"]).exit_code == 0
    index.enrol(old_gateway, [index.item("11223344"), index.item("12345678", "directorships")])  # in flight
    assert runner.invoke(app, ["pseudonyms", "rekey"]).exit_code == 0

    rotation, *entries = _rekeyed_entries(index)  # the rotation's own entry first (zero rows, no partnership)
    assert (rotation["processing_activity"], rotation["extra"]["key_version"], rotation["extra"]["moved"]) == (
        None, 2, 0)
    assert [(e["processing_activity"]["partnership"], e["extra"]) for e in entries] == [
        (index.RIEC, {"index": "pseudonyms", "channel": "cli", "command": "rotate", "from_versions": [1],
                      "key_version": 2, "moved": 2, "superseded": 0}),
        (index.RIEC, {"index": "pseudonyms", "channel": "cli", "command": "rekey", "from_versions": [1],
                      "key_version": 2, "moved": 2, "superseded": 1})]
    text = json.dumps(entries)
    assert not any(pseudonym in text for pseudonym in before | set(index.rows()))
    coordinator = load_register(SHIPPED_REGISTER)[0].partnerships[index.RIEC].coordinating_privacy_officer
    assert _rekeyed_entries(index, EntryScope(organisations=frozenset({coordinator}),
                                              partnerships=frozenset({index.RIEC}))) == entries
    assert _rekeyed_entries(index, EntryScope(organisations=frozenset({"gemeente-amsterdam"}))) == []
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


def test_a_rotation_is_in_the_audit_log_even_when_the_index_is_empty(index: _Index) -> None:
    """Found: `rotate` on an empty index added a key version without any audit entry (only re-keyed batches
    had one). The rotation itself is an `index.rekeyed` entry now, of zero rows: the key versions, under no
    partnership (the key is every partnership's). A `rekey` adds no version, and no such entry."""
    import asyncio

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0  # the audit log's key (the ring is there)
    assert index.rows() == {}
    before = asyncio.run(index.store.load()).current
    rotated = runner.invoke(app, ["pseudonyms", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    after = asyncio.run(index.store.load()).current
    assert after != before
    expected = [(None, {"index": "pseudonyms", "channel": "cli", "command": "rotate", "from_versions": [before],
                        "key_version": after, "moved": 0, "superseded": 0})]
    assert [(e["processing_activity"], e["extra"]) for e in _rekeyed_entries(index)] == expected
    assert runner.invoke(app, ["pseudonyms", "rekey"]).exit_code == 0
    assert [(e["processing_activity"], e["extra"]) for e in _rekeyed_entries(index)] == expected
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


def test_a_rotation_whose_entry_cannot_be_written_says_so_and_moves_nothing(
        index: _Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key store changed, but its entry could not be written: one line naming the version, exit code 1,
    and no batch moved (each batch would be logged while the rotation is not)."""
    from audit import AuditLog, AuditWriteError

    index.enrol(index.gateway(), [index.item("12345678")])
    rows = index.rows()

    def unwritable(*_args: Any, **_kwargs: Any) -> Any:
        raise AuditWriteError("audit append failed (OperationalError)")

    monkeypatch.setattr(AuditLog, "append", unwritable)
    rotated = runner.invoke(app, ["pseudonyms", "rotate"])
    assert rotated.exit_code == 1
    assert "key version 2 was added, but its audit entry could not be written" in rotated.output
    assert "Traceback" not in rotated.output
    assert index.rows() == rows


def test_a_rekey_batch_whose_entry_cannot_be_written_is_not_written_either(
        index: _Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch commits in the audit log's transaction: when that transaction fails after the batch's rows
    were written in it, neither the rows nor the entry remain, and the command says to run it again."""
    import sqlite3

    from gateway.enrolment import rekey

    index.enrol(index.gateway(), [index.item("12345678"), index.item("87654321")])
    rows = index.rows()
    written = rekey._apply

    def then_the_log_fails(*args: Any) -> None:
        written(*args)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(rekey, "_apply", then_the_log_fails)
    rotated = runner.invoke(app, ["pseudonyms", "rotate"])
    assert rotated.exit_code == 1
    assert "the audit log could not be written" in rotated.output
    assert "`wgs-gateway pseudonyms rotate` again" in rotated.output
    assert index.rows() == rows
    assert [e["extra"]["moved"] for e in _rekeyed_entries(index)] == [0]  # the key version added: on record
    monkeypatch.setattr(rekey, "_apply", written)
    resumed = runner.invoke(app, ["pseudonyms", "rotate"])  # finishes the move, adds no further version
    assert resumed.exit_code == 0, resumed.output
    assert [version for version, _ in index.rows().values()] == [2, 2]
    assert [e["extra"]["moved"] for e in _rekeyed_entries(index)] == [0, 2]


def test_a_rekey_batch_overtaken_by_an_enrolment_is_planned_again_and_its_entry_counts_what_it_did(
        index: _Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old gateway process enrols between a batch's planning and its transaction: the batch is not written
    as planned (its entry would count rows it did not move), but planned again, so the entry counts them all."""
    from gateway.enrolment import rekey

    old_gateway = index.gateway()
    index.enrol(old_gateway, [index.item("12345678"), index.item("87654321")])
    planned = rekey._plan
    plans: list[Any] = []

    def overtaken(*args: Any) -> Any:
        plan = planned(*args)
        plans.append(plan)
        if len(plans) == 1:  # after the first plan: a new subject under the old version, in the same batch
            index.enrol(old_gateway, [index.item("11223344")])
        return plan

    monkeypatch.setattr(rekey, "_plan", overtaken)
    rotated = runner.invoke(app, ["pseudonyms", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    assert "3 index rows re-keyed" in rotated.output
    assert [len(plan.rows) for plan in plans if plan] == [2, 3]
    assert [version for version, _ in index.rows().values()] == [2, 2, 2]
    assert [e["extra"]["moved"] for e in _rekeyed_entries(index)] == [0, 3]  # the rotation, then its batch


def test_pseudonyms_rotate_without_an_audit_log_changes_nothing(index: _Index) -> None:
    """Without the checkpoint key the batches cannot be audited: the command refuses before the key store is
    rotated, rather than leaving a new key version and an index it cannot move."""
    index.enrol(index.gateway(), [index.item("12345678")])
    rows, keys = index.rows(), index.store.path.read_bytes()
    for key in index.key_dir.glob("audit-checkpoint*"):
        key.unlink()
    rotated = runner.invoke(app, ["pseudonyms", "rotate"])
    assert rotated.exit_code == 1
    assert "cannot be audited, so nothing was changed" in rotated.output
    assert (index.rows(), index.store.path.read_bytes()) == (rows, keys)


def test_keys_init_creates_every_key_once(data_dir: Path) -> None:
    first = runner.invoke(app, ["keys", "init"])
    assert first.exit_code == 0, first.output
    made = {p.relative_to(data_dir / "keys"): p.read_bytes() for p in (data_dir / "keys").rglob("*") if p.is_file()
            and not p.name.endswith(".lock")}
    assert any(p.name == "audit-checkpoint.pem" for p in made)
    assert any("pseudonym" in p.name for p in made)
    again = runner.invoke(app, ["keys", "init"])
    assert again.exit_code == 0
    assert {p.relative_to(data_dir / "keys"): p.read_bytes() for p in (data_dir / "keys").rglob("*")
            if p.is_file() and not p.name.endswith(".lock")} == made  # idempotent: nothing replaced


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
              ) -> Iterator[list[dict[str, object]]]:
    """``uvicorn.run`` replaced by a recorder; the signal handlers ``serve`` installs are put back after."""
    import signal

    import uvicorn

    # Alembic's info lines appear when an earlier test in this process set up the gateway's logging; a real
    # `serve` process has none configured when it checks (test_logging_serve runs it for real).
    caplog.set_level(logging.WARNING)
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append({"app": app, **options}))
    saved = {stop: signal.getsignal(stop) for stop in (signal.SIGTERM, signal.SIGINT)}
    yield calls
    for stop, handler in saved.items():
        signal.signal(stop, handler)


def _refusal(result: Result) -> str:
    """The one stderr line of a refused start (and nothing on stdout)."""
    stderr = result.stderr
    assert result.exit_code == 1, stderr
    assert result.stdout == ""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_serve_refuses_a_missing_database_in_one_line_and_creates_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_server: list[dict[str, object]]) -> None:
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    line = _refusal(runner.invoke(app, ["serve", "--port", "1"]))
    assert line.startswith("database not migrated: run `wgs-gateway db upgrade` first")
    assert not (tmp_path / "data" / "gateway.sqlite").exists()  # no empty database left behind
    assert no_server == []


def test_serve_refuses_a_database_behind_the_code(data_dir: Path, no_server: list[dict[str, object]]) -> None:
    assert runner.invoke(app, ["db", "downgrade", "--", "-1"]).exit_code == 0
    line = _refusal(runner.invoke(app, ["serve", "--port", "1"]))
    assert line.startswith("database not migrated: run `wgs-gateway db upgrade` first (database at revision ")
    assert no_server == []


@pytest.mark.parametrize("key_file", ["token-signing.json", "audit-checkpoint.pem"])
def test_serve_refuses_a_key_file_other_users_can_read(data_dir: Path, no_server: list[dict[str, object]],
                                                      key_file: str) -> None:
    """A token-signing or checkpoint key others can read lets them sign tokens or checkpoints as the gateway; the
    pseudonym key ring was already refused so (``chmod 600 it``), these were used as found. One line naming the
    file, never its content; after ``chmod 600`` the gateway starts."""
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    path = data_dir / "keys" / key_file
    path.chmod(0o644)
    line = _refusal(runner.invoke(app, ["serve", "--port", "1"]))
    assert line.startswith("key files other users than their owner can read or write: "), line
    assert str(path) in line
    assert "chmod 600" in line
    assert path.read_text()[:20] not in line
    assert no_server == []
    path.chmod(0o600)
    assert runner.invoke(app, ["serve", "--port", "1"]).exit_code == 0
    assert len(no_server) == 1


def test_serve_refuses_a_bad_register_with_its_line_and_reason(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                               no_server: list[dict[str, object]]) -> None:
    bad = data_dir / "bad.yaml"
    bad.write_text(SHIPPED_REGISTER.read_text().replace("requesters: [municipality]\n", "requesters: [mayor]\n", 1))
    monkeypatch.setenv("WGS_REGISTER_FILE", str(bad))
    line = _refusal(runner.invoke(app, ["serve", "--port", "1"]))
    assert re.search(r"bad\.yaml:\d+:\d+: .*no participant has role `mayor`", line), line
    assert no_server == []


def test_serve_starts_uvicorn_with_our_logging_and_a_graceful_shutdown(
        data_dir: Path, no_server: list[dict[str, object]]) -> None:
    result = runner.invoke(app, ["serve", "--port", "8123"])
    assert result.exit_code == 0, result.output
    [call] = no_server
    assert call["app"] == "gateway.asgi:app"
    assert call["port"] == 8123
    assert call["log_config"] is None  # uvicorn's default would put its plain-text formatters back
    assert call["timeout_graceful_shutdown"]
    # The app believes X-Forwarded-For itself, after noting who connected (gateway.peer): uvicorn must not first
    assert call["proxy_headers"] is False


# -- audit: key, export, verify ------------------------------------------------------------------------------


def test_audit_commands_never_create_the_checkpoint_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        data_dir: Path) -> None:
    """A wrong or empty data directory gets one clear line, not a new log identity printed as if pinned."""
    keys = data_dir / "keys" / "audit-checkpoint.pem"
    assert not keys.exists()
    for command in (["audit", "key"], ["audit", "export", "--out", str(tmp_path / "out.jsonl")],
                    ["audit", "verify"], ["audit", "verify", "--fast"]):
        line = _refusal(runner.invoke(app, command))
        assert line.startswith(f"no audit checkpoint key at {keys}"), (command, line)
        assert not keys.exists(), command
    assert not (tmp_path / "out.jsonl").exists()
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "nowhere"))  # a mistyped directory is not created either
    _refusal(runner.invoke(app, ["audit", "key"]))
    assert not (tmp_path / "nowhere").exists()
    monkeypatch.setenv("WGS_DATA_DIR", str(data_dir))
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0  # installing the log creates it
    first = runner.invoke(app, ["audit", "key"])
    assert first.exit_code == 0, first.output
    assert runner.invoke(app, ["audit", "key"]).output == first.output
    keys.write_text("not a key\n")
    assert _refusal(runner.invoke(app, ["audit", "key"])).endswith("is not a PEM private key")


def _forge_entry(line: bytes) -> bytes:
    """Rewrite an entry line's canonical bytes and its leaf hash, as anyone holding the file can."""
    start, end = len(b'{"entry":'), line.rindex(b',"index":')
    canonical = line[start:end].replace(b'"tax.debts"', b'"tax.debtz"', 1)
    assert canonical != line[start:end]
    leaf = hashlib.sha256(b"\x00" + canonical).hexdigest().encode("ascii")
    return line[:start] + canonical + line[end:line.rindex(b'"leaf_hash":"') + 13] + leaf + b'","type":"entry"}\n'


def test_audit_export_is_covered_by_a_signature_and_a_forged_one_is_not_intact(data_dir: Path,
                                                                                tmp_path: Path) -> None:
    from audit import AuditLog, CheckpointPolicy
    from gateway.auditing.setup import audit_signer
    from gateway.db.engine import make_engine
    from gateway.settings import Settings
    from tests.audit_support import make_event

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    settings = Settings()
    engine = make_engine(settings.effective_database_url)
    try:
        log = AuditLog(engine, audit_signer(settings), policy=CheckpointPolicy(every_entries=100, every_seconds=None))
        log.append([make_event(0)])  # the first entry gets a checkpoint; the next 19 none
        log.append([make_event(n) for n in range(1, 20)])
        assert log.checkpoint().tree_size == 1
    finally:
        engine.dispose()
    export = tmp_path / "log.jsonl"
    exported = runner.invoke(app, ["audit", "export", "--out", str(export)])
    assert exported.exit_code == 0, exported.output
    # what it wrote, in words (it printed the summary object's repr): 20 entries, the first checkpoint and
    # the one signed at the export's size
    assert exported.stdout == f"exported 20 entries and 2 checkpoints to {export}\n"
    vkey = runner.invoke(app, ["audit", "key"]).output.strip()
    intact = runner.invoke(app, ["audit", "verify", "--export", str(export), "--key", vkey])
    assert intact.exit_code == 0, intact.output
    assert "log intact: 20 entries, 2 checkpoints" in intact.stdout
    assert "warning" not in intact.stderr

    # Drop the signed checkpoints, announce none, rewrite entry 3 with its leaf hash.
    lines = export.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["checkpoint_count"] = 0
    entries = lines[1 + 2:]
    entries[3] = _forge_entry(entries[3])
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(entries))
    for fast in ([], ["--fast"]):
        caught = runner.invoke(app, ["audit", "verify", "--export", str(forged), "--key", vkey, *fast])
        assert caught.exit_code == 1, caught.output
        assert "log NOT intact: uncovered at index 0" in caught.stderr
        assert "entries 0..19 are not covered" in caught.stderr

    header["tree_size"] = "twenty"
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(lines[1:]))
    refused = runner.invoke(app, ["audit", "verify", "--export", str(malformed), "--key", vkey])
    assert refused.exit_code == 1
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    assert "log NOT intact: format" in refused.stderr
    assert "Traceback" not in refused.output


# -- a bad setting or an unreachable database: one line per problem, exit code 1, no value echoed ------------


@pytest.mark.parametrize(("name", "value"), [
    ("WGS_CONNECTOR_RETRIES", "9"),
    ("WGS_LOG_LEVEL", "verbose"),
    ("WGS_OPA_TIMEOUT_SECONDS", "nan"),
    ("WGS_OPA_URL", "opa:8181"),
    ("WGS_DATABASE_URL", "postgresql+psycopg//wgs:pw@postgres:5432/wgs"),
    ("WGS_CONNECTOR_ENDPOINTS", "not json"),
    ("WGS_CONSOLE_PAGE_SIZE", "1"),  # the console's group too: it would otherwise make every console page a 500
    ("WGS_CONSOLE_SESSION_SECRET", "too-short-4-a-key"),
])
def test_serve_refuses_a_bad_setting_in_one_line_naming_the_variable(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, no_server: list[dict[str, object]],
        name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    if name == "WGS_OPA_URL":
        monkeypatch.setenv("WGS_POLICY_ENGINE", "opa")  # only the OPA server engine uses (and checks) the URL
    line = _refusal(runner.invoke(app, ["serve", "--port", "1"]))
    assert line.startswith(f"{name}: ")
    assert value not in line
    assert no_server == []


def test_serve_with_the_embedded_engine_ignores_an_opa_url_it_does_not_use(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, no_server: list[dict[str, object]]) -> None:
    monkeypatch.delenv("WGS_POLICY_ENGINE", raising=False)
    monkeypatch.setenv("WGS_OPA_URL", "opa:8181")
    result = runner.invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 0, result.output
    assert len(no_server) == 1


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["db", "upgrade"], ["clients", "list"],
                                     ["escalations", "scan"]])
def test_a_webhook_secret_in_a_refused_setting_is_never_printed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_server: list[dict[str, object]],
        command: list[str]) -> None:
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WGS_ESCALATION_WEBHOOKS",
                       '{"fiod": {"url": "fiod.example", "secret": "hunter2-hunter2-secret"}}')
    result = runner.invoke(app, command)
    assert result.exit_code == 1
    assert "hunter2-hunter2-secret" not in result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == ["WGS_ESCALATION_WEBHOOKS (fiod.url): String should match pattern "
                                                  "'^https?://'"]


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"], ["users", "list"], ["escalations", "gaps"]])
def test_an_unreachable_database_is_one_line_without_the_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_server: list[dict[str, object]],
        command: list[str]) -> None:
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WGS_DATABASE_URL", "postgresql+psycopg://wgs:S3cr%40tPW@127.0.0.1:1/wgs")
    line = _refusal(runner.invoke(app, command))
    assert line.startswith("database unreachable: ")
    assert "S3cr" not in line
    assert "tPW" not in line


@pytest.fixture
def silent_database() -> Iterator[int]:
    """The port of a loopback listener that completes TCP connections and then never says a word: a
    database host behind a black-holing firewall or a hung server, as the driver sees it."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield int(listener.getsockname()[1])


@pytest.mark.timeout(60)  # psycopg's own default would wait 130 s per attempt
@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve", "--port", "1"]])
def test_a_silent_database_fails_within_the_connect_timeout_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_server: list[dict[str, object]], silent_database: int,
        command: list[str]) -> None:
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WGS_DATABASE_URL", f"postgresql+psycopg://wgs:S3cr%40tPW@127.0.0.1:{silent_database}/wgs")
    monkeypatch.setenv("WGS_DB_CONNECT_TIMEOUT_SECONDS", "2")
    started = time.monotonic()
    line = _refusal(runner.invoke(app, command))
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 15, elapsed  # waited for the server, then gave up at the setting's timeout
    assert line.startswith("database unreachable: ")
    assert "timeout" in line
    assert "S3cr" not in line
    assert "tPW" not in line
    assert no_server == []


def test_a_database_message_loses_the_password_and_the_url_as_written() -> None:
    from gateway.startup import without_password

    url = "postgresql+psycopg://wgs:S3cr%40tPW@db.example:5432/wgs"
    message = without_password(f"cannot use {url}; password S3cr@tPW refused", url)
    assert "S3cr" not in message
    assert "tPW" not in message
    assert "postgresql+psycopg://wgs:***@db.example:5432/wgs" in message


@pytest.mark.parametrize("command", [["users", "list"], ["clients", "list"], ["clients", "disable", "politie-bvh"],
                                     ["escalations", "gaps"], ["escalations", "scan"], ["register", "versions"],
                                     ["pseudonyms", "status"]])
def test_a_command_on_an_unmigrated_database_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  command: list[str]) -> None:
    """Run before `db upgrade`, or from another directory than the one holding `var/` (the default data
    directory is relative), a command that reads the database used to end in SQLAlchemy's traceback of a
    hundred lines ("no such table"); like `serve`, it says what to do in one line."""
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    result = runner.invoke(app, command)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    *records, line = result.stderr.strip().splitlines()
    assert line.startswith("database not migrated: run `wgs-gateway db upgrade` first"), line
    assert all(json.loads(record)["level"] for record in records)  # a command that logs: its JSON lines only
    assert not (tmp_path / "data").exists()  # no empty database file (nor its directory) for the next command


def test_any_other_database_error_of_a_command_is_one_line(data_dir: Path) -> None:
    """A migrated database that still fails a command (here a table dropped behind Alembic's back) ends it
    with the driver's first line, not a traceback."""
    import sqlite3

    with sqlite3.connect(data_dir / "gateway.sqlite") as database:
        database.execute("DROP TABLE oauth_clients")
    result = runner.invoke(app, ["clients", "list"])
    assert result.exit_code == 1, result.output
    *records, line = result.stderr.strip().splitlines()
    assert line == "database error: no such table: oauth_clients"
    assert all(json.loads(record)["level"] for record in records)  # log records (when set up), no traceback


def test_escalations_scan_logs_json_lines_on_stderr_and_prints_only_its_count(data_dir: Path) -> None:
    """From cron, stdout is the report: the scan's log records (it starts the gateway's services) are the
    gateway's JSON lines on stderr, as docs/security.md says of every log record, not console lines on stdout."""
    scanned = runner.invoke(app, ["escalations", "scan"])
    assert scanned.exit_code == 0, scanned.output
    assert scanned.stdout == ("0 overdue case(s) moved up a tier, 0 reported at tier 3, 0 decision(s) expired, "
                              "0 case(s) failed\n")
    records = [json.loads(line) for line in scanned.stderr.splitlines()]
    assert "register_loaded" in [record["event"] for record in records]


# -- read-only commands leave nothing behind -----------------------------------------------------------------

_READ_ONLY = [["pseudonyms", "status"], ["clients", "list"], ["users", "list"], ["escalations", "list"],
              ["escalations", "gaps"], ["register", "versions"], ["keys", "list"], ["audit", "key"],
              ["audit", "verify"], ["audit", "verify", "--fast"], ["db", "current"]]


def _files_under(directory: Path) -> set[Path]:
    return {path.relative_to(directory) for path in directory.rglob("*")}


@pytest.mark.parametrize("command", _READ_ONLY, ids=" ".join)
def test_a_read_only_command_in_an_empty_data_directory_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    """Run in a wrong or fresh directory, a command that only reads says what is missing in one line and exit
    code 1; it creates no key, key ring, database file or directory (a key made there would be a new
    identity nobody pinned, and an empty database file would hide the mistake at the next command)."""
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    line = _refusal(runner.invoke(app, command))
    assert line.startswith(("database not migrated", "no ")), line
    assert _files_under(tmp_path) == set(), command


@pytest.mark.parametrize("command", [["pseudonyms", "status"], ["keys", "list"]], ids=" ".join)
def test_a_status_on_a_migrated_database_without_keys_creates_none(data_dir: Path, command: list[str]) -> None:
    """After `db upgrade` but before `keys init`: the key ring or signing key is reported missing, not made."""
    before = _files_under(data_dir)
    line = _refusal(runner.invoke(app, command))
    assert line.startswith("no "), line
    assert "keys init" in line
    assert _files_under(data_dir) == before
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    shown = runner.invoke(app, command)
    assert shown.exit_code == 0, shown.output
    made = _files_under(data_dir)
    assert runner.invoke(app, command).output == shown.output  # reading twice changes nothing
    assert _files_under(data_dir) == made


def test_pseudonyms_rotate_without_a_key_ring_refuses_and_creates_none(data_dir: Path) -> None:
    """On a fresh install (or a wrong data directory) there is nothing to rotate: `rotate` says the ring is
    missing instead of making version 1 and rotating it to 2 at once; after `keys init` it rotates 1 -> 2."""
    import asyncio

    from gateway.pseudonyms.keystore import FileKeyStore

    before = _files_under(data_dir)
    line = _refusal(runner.invoke(app, ["pseudonyms", "rotate"]))
    assert line.startswith("no pseudonym key ring"), line
    assert _files_under(data_dir) == before
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    rotated = runner.invoke(app, ["pseudonyms", "rotate"])
    assert rotated.exit_code == 0, rotated.output
    ring = asyncio.run(FileKeyStore(data_dir / "keys" / "pseudonyms").load())
    assert (sorted(ring.versions), ring.current) == ([1, 2], 2)


def test_audit_verify_with_a_checkpoint_file_that_is_no_checkpoint_says_so(data_dir: Path, tmp_path: Path) -> None:
    """A file kept by mistake (here the 401 answer saved instead of a checkpoint) is named as not being a
    signed checkpoint, a format verdict; not a bad signature "at index 0" about a newline."""
    from audit import AuditLog
    from gateway.auditing.setup import audit_signer
    from gateway.db.engine import make_engine
    from gateway.settings import Settings
    from tests.audit_support import make_event

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    settings = Settings()
    engine = make_engine(settings.effective_database_url)
    try:
        log = AuditLog(engine, audit_signer(settings))
        log.append([make_event(0), make_event(1)])
        kept = tmp_path / "kept.checkpoint"
        kept.write_text(log.checkpoint().note)
    finally:
        engine.dispose()
    problem = tmp_path / "answer.json"
    problem.write_text('{"type":"https://wgs.example/problems/unauthorized","title":"Unauthorized","status":401}')
    binary = tmp_path / "binary.checkpoint"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    export = tmp_path / "log.jsonl"
    assert runner.invoke(app, ["audit", "export", "--out", str(export)]).exit_code == 0
    for source in ([], ["--export", str(export)]):
        assert runner.invoke(app, ["audit", "verify", *source, "--checkpoint", str(kept)]).exit_code == 0
        for wrong in (problem, binary):
            result = runner.invoke(app, ["audit", "verify", *source, "--checkpoint", str(kept),
                                         "--checkpoint", str(wrong)])
            line = _refusal(result)
            assert "format" in line, line
            assert f"{wrong} is not a signed checkpoint" in line, line
            assert "signature" not in line, line


# -- help ----------------------------------------------------------------------------------------------------

def _command_paths() -> list[list[str]]:
    """Every group and command under `wgs-gateway`, as the words that name it."""
    import typer.main

    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


INTERNAL_MARKERS = ("``", ":func:", ":class:", ":mod:", ":meth:", "log_config", "uvicorn", "\f")


@pytest.mark.parametrize("path", _command_paths(), ids=lambda path: " ".join(path) or "wgs-gateway")
def test_every_command_says_what_it_does_and_nothing_internal(path: list[str], monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A newcomer's `--help`: a one-line summary for every command and group (also in its parent's list),
    a help text for every argument and option, and none of the docstring's notes for developers (Sphinx
    markup, library internals), which the docstrings keep after a form feed."""
    import typer.core
    import typer.main

    monkeypatch.setenv("COLUMNS", "200")
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    shown = result.stdout
    for marker in INTERNAL_MARKERS:
        assert marker not in shown, (path, marker)
    command = typer.main.get_command(app)
    for word in path:
        assert isinstance(command, typer.core.TyperGroup), path
        command = command.commands[word]
    summary = (command.help or "").partition("\f")[0].strip().split("\n\n")[0]
    assert summary, path
    assert len(" ".join(summary.split())) <= 100, (path, summary)  # one line in the parent's list
    assert " ".join(summary.split()) in " ".join(shown.split())
    for parameter in command.params:
        if parameter.name != "help" and not parameter.name.endswith("_completion"):
            assert getattr(parameter, "help", None), (path, parameter.name)


def _access_entries() -> list[dict[str, Any]]:
    """The audit log's entries of operators' changes to who may sign in (``channel: cli``), oldest first."""
    from sqlalchemy import select

    from audit.tables import audit_entries
    from gateway.db.engine import existing_engine_for
    from gateway.settings import Settings

    engine = existing_engine_for(Settings())
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index))
            entries = [json.loads(row.canonical)["event"] for row in rows]
    finally:
        engine.dispose()
    return [entry for entry in entries if entry["extra"].get("channel") == "cli"]


def _client_active(system_id: str) -> bool:
    from gateway.auth.repository import get_client
    from gateway.db.engine import existing_engine_for, make_session_factory, transaction
    from gateway.settings import Settings

    with transaction(make_session_factory(existing_engine_for(Settings()))) as session:
        found = get_client(session, system_id)
    assert found is not None
    return found.active


def test_clients_add_never_enables_a_disabled_client_by_the_way(data_dir: Path) -> None:
    """Re-adding a disabled client (say, to give it new keys after a leak) refuses unless told to keep it
    disabled; only `clients enable` enables it."""
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    assert runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret"]).exit_code == 0
    assert runner.invoke(app, ["clients", "disable", "kvk-handelsregister"]).exit_code == 0
    again = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret"])
    assert again.exit_code == 1
    line = _refusal(again)
    assert "disabled" in line
    assert "clients enable" in line
    assert "--keep-disabled" in line
    assert "shown once" not in again.output  # no new secret was made
    assert _client_active("kvk-handelsregister") is False
    rekeyed = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret", "--keep-disabled"])
    assert rekeyed.exit_code == 0, rekeyed.output
    assert "shown once" in rekeyed.output
    assert "disabled" in rekeyed.output
    assert _client_active("kvk-handelsregister") is False
    enabled = runner.invoke(app, ["clients", "enable", "kvk-handelsregister"])
    assert enabled.exit_code == 0, enabled.output
    assert _client_active("kvk-handelsregister") is True
    # --keep-disabled on a client that is not disabled is a mistake, not a way to disable it
    kept = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret", "--keep-disabled"])
    assert kept.exit_code == 1
    assert "not disabled" in _refusal(kept)
    assert _client_active("kvk-handelsregister") is True


def test_enabling_and_disabling_clients_and_accounts_is_audited(data_dir: Path) -> None:
    from gateway.auth.repository import get_account
    from gateway.db.engine import existing_engine_for, make_session_factory, transaction
    from gateway.settings import Settings

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    assert runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret"]).exit_code == 0
    assert runner.invoke(app, ["users", "add", "po-amsterdam", "--organisation", "gemeente-amsterdam", "--role",
                               "privacy-officer", "--password-stdin"], input="a long enough password\n").exit_code == 0
    with transaction(make_session_factory(existing_engine_for(Settings()))) as session:
        account = get_account(session, "po-amsterdam")
    assert account is not None
    for command in (["clients", "disable", "kvk-handelsregister"], ["clients", "enable", "kvk-handelsregister"],
                    ["users", "disable", "po-amsterdam"], ["users", "enable", "po-amsterdam"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    unchanged = runner.invoke(app, ["users", "enable", "po-amsterdam"])  # already enabled: nothing to log
    assert unchanged.exit_code == 0
    assert "already" in unchanged.output
    for nobody in (["clients", "enable", "no-such-system"], ["users", "enable", "po-nobody"]):
        assert runner.invoke(app, nobody).exit_code == 1
    entries = _access_entries()
    assert [(e["extra"]["action"], e["requester"]["org"]) for e in entries] == [
        ("client-disabled", "kvk"), ("client-enabled", "kvk"),
        ("account-disabled", "gemeente-amsterdam"), ("account-enabled", "gemeente-amsterdam")]
    assert [e["extra"].get("client") for e in entries[:2]] == ["kvk-handelsregister"] * 2
    assert [e["extra"].get("account_id") for e in entries[2:]] == [account.id] * 2
    assert "po-amsterdam" not in json.dumps(entries)  # the account by reference, never its username


def test_an_access_change_that_cannot_be_audited_is_not_made(data_dir: Path) -> None:
    """No audit checkpoint key (the log cannot be written): the client stays as it was."""
    assert runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret"]).exit_code == 0
    refused = runner.invoke(app, ["clients", "disable", "kvk-handelsregister"])
    assert refused.exit_code == 1
    assert "keys init" in _refusal(refused)
    assert _client_active("kvk-handelsregister") is True


def test_clients_add_racing_a_disable_leaves_the_client_disabled(data_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`clients disable` committing between the moment `clients add` read the client (active) and its write: the
    add must not write the state it read back, which enabled the client again with no audit entry.

    The re-key's write (and the state it checks) is made in the audit log's transaction, under the log's write
    lock that `clients disable` takes too; the disable commits after the add's first read, before that."""
    from gateway.auth import access_changes
    from gateway.db.engine import existing_engine_for
    from gateway.settings import Settings

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    assert runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret"]).exit_code == 0
    audited = access_changes.audited

    def disabled_meanwhile(*args: Any) -> None:
        monkeypatch.setattr(access_changes, "audited", audited)  # the disable's own entry: as it is
        engine = existing_engine_for(Settings())  # the operator's `clients disable`, in another process
        try:
            assert access_changes.set_active(Settings(), engine, "client", "kvk-handelsregister", False).changed
        finally:
            engine.dispose()
        audited(*args)

    monkeypatch.setattr(access_changes, "audited", disabled_meanwhile)
    raced = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret"])
    assert raced.exit_code == 1, raced.output
    assert "shown once" not in raced.output  # no secret for a registration that did not happen
    assert _client_active("kvk-handelsregister") is False
    assert [entry["extra"]["action"] for entry in _access_entries()] == ["client-disabled"]


def test_clients_add_on_an_existing_client_is_an_audited_re_key(data_dir: Path) -> None:
    """A new key or secret for a registered client (after a leak) ends its earlier tokens, and is on record; a
    new client's registration is no entry. Without the checkpoint key the re-key is refused, and nothing changes."""
    added = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret"])
    assert added.exit_code == 0, added.output
    refused = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret"])
    assert refused.exit_code == 1  # no audit key yet: the re-key cannot be audited, so it is not made
    assert "shown once" not in refused.output
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    rekeyed = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret"])
    assert rekeyed.exit_code == 0, rekeyed.output
    assert "tokens it got before are refused" in rekeyed.output
    assert "shown once" in rekeyed.output
    [entry] = _access_entries()
    assert entry["extra"] == {"action": "client-rekeyed", "channel": "cli", "client": "kvk-handelsregister",
                              "key_generation": 1}


def test_clients_are_bound_to_certificates_with_an_audit_entry_and_unbound_the_same_way(data_dir: Path) -> None:
    """``clients add --certificate-bound`` binds a new client (no entry: a new client has no tokens); ``clients
    bind`` and ``clients unbind`` change an existing one, each with its entry, and say so; a re-key without the
    flag leaves the binding as it is."""
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    added = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret", "--certificate-bound"])
    assert added.exit_code == 0, added.output
    assert "bound to its TLS client certificate" in added.output
    assert "WGS_CLIENT_CERT_HEADER is not set" in added.output  # bound, but this gateway forwards no certificates
    assert runner.invoke(app, ["clients", "add", "politie-bvh", "--generate-secret"]).exit_code == 0
    listing = runner.invoke(app, ["clients", "list"]).output
    assert re.search(r"kvk-handelsregister .* True +│ True", listing), listing
    assert re.search(r"politie-bvh .* True +│ False", listing), listing
    assert _access_entries() == []

    bound = runner.invoke(app, ["clients", "bind", "politie-bvh"])
    assert bound.exit_code == 0, bound.output
    assert "refused within" in bound.output  # its unbound tokens end
    again = runner.invoke(app, ["clients", "bind", "politie-bvh"])
    assert again.exit_code == 0
    assert "already" in again.output
    unbound = runner.invoke(app, ["clients", "unbind", "kvk-handelsregister"])
    assert unbound.exit_code == 0, unbound.output
    rekeyed = runner.invoke(app, ["clients", "add", "politie-bvh", "--generate-secret"])
    assert rekeyed.exit_code == 0, rekeyed.output
    assert "bound to its TLS client certificate" in rekeyed.output  # kept: unbinding is its own step
    assert _refusal(runner.invoke(app, ["clients", "bind", "no-such-system"])) == "no client no-such-system"
    assert [(e["extra"]["action"], e["extra"]["client"], e["requester"]["org"]) for e in _access_entries()] == [
        ("client-certificate-bound", "politie-bvh", "politie"),
        ("client-certificate-unbound", "kvk-handelsregister", "kvk"),
        ("client-rekeyed", "politie-bvh", "politie")]


def test_clients_are_pinned_to_certificates_with_thumbprints_in_the_entries(data_dir: Path) -> None:
    """``clients bind --certificate`` (repeatable, and a file may hold several: a renewal overlapping) pins a
    bound client; ``clients add --certificate-bound --certificate`` likewise; ``clients list`` counts the pins;
    ``clients unbind`` clears them. A bind without pins says, as a warning, that any verified certificate will do.
    Entries and output carry thumbprints, never a certificate's subject."""
    from tests.tls_certificates import issued

    subject = "J. Jansen, beheerder"
    first, renewed, other = issued(subject), issued(subject), issued(subject)
    (data_dir / "first.pem").write_bytes(first.pem)
    (data_dir / "both.pem").write_bytes(renewed.pem + other.pem)
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    added = runner.invoke(app, ["clients", "add", "kvk-handelsregister", "--generate-secret", "--certificate-bound",
                                "--certificate", str(data_dir / "first.pem")])
    assert added.exit_code == 0, added.output
    assert f"pinned to 1 certificate(s) ({first.thumbprint})" in added.stdout
    assert "warning" not in added.stderr
    assert runner.invoke(app, ["clients", "add", "politie-bvh", "--generate-secret"]).exit_code == 0

    unpinned = runner.invoke(app, ["clients", "bind", "politie-bvh"])
    assert unpinned.exit_code == 0, unpinned.output
    assert "bound to its TLS client certificate;" in unpinned.stdout
    assert unpinned.stderr.startswith("warning: client politie-bvh is not pinned to a certificate: it gets tokens "
                                      "over any certificate the proxy verified")
    pinned = runner.invoke(app, ["clients", "bind", "politie-bvh", "--certificate", str(data_dir / "first.pem"),
                                 "--certificate", str(data_dir / "both.pem")])
    assert pinned.exit_code == 0, pinned.output
    assert "pinned to 3 certificate(s)" in pinned.stdout
    assert "refused within" in pinned.stdout  # the tokens it got before end
    assert pinned.stderr == ""
    kept = runner.invoke(app, ["clients", "bind", "politie-bvh"])  # binding again does not widen it
    assert "already bound to its TLS client certificate, pinned to 3" in kept.stdout
    assert kept.stderr == ""
    listing = runner.invoke(app, ["clients", "list"]).output
    assert re.search(r"kvk-handelsregister .* True +│ True +│ 1", listing), listing
    assert re.search(r"politie-bvh .* True +│ True +│ 3", listing), listing

    unbound = runner.invoke(app, ["clients", "unbind", "politie-bvh"])
    assert unbound.exit_code == 0, unbound.output
    assert re.search(r"politie-bvh .* True +│ False +│ 0", runner.invoke(app, ["clients", "list"]).output)
    entries = [e["extra"] for e in _access_entries()]
    assert entries == [
        {"action": "client-certificate-bound", "channel": "cli", "client": "politie-bvh", "key_generation": 1},
        {"action": "client-certificate-bound", "channel": "cli", "client": "politie-bvh", "key_generation": 2,
         "certificate_thumbprints": sorted([first.thumbprint, renewed.thumbprint, other.thumbprint])},
        {"action": "client-certificate-unbound", "channel": "cli", "client": "politie-bvh"}]
    assert "Jansen" not in json.dumps(_access_entries())


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read the certificate file (No such file or directory)"),
    (b"MIIBszCCAVmgAwIBAgIU", "the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
    (b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n",
     "a certificate in the file could not be read as a PEM X.509 certificate"),
    ("key", "the file contains a private key; give the certificate only (and keep the key where it was)"),
], ids=["missing", "no PEM", "broken certificate", "private key"])
def test_clients_bind_refuses_a_certificate_file_it_cannot_pin_in_one_line(data_dir: Path, content: bytes | str | None,
                                                                           expected: str) -> None:
    """One line naming the file, never its content (a private key picked by mistake); nothing changes."""
    from tests.tls_certificates import issued

    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    assert runner.invoke(app, ["clients", "add", "politie-bvh", "--generate-secret"]).exit_code == 0
    certificate = data_dir / "client.pem"
    partner = issued("politie-bvh")
    if content == "key":
        certificate.write_bytes(partner.pem + partner.key_pem)
    elif isinstance(content, bytes):
        certificate.write_bytes(content)
    for command in (["clients", "bind", "politie-bvh"],
                    ["clients", "add", "politie-bvh", "--generate-secret", "--certificate-bound"]):
        line = _refusal(runner.invoke(app, [*command, "--certificate", str(certificate)]))
        assert line == f"{certificate}: {expected}"  # and so nothing of the file
    assert re.search(r"politie-bvh .* True +│ False +│ 0", runner.invoke(app, ["clients", "list"]).output)
    assert _access_entries() == []


def test_clients_add_pins_only_with_certificate_bound(data_dir: Path) -> None:
    """Refused rather than ignored (the operator meant the client bound to it), and nothing is registered."""
    from tests.tls_certificates import issued

    (data_dir / "client.pem").write_bytes(issued("politie-bvh").pem)
    refused = runner.invoke(app, ["clients", "add", "politie-bvh", "--generate-secret",
                                  "--certificate", str(data_dir / "client.pem")])
    assert refused.exit_code == 2
    assert "pins the certificates of a certificate-bound client: give --certificate-bound too" in refused.stderr
    assert "politie-bvh" not in runner.invoke(app, ["clients", "list"]).output


def test_the_database_file_is_its_owners_only_in_a_directory_others_can_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data directory that was there before (the image's /var/lib/wgs, one made with a plain ``mkdir``) keeps
    its 0755; the database made in it holds accounts' password hashes, the enrolled match filters and what the
    partners exchanged, so it is made 0600 whatever the umask (and SQLite gives its -wal and -shm files the
    database file's mode)."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    monkeypatch.setenv("WGS_DATA_DIR", str(data))
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    previous = os.umask(0o022)
    try:
        result = runner.invoke(app, ["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert runner.invoke(app, ["clients", "list"]).exit_code == 0  # opens it again: -wal and -shm
    finally:
        os.umask(previous)
    assert stat.S_IMODE(data.stat().st_mode) == 0o755  # the operator's directory is left as it is
    made = sorted(data.glob("gateway.sqlite*"))
    assert data / "gateway.sqlite" in made
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_data_directory_the_gateway_makes_is_its_owners_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The directory holds the database and the keys, so a directory the gateway makes itself is 0700."""
    data = tmp_path / "fresh" / "data"
    monkeypatch.setenv("WGS_DATA_DIR", str(data))
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    previous = os.umask(0o022)
    try:
        for command in (["db", "upgrade"], ["keys", "init"]):
            result = runner.invoke(app, command)
            assert result.exit_code == 0, result.output
    finally:
        os.umask(previous)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "keys").stat().st_mode) == 0o700
