"""CLI: ``wgs-gateway escalations scan|list|gaps`` — for operators (cron instead of the in-process
scheduler) and for preparing the steering group's agenda."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from escalation.cases import Case
from escalation.legal_gaps import GapStatus, list_gaps
from escalation.queries import CaseFilter, CaseScope, list_cases
from gateway.db.engine import existing_engine_for, make_session_factory, require_database, transaction
from gateway.escalations.gap_export import gap_view, write_gaps_csv
from gateway.settings import Settings
from gateway.spreadsheets import spreadsheet_bytes

if TYPE_CHECKING:  # the service is imported with the full wiring, when a command needs it
    from gateway.escalations.deadlines import ScanResult
    from gateway.register.model import Register

escalations_app = typer.Typer(help="The escalation workflow: overdue cases and the register of legal gaps.",
                              no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@escalations_app.command("scan")
def scan() -> None:
    """Escalate cases past their deadline and expire unused decisions, now (as the gateway's timer does).

    Below tier 3 a case past its deadline moves one tier up; at tier 3 its missed deadline is reported once
    to the parties and the steering group. An allow decision past its validity expires. Exits 1 when the
    step of any case failed (their ids are printed; the others are taken all the same)."""
    from gateway.app import start_services  # the full service wiring, as the server has it
    from gateway.auditing.setup import audit_services
    from gateway.container import build_container
    from gateway.escalations.setup import escalation_service
    from gateway.logging import configure_logging

    settings = Settings()
    require_database(settings)  # the services would create an empty SQLite file before refusing it
    # It starts the gateway's services, which log: as the gateway's JSON lines on stderr (scrubbed), so that
    # stdout, which cron mails or a script reads, holds only the count.
    configure_logging(settings.log_level, settings.log_json)

    async def run() -> ScanResult:
        container = build_container(settings)
        start_services(container)
        writer = audit_services(container).writer
        writer.start()
        service = escalation_service(container)
        try:
            return await service.scan()
        finally:
            await service.notifier.aclose()  # the parties' webhooks are delivered before the loop ends
            await writer.aclose()
            await container.services["connectors"].aclose()
            await container.services["policy"].aclose()
            container.close()

    done = asyncio.run(run())
    out.print(f"{len(done.moved)} overdue case(s) moved up a tier, {len(done.reported)} reported at tier 3, "
              f"{len(done.expired)} decision(s) expired, {len(done.failed)} case(s) failed")
    if done.failed:
        # On stdout with the count (what cron mails): ids only, the reasons are in the gateway's log
        # (`escalation_scan_case_failed`, the kind of failure only). Exit 1 so that a job that runs the scan
        # notices a case failing run after run, which used to be a log line and exit 0.
        out.print(f"failed (the next run tries them again): {', '.join(done.failed)}", markup=False,
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@escalations_app.command("list")
def list_command(overdue: bool = typer.Option(False, help="Only active cases past their deadline."),
                 partnership: str | None = typer.Option(None, help="Only this partnership's cases.")) -> None:
    """List every escalation case (an operator sees all), oldest first, a table per page of cases.

    --overdue judges by today's date in the register's office-hours timezone, as the gateway does (not the
    machine's, nor UTC)."""
    from datetime import UTC, datetime

    from escalation.calendar import local_date
    from gateway.register.loader import load_register

    settings = Settings()
    register = load_register(settings.register_file)[0] if overdue or partnership else None
    _refuse_unknown(register, partnership)
    today = local_date(datetime.now(UTC), register.office_hours.timezone) if register and overdue else None
    engine = existing_engine_for(settings)
    try:
        for number, page in enumerate(_pages(make_session_factory(engine),
                                             CaseFilter(partnership=partnership, overdue_on=today))):
            if page or number == 0:  # no cases at all: the header says so; a last page found empty: nothing
                out.print(_table(page))
    finally:
        engine.dispose()


def _refuse_unknown(register: Register | None, partnership: str | None) -> None:
    """Exit 1 in one line when ``partnership`` is no partnership of the register. Why: the filter compares
    ids, and a mistyped one selected nothing — an empty table (or a CSV of only its header) and exit 0, which
    reads as "no cases" for a partnership that has them. A retired partnership stays in the register, so its
    cases are still listed."""
    if partnership is None or register is None or partnership in register.partnerships:
        return
    err.print(f"unknown partnership `{partnership}`: not in the register (version {register.version}); "
              "`wgs-gateway register show` lists them", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


LIST_PAGE = 1_000
"""Cases read per query by ``escalations list``, which reads page after page until none is left."""


def _pages(sessions: sessionmaker[Session], filters: CaseFilter) -> Iterator[list[Case]]:
    """Every case ``filters`` selects, oldest first, a page at a time by the id cursor, each page read in a
    transaction of its own and handed on before the next is read.

    One query with a bound stopped at the 10,000 oldest without a word, and the cases left out were the
    newest: those an operator lists the cases for. Then every page was collected before anything was
    printed: a large list showed nothing for as long as it took, and held every case in memory. Now a page
    is printed as it comes (the caller), and no transaction stays open while the terminal, a pager or a
    pipe takes its time."""
    after: str | None = None
    while True:
        with transaction(sessions) as session:
            page = list_cases(session, CaseScope(everything=True), filters, limit=LIST_PAGE, after=after)
        yield page
        if len(page) < LIST_PAGE:
            return
        after = page[-1].id


def _table(cases: list[Case]) -> Table:
    table = Table("case", "partnership", "requester", "holder", "trigger", "state", "tier", "deadline")
    for case in cases:
        table.add_row(case.id, case.partnership, case.requester_org, case.holder_org, case.trigger,
                      case.state.value, str(case.tier), case.deadline.isoformat())
    return table


@escalations_app.command("gaps")
def gaps(status: GapStatus | None = typer.Option(None, help="Only gaps with this status."),
         partnership: str | None = typer.Option(None, help="Only this partnership's gaps.")) -> None:
    """Print the register of legal gaps as CSV, for the steering group's agenda.

    The bytes of the API's download (GET /v1/legal-gaps/export): the UTF-8 byte-order mark first and CRLF
    line endings, so that the file it is redirected to opens in a spreadsheet with its accents intact."""
    settings = Settings()
    if partnership:
        from gateway.register.loader import load_register

        _refuse_unknown(load_register(settings.register_file)[0], partnership)
    engine = existing_engine_for(settings)
    with transaction(make_session_factory(engine)) as session:
        found = list_gaps(session, partnerships={partnership} if partnership else None, status=status)
    engine.dispose()
    text = io.StringIO()
    write_gaps_csv(text, [gap_view(gap) for gap in found])  # the API's export; an operator sees every case
    # The download's bytes, mark and line endings included: the output is redirected to a file for the agenda.
    # As bytes, so that no platform's text mode turns the CRLFs into anything else.
    typer.echo(spreadsheet_bytes(text.getvalue()), nl=False)
