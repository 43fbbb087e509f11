"""``db verify-backup``'s note on a backup at other migration revisions than the code's says what to do for
each direction: it advised `db upgrade` also for a backup a newer gateway made, which that cannot help with."""

from __future__ import annotations

from gateway.backup.check import revision_note
from gateway.db.engine import expected_heads

HEADS = tuple(sorted(expected_heads()))
UPGRADE = "run `wgs-gateway db upgrade`"


def test_an_older_backup_is_upgraded_after_the_restore() -> None:
    note = revision_note(("0037_legal_gap_changes",), HEADS)
    assert UPGRADE in note
    assert "newer" not in note


def test_a_database_without_revisions_is_upgraded_too() -> None:
    assert UPGRADE in revision_note((), HEADS)


def test_a_backup_a_newer_gateway_made_is_restored_with_that_version_not_upgraded() -> None:
    note = revision_note(("0099_from_a_later_release",), HEADS)
    assert "0099_from_a_later_release" in note
    assert "db upgrade` cannot take a database back" in note
    assert UPGRADE not in note
    assert "a newer version of the gateway made this backup" in note


def test_revisions_partly_unknown_are_not_told_to_upgrade() -> None:
    note = revision_note(("0037_legal_gap_changes", "0099_from_a_later_release"), HEADS)
    assert UPGRADE not in note
    assert "restore it with the version that made the backup" in note
