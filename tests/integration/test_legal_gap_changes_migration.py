"""Migration 0037 (legal gaps keep every status change) on a database that holds gaps already: a gap's note,
the only one it kept, becomes the first change of its history — marked as carried over (no organisation, no
earlier status) — a gap without a note gets no history, and later changes are added after it. Down drops the
history and keeps the gaps with their latest note."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import inspect, text

from escalation import legal_gaps as gap_store
from gateway.db.engine import alembic_config, make_engine, make_session_factory, transaction
from tests.migration_rows import insert_row

BEFORE = "0036_client_certificate_pins"  # the revision before the history
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _gap(gap_id: str, status: str, note: str | None) -> dict[str, object]:
    """A gap row as the code before the history wrote it."""
    return {"id": gap_id, "partnership": "riec-amsterdam-amstelland", "title": "No basis", "description": "None.",
            "status": status, "version": 2 if note else 1, "created_at": NOW - timedelta(days=3),
            "updated_at": NOW, "created_by_org": "politie", "note": note}


def test_a_gaps_note_becomes_the_first_change_of_its_history(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, BEFORE)
    engine = make_engine(empty_db_url)
    sessions = make_session_factory(engine)
    try:
        with engine.begin() as connection:
            insert_row(connection, "legal_gaps", _gap("gap-noted", "on-agenda", "Steering group 10 December"))
            insert_row(connection, "legal_gaps", _gap("gap-bare", "identified", None))
        command.upgrade(config, "head")
        with transaction(sessions) as session:
            noted, bare = gap_store.get_gap(session, "gap-noted"), gap_store.get_gap(session, "gap-bare")
        assert bare.history == []
        [carried] = noted.history
        assert (carried.status_before, carried.status, carried.note, carried.actor_org, carried.actor_user) == (
            None, gap_store.GapStatus.ON_AGENDA, "Steering group 10 December", None, None)
        assert carried.at.replace(tzinfo=UTC) == NOW

        with transaction(sessions) as session:
            moved = gap_store.change_status(session, "gap-noted", 2, gap_store.GapStatus.RESOLVED,
                                            now=NOW + timedelta(days=1), note="Settled", actor_org="riec-aa",
                                            actor_user="desk-riec")
        assert [(c.note, c.actor_org) for c in moved.history] == [("Steering group 10 December", None),
                                                                 ("Settled", "riec-aa")]
        assert moved.note == "Settled"

        command.downgrade(config, BEFORE)
        assert "legal_gap_changes" not in inspect(engine).get_table_names()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id, note FROM legal_gaps ORDER BY id")).all() == [
                ("gap-bare", None), ("gap-noted", "Settled")]
        command.upgrade(config, "head")  # and up again
        with transaction(sessions) as session:
            assert [c.note for c in gap_store.get_gap(session, "gap-noted").history] == ["Settled"]
    finally:
        engine.dispose()
