"""A checkpoint row above the log's size stops appends only when the log's key signed it (a real rollback).

Inserting a row into ``audit_checkpoints`` needs no key, only write access to the database (the append-only
triggers allow an INSERT). A forged or garbled row larger than the log is not the log's word: it is passed over
(reported once, sizes only) and the log goes on, checkpoint policy included; a validly signed one still means
entries were removed, and the log refuses as before. Appends do not verify a signature each time for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, insert

from audit import AuditLog, AuditWriteError, Checkpoint, CheckpointPolicy, sign_checkpoint
from audit.keys import KeyHistory
from audit.tables import audit_checkpoints, audit_entries
from gateway.db.engine import make_engine
from tests.audit_support import log_signer, make_event, triggers_disabled

SIGNER = log_signer()
POLICY = CheckpointPolicy(every_entries=4, every_seconds=None)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    AuditLog(engine, SIGNER, policy=POLICY).append([make_event(i) for i in range(6)])  # checkpoint at 6
    yield engine
    engine.dispose()


def _plant(engine: Engine) -> None:
    """A garbled row and one signed by another key with the log's origin, both far above the log's size."""
    impostor = log_signer("impostor")
    forged = sign_checkpoint(Checkpoint(SIGNER.name, 999, b"\x01" * 32), impostor)
    with engine.begin() as connection:
        for size, note in ((999, forged), (1000, "not a checkpoint at all")):
            connection.execute(insert(audit_checkpoints).values(tree_size=size, root_hash=b"\x01" * 32, note=note,
                                                                issued_at=datetime.now(UTC)))


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "audit.log" and r.levelno == logging.ERROR]


def test_a_planted_row_above_the_log_is_passed_over_and_reported_once(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    _plant(engine)
    other = AuditLog(engine, SIGNER, policy=POLICY)  # another process: it knows nothing of the log
    with caplog.at_level(logging.ERROR, logger="audit.log"):
        other.append([make_event(6)])
        other.append([make_event(7)])
        AuditLog(engine, SIGNER, policy=POLICY).append([make_event(8), make_event(9)])  # 10: a checkpoint is due
    assert other.size() == 10
    assert 10 in [c.tree_size for c in other.checkpoints()], "the planted rows do not hold the policy up either"
    reported = _errors(caplog)
    assert len(reported) == 2, "once per process (two processes appended), not once per append"
    for line in reported:
        assert "2 row(s), the largest at size 1000" in line
        assert "not a checkpoint" not in line, "sizes only, never a note"


def test_appends_do_not_verify_the_passed_over_rows_again(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    _plant(engine)
    log = AuditLog(engine, SIGNER, policy=CheckpointPolicy(every_entries=100, every_seconds=None))
    log.append([make_event(6)])
    opened: list[str] = []
    original = KeyHistory.open

    def counting(self: KeyHistory, note: str, *, origin: str | None = None) -> Checkpoint:
        opened.append(note)
        return original(self, note, origin=origin)

    monkeypatch.setattr(KeyHistory, "open", counting)
    for n in range(7, 12):
        log.append([make_event(n)])
    assert opened == [], "the same rows under the same keys: no signature verified again"
    _plant_one_more(engine)
    log.append([make_event(12)])
    assert len(opened) == 3, "a row added above the log: the rows are checked again"


def _plant_one_more(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(insert(audit_checkpoints).values(tree_size=500, root_hash=b"\x02" * 32, note="garbled",
                                                            issued_at=datetime.now(UTC)))


def test_a_validly_signed_row_above_the_log_still_refuses_under_planted_ones(engine: Engine) -> None:
    """Entries removed below the genuine checkpoint at 6, with planted rows on top: a real rollback, refused, in a
    process that had passed the planted rows over before as in a new one."""
    _plant(engine)
    before = AuditLog(engine, SIGNER, policy=POLICY)
    before.append([make_event(6)])
    with triggers_disabled(engine) as connection:
        connection.execute(delete(audit_entries).where(audit_entries.c.log_index >= 2))
    for log in (before, AuditLog(engine, SIGNER, policy=POLICY)):
        with pytest.raises(AuditWriteError, match="latest checkpoint signed 6: it was rolled back"):
            log.append([make_event(9)])
        with pytest.raises(AuditWriteError, match="rolled back"):
            log.issue_checkpoint()
    assert AuditLog(engine, SIGNER).size() == 2
