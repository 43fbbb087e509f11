"""`wgs-gateway db backup` and `db verify-backup`: a real SQLite file, the real CLI, gateways' writes meanwhile."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from gateway.cli import app
from tests.deployment import newest_checkpoint_note, prepared_data_dir
from tests.logging_state import kept_logging

runner = CliRunner()


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """See :mod:`tests.logging_state`."""
    with kept_logging():
        yield


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated SQLite deployment with its keys, as after `db upgrade` and `keys init`."""
    return prepared_data_dir(tmp_path / "data", monkeypatch)


def _refusal(result: Result) -> str:
    """The one stderr line of a refused command (and nothing on stdout)."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _backup(destination: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["db", "backup", str(destination)])
    assert result.exit_code == 0, result.output
    manifest: dict[str, Any] = json.loads((destination / "MANIFEST.json").read_text())
    return manifest


def _verify(destination: Path) -> Result:
    return runner.invoke(app, ["db", "verify-backup", str(destination)])


def _entries(database: Path) -> list[dict[str, Any]]:
    """The events of the audit log in the SQLite file ``database``, oldest first (read-only)."""
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT canonical FROM audit_entries ORDER BY log_index").fetchall()
    finally:
        connection.close()
    return [json.loads(row[0])["event"] for row in rows]


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


class _Writer:
    """A gateway appending audit entries, one transaction each, until stopped; ``appended`` counts them."""

    def __init__(self) -> None:
        self.appended = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from audit import AuditLog
        from gateway.auditing.actions import action_event
        from gateway.auditing.setup import writing_signer
        from gateway.db.engine import existing_engine_for
        from gateway.settings import Settings

        settings = Settings()
        engine = existing_engine_for(settings)
        try:
            log = AuditLog(engine, writing_signer(engine, settings))
            while not self._stop.is_set():
                log.append([action_event(None, "test-write", organisation=None, account_id=None, channel="cli")])
                with self._progress:
                    self.appended += 1
                    self._progress.notify_all()
        except BaseException as exc:  # reported by wait_for and stop
            self.failure = exc
            with self._progress:
                self._progress.notify_all()
        finally:
            engine.dispose()

    def start(self) -> None:
        self._thread.start()

    def wait_for(self, count: int) -> None:
        with self._progress:
            assert self._progress.wait_for(lambda: self.appended >= count or self.failure is not None, timeout=60)
        assert self.failure is None, self.failure

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert self.failure is None, self.failure


@pytest.fixture
def writer(data_dir: Path) -> Iterator[_Writer]:
    running = _Writer()
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_a_backup_taken_while_a_gateway_appends_is_consistent_and_verifies(data_dir: Path, writer: _Writer,
                                                                           tmp_path: Path) -> None:
    """The copy is the database as of one commit (its log verifies, its manifest says its own size), the writer
    was neither stopped nor refused, and the backup's own audit entry is in the copy and in the live log."""
    writer.wait_for(20)
    destination = tmp_path / "backup"
    manifest = _backup(destination)
    at_return = writer.appended
    writer.wait_for(at_return + 20)  # the gateway goes on writing after the backup, into the live log only
    writer.stop()

    verified = _verify(destination)
    assert verified.exit_code == 0, verified.output
    assert f"backup {manifest['backup_id']} intact" in verified.stdout
    copied = _entries(destination / "gateway.sqlite")
    live = _entries(data_dir / "gateway.sqlite")
    assert 20 < manifest["state"]["audit_size"] == len(copied) < len(live)
    assert live[:len(copied)] == copied  # a prefix of the live log: nothing torn, nothing from later
    [entry] = [event for event in live if event["extra"]["action"] == "backup"]
    assert entry["extra"] == {"action": "backup", "channel": "cli", "backup_id": manifest["backup_id"],
                              "database": "sqlite"}
    assert entry["requester"] is None
    assert entry in copied  # written first: the copy holds the entry of the backup it is
    assert manifest["state"]["checkpoint_size"] is not None
    assert manifest["state"]["migration_heads"]
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_backup_is_readable_by_its_owner_only_whatever_the_umask(data_dir: Path, tmp_path: Path) -> None:
    """Directories 0700, files 0600: the database copy holds what partners exchanged, the keys sign tokens and
    checkpoints. An existing empty directory is narrowed too."""
    destination = tmp_path / "backup"
    destination.mkdir(mode=0o755)
    os.chmod(destination, 0o755)
    previous = os.umask(0o002)
    try:
        manifest = _backup(destination)
    finally:
        os.umask(previous)
    assert _mode(destination) == 0o700
    paths = list(destination.rglob("*"))
    assert {path.relative_to(destination).as_posix() for path in paths if path.is_file()} == {
        "MANIFEST.json", *manifest["files"]}
    assert "keys/audit-checkpoint.pem" in manifest["files"]
    assert any(name.startswith("keys/pseudonyms/") for name in manifest["files"])
    for path in paths:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert not any(path.name.endswith((".lock", ".new")) for path in paths)  # made on use / drafts: not keys


def test_a_destination_that_is_not_empty_is_refused_and_left_as_it_was(data_dir: Path, tmp_path: Path) -> None:
    """Nothing is written into it or removed from it, and no backup entry is logged."""
    destination = tmp_path / "backup"
    destination.mkdir()
    (destination / "older-backup.txt").write_text("kept")
    before = len(_entries(data_dir / "gateway.sqlite"))
    line = _refusal(runner.invoke(app, ["db", "backup", str(destination)]))
    assert "not empty" in line
    assert [path.name for path in destination.iterdir()] == ["older-backup.txt"]
    assert (destination / "older-backup.txt").read_text() == "kept"
    a_file = tmp_path / "a-file"
    a_file.write_text("kept")
    assert "not a directory" in _refusal(runner.invoke(app, ["db", "backup", str(a_file)]))
    assert a_file.read_text() == "kept"
    assert len(_entries(data_dir / "gateway.sqlite")) == before


def test_a_destination_that_cannot_be_made_is_refused_in_one_line(data_dir: Path, tmp_path: Path) -> None:
    """A path under a file (or a directory the user may not write in): one line naming it, not a traceback,
    nothing logged and nothing made."""
    a_file = tmp_path / "a-file"
    a_file.write_text("kept")
    before = len(_entries(data_dir / "gateway.sqlite"))
    destination = a_file / "backup"
    line = _refusal(runner.invoke(app, ["db", "backup", str(destination)]))
    assert line.startswith(f"cannot make {destination} ("), line
    assert a_file.read_text() == "kept"
    assert len(_entries(data_dir / "gateway.sqlite")) == before


def test_an_empty_destination_of_another_user_is_refused(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty directory someone else made (in a shared /tmp, say) would stay theirs after the chmod to 0700:
    its owner could list, remove and replace the backup's files, the manifest too. Refused, nothing logged.
    (The directory's owner is made "someone else" by the effective user id the command sees.)"""
    destination = tmp_path / "backup"
    destination.mkdir(mode=0o777)
    before = len(_entries(data_dir / "gateway.sqlite"))
    monkeypatch.setattr(os, "geteuid", lambda: destination.stat().st_uid + 1)
    line = _refusal(runner.invoke(app, ["db", "backup", str(destination)]))
    assert "belongs to another user" in line
    assert list(destination.iterdir()) == []
    assert len(_entries(data_dir / "gateway.sqlite")) == before


def test_a_backup_that_cannot_be_audited_is_not_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No checkpoint key (before `keys init`): no entry can be signed, so no copy of the database is made."""
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    destination = tmp_path / "backup"
    line = _refusal(runner.invoke(app, ["db", "backup", str(destination)]))
    assert "cannot be audited" in line
    assert "keys init" in line
    assert not destination.exists()


def test_a_database_that_is_neither_sqlite_nor_postgresql_is_refused_in_one_line(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGS_DATABASE_URL", "mysql+pymysql://gateway:secret-pw@db.example/gateway")
    destination = tmp_path / "backup"
    line = _refusal(runner.invoke(app, ["db", "backup", str(destination)]))
    assert "cannot back up a mysql database" in line
    assert "secret-pw" not in line
    assert not destination.exists()


def test_a_backup_that_fails_part_way_leaves_nothing_that_looks_like_one(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database copied, then the keys cannot be (a full disk, say): one line, and no directory left behind
    with a database copy in it."""
    from gateway.backup import take

    def disk_full(source: Path, target: Path) -> list[Path]:
        target.mkdir()
        raise OSError(28, "No space left on device", str(target / "token-signing.json"))

    monkeypatch.setattr(take, "copy_keys", disk_full)
    destination = tmp_path / "backup"
    line = _refusal(runner.invoke(app, ["db", "backup", str(destination)]))
    assert line.startswith("backup failed:"), line
    assert "No space left on device" in line
    assert not destination.exists()


def test_a_backup_that_fails_after_its_entry_is_logged_as_failed(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log names the backup it was told about (its `backup` entry) and then that it was not kept: the same
    id, the kind of failure, no path (the failing file's, or the destination's, may name a person); the log,
    with its checkpoint over both, still verifies."""
    from gateway.backup import take

    destination = tmp_path / "jan-de-vries-backup"

    def disk_full(source: Path, target: Path) -> list[Path]:
        raise OSError(28, "No space left on device", str(target / "token-signing.json"))

    monkeypatch.setattr(take, "copy_keys", disk_full)
    before = len(_entries(data_dir / "gateway.sqlite"))
    line = _refusal(runner.invoke(app, ["db", "backup", str(destination)]))
    assert line.startswith("backup failed:"), line
    started, failed = _entries(data_dir / "gateway.sqlite")[before:]
    assert started["extra"]["action"] == "backup"
    assert failed["status"] == "error"
    assert failed["extra"] == {"action": "backup-failed", "channel": "cli",
                               "backup_id": started["extra"]["backup_id"], "reason": "OSError", "errno": "ENOSPC"}
    assert "jan-de-vries" not in json.dumps(failed)
    assert "token-signing" not in json.dumps(failed)
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


def test_a_backup_whose_failure_cannot_be_logged_still_says_it_failed(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk that filled up may hold the database too: the `backup-failed` entry is best effort, and its own
    failure neither hides the backup's (one line, exit 1) nor leaves the copy behind."""
    from audit import AuditLog, AuditWriteError
    from gateway.backup import take

    def audit_write_fails(self: AuditLog, events: object) -> None:
        raise AuditWriteError("audit log write failed (OperationalError)")

    def disk_full(source: Path, target: Path) -> list[Path]:
        monkeypatch.setattr(AuditLog, "append", audit_write_fails)  # after the backup's own entry
        raise OSError(28, "No space left on device", str(target / "token-signing.json"))

    monkeypatch.setattr(take, "copy_keys", disk_full)
    destination = tmp_path / "backup"
    before = len(_entries(data_dir / "gateway.sqlite"))
    line = _refusal(runner.invoke(app, ["db", "backup", str(destination)]))
    assert line.startswith("backup failed:"), line
    assert "No space left on device" in line
    assert not destination.exists()
    assert [entry["extra"]["action"] for entry in _entries(data_dir / "gateway.sqlite")[before:]] == ["backup"]


@pytest.fixture
def backup(data_dir: Path, tmp_path: Path) -> Path:
    destination = tmp_path / "backup"
    _backup(destination)
    assert _verify(destination).exit_code == 0
    return destination


def _warnings(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def test_verify_backup_warns_that_a_restore_drops_what_the_log_holds_since(backup: Path, data_dir: Path,
                                                                           tmp_path: Path) -> None:
    """Checked with the environment of the deployment to restore, the backup is compared with its database: the
    entries written since are the ones a restore loses, and the operator is told how many before, not after."""
    assert _warnings(_verify(backup)) == []  # nothing written since: nothing to warn of
    _backup(tmp_path / "later")  # its entry and checkpoint: the live log has moved on
    [line] = _warnings(_verify(backup))
    assert "restoring it drops the 1 audit entries written since" in line, line
    shutil.rmtree(data_dir)  # the disaster a backup is for: nothing left to compare with, no warning made up
    result = _verify(backup)
    assert _warnings(result) == []
    assert "intact" in result.stdout
    assert not data_dir.exists()  # verifying creates nothing there


def test_verify_backup_warns_of_a_backup_of_another_deployment(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staging's backup verified against production's environment (the same default WGS_ISSUER): intact, and
    restorable all the same (after a disaster a fresh installation has another key too), but said: another
    checkpoint key, another log."""
    prepared_data_dir(tmp_path / "staging", monkeypatch)
    staging_backup = tmp_path / "staging-backup"
    _backup(staging_backup)
    monkeypatch.setenv("WGS_DATA_DIR", str(data_dir))
    _backup(tmp_path / "production-backup")  # a log that is signed, and longer than staging's
    warnings = _warnings(_verify(staging_backup))
    assert len(warnings) == 2, warnings
    assert "the audit checkpoint key" in warnings[0]
    assert "is not the backup's" in warnings[0]
    assert "does not hold the backup's checkpoint" in warnings[1]


def test_verify_backup_finds_a_changed_byte_in_a_key_file(backup: Path) -> None:
    _flip_byte(backup / "keys" / "token-signing.json", 10)
    line = _refusal(_verify(backup))
    assert line == "backup NOT intact: keys/token-signing.json has changed: its SHA-256 is not the manifest's"


def test_verify_backup_finds_a_changed_byte_in_the_database(backup: Path) -> None:
    _flip_byte(backup / "gateway.sqlite", (backup / "gateway.sqlite").stat().st_size - 100)
    line = _refusal(_verify(backup))
    assert line == "backup NOT intact: gateway.sqlite has changed: its SHA-256 is not the manifest's"


def _rewrite_digest(backup: Path, name: str) -> None:
    """Make the manifest agree with the file again: what someone who can write both would do."""
    from gateway.backup.manifest import file_record

    manifest = json.loads((backup / "MANIFEST.json").read_text())
    record = file_record(backup / name)
    manifest["files"][name] = {"sha256": record.sha256, "size": record.size}
    (backup / "MANIFEST.json").write_text(json.dumps(manifest))


def test_verify_backup_checks_the_copied_audit_log_against_the_backed_up_key(
        backup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An audit entry edited in the copy, the manifest's digest made to match: the log's own check fails. It
    runs with the key in the backup: the live data directory may be gone (that is why one restores)."""
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "elsewhere"))
    assert _verify(backup).exit_code == 0
    _edit_copy(backup, "UPDATE audit_entries SET canonical = replace(canonical, '\"backup\"', '\"bakcup\"')")
    line = _refusal(_verify(backup))
    assert line.startswith("backup NOT intact: the backup's audit log is NOT intact:"), line
    assert not (tmp_path / "elsewhere").exists()  # verifying a backup makes no data directory, no key


def _edit_copy(backup: Path, statement: str) -> None:
    """Change the copy's audit table past its append-only triggers, and make the manifest's digest agree."""
    from sqlalchemy import create_engine

    from tests.audit_support import triggers_disabled

    engine = create_engine(f"sqlite:///{backup / 'gateway.sqlite'}")
    try:
        with triggers_disabled(engine) as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()
    _rewrite_digest(backup, "gateway.sqlite")


@pytest.mark.parametrize("database", ["postgresql", "mysql"])
def test_verify_backup_checks_the_sqlite_copy_whatever_the_manifest_calls_the_database(backup: Path,
                                                                                      database: str) -> None:
    """The copy's audit log is verified only for an SQLite backup: a manifest edited to call the database
    something else beside its ``gateway.sqlite`` (an edited entry, the digest made to match) passed as
    "intact: 4 key files", that copy's log never verified. A PostgreSQL backup holds the key directory only."""
    _edit_copy(backup, "UPDATE audit_entries SET canonical = replace(canonical, '\"backup\"', '\"bakcup\"')")
    manifest = json.loads((backup / "MANIFEST.json").read_text())
    manifest["database"] = database
    (backup / "MANIFEST.json").write_text(json.dumps(manifest))
    line = _refusal(_verify(backup))
    assert line.startswith("backup NOT intact: MANIFEST.json "), line
    assert "PostgreSQL backup" in line if database == "postgresql" else "does not back up ('mysql')" in line
    recorded = _refusal(runner.invoke(app, ["db", "record-restore", str(backup)]))  # nor is its restore recorded
    assert recorded == f"{backup}: {line.removeprefix('backup NOT intact: ')}"


def test_verify_backup_refuses_a_manifest_nested_past_the_stack_in_one_line(backup: Path) -> None:
    """JSON arrays nested deeper than Python's recursion limit were a RecursionError traceback."""
    (backup / "MANIFEST.json").write_text("[" * 100_000 + "]" * 100_000)
    assert _refusal(_verify(backup)) == "backup NOT intact: MANIFEST.json cannot be read as JSON (RecursionError)"


def test_verify_backup_fast_still_finds_a_changed_entry(backup: Path) -> None:
    """`--fast` re-parses no entry, but a changed byte in one changes its leaf hash and the tree: caught."""
    assert runner.invoke(app, ["db", "verify-backup", "--fast", str(backup)]).exit_code == 0
    _edit_copy(backup, "UPDATE audit_entries SET canonical = replace(canonical, '\"backup\"', '\"bakcup\"')")
    line = _refusal(runner.invoke(app, ["db", "verify-backup", "--fast", str(backup)]))
    assert line.startswith("backup NOT intact: the backup's audit log is NOT intact:"), line


def test_verify_backup_is_the_full_verification_unless_told_fast(backup: Path) -> None:
    """An entry's `entry_id` column no longer its text's: only the full verification compares the two (what
    `--fast` is documented to skip), and it is what `verify-backup` runs by default."""
    _edit_copy(backup, "UPDATE audit_entries SET entry_id = '00000000000070008000000000000001' "
                       "WHERE log_index = (SELECT max(log_index) FROM audit_entries)")
    line = _refusal(_verify(backup))
    assert line.startswith("backup NOT intact: the backup's audit log is NOT intact:"), line
    assert "entry_id" in line
    skipped = runner.invoke(app, ["db", "verify-backup", "--fast", str(backup)])
    assert skipped.exit_code == 0, skipped.output


def test_verify_backup_refuses_an_unlisted_file_a_missing_one_and_no_manifest(backup: Path) -> None:
    (backup / "keys" / "stray.pem").write_text("not from the backup")
    assert _refusal(_verify(backup)) == "backup NOT intact: keys/stray.pem is not in the manifest"
    (backup / "keys" / "stray.pem").unlink()
    (backup / "keys" / "audit-checkpoint.pem").unlink()
    assert _refusal(_verify(backup)) == "backup NOT intact: keys/audit-checkpoint.pem is missing"
    (backup / "MANIFEST.json").unlink()
    assert "no MANIFEST.json" in _refusal(_verify(backup))


def test_verify_backup_refuses_a_listed_name_the_file_system_cannot_look_up_in_one_line(backup: Path) -> None:
    """A damaged manifest is what the check is for: a listed name the system refuses to look up (too long
    for a file name) is a reason like any other, not a traceback."""
    manifest = json.loads((backup / "MANIFEST.json").read_text())
    name = f"keys/{'k' * 300}"
    manifest["files"][name] = {"sha256": "0" * 64, "size": 1}
    (backup / "MANIFEST.json").write_text(json.dumps(manifest))
    line = _refusal(_verify(backup))
    assert line.startswith(f"backup NOT intact: {name} cannot be read ("), line


def test_verify_backup_refuses_files_reached_through_symbolic_links(backup: Path, tmp_path: Path) -> None:
    """A listed file (or a directory on its way) replaced by a link to an identical copy elsewhere still has the
    right digest, but the backup no longer holds it, and a restore would copy whatever the link points to; an
    unlisted link is no file of the backup either."""
    outside = tmp_path / "outside"
    outside.mkdir()
    key = backup / "keys" / "audit-checkpoint.pem"
    shutil.copy2(key, outside / key.name)
    key.unlink()
    key.symlink_to(outside / key.name)
    (backup / "extra-link").symlink_to(outside)
    result = _verify(backup)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert "keys/audit-checkpoint.pem is reached through a symbolic link" in result.stderr
    assert "extra-link is a symbolic link, not in the manifest" in result.stderr


def test_verify_backup_never_changes_the_backup(backup: Path) -> None:
    """Opening the copy as the gateway does would switch it to WAL (a write); verifying must leave its bytes."""
    before = {path: path.read_bytes() for path in backup.rglob("*") if path.is_file()}
    assert _verify(backup).exit_code == 0
    assert {path: path.read_bytes() for path in backup.rglob("*") if path.is_file()} == before


_SECRET_LOOKING = re.compile(r"[A-Za-z0-9+/_=-]{16,}")


def test_the_manifest_holds_no_key_material_and_no_path(data_dir: Path, tmp_path: Path) -> None:
    """Digests and sizes of the key files only: no run of 16 characters of any key file is in the manifest,
    nor the directories' paths (a home directory names a person)."""
    destination = tmp_path / "backup"
    manifest = _backup(destination)
    text = (destination / "MANIFEST.json").read_text()
    keys = [path for path in (data_dir / "keys").rglob("*") if path.is_file() and path.stat().st_size]
    assert len(keys) >= 3
    for path in keys:
        content = path.read_text()
        for token in _SECRET_LOOKING.findall(content):
            assert token not in text, (path.name, token)
    assert str(tmp_path) not in text
    assert str(destination) not in json.dumps(_entries(data_dir / "gateway.sqlite"))
    assert set(manifest) == {"format", "backup_id", "created_at", "database", "database_copied", "state", "files"}


def test_a_restored_backup_is_what_the_gateway_starts_on(backup: Path, data_dir: Path) -> None:
    """The restore of docs/deployment.md: stop, put the files back, verify, start. The copy is one
    self-contained file (no -wal beside it) at the code's head, with the keys that signed its log: the
    gateway starts on it and is ready."""
    assert not (backup / "gateway.sqlite-wal").exists()
    shutil.rmtree(data_dir)
    data_dir.mkdir(mode=0o700)
    shutil.copy2(backup / "gateway.sqlite", data_dir / "gateway.sqlite")
    shutil.copytree(backup / "keys", data_dir / "keys")
    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    from fastapi.testclient import TestClient

    from gateway.app import create_app

    with TestClient(create_app()) as client:  # the start checks the key against the log's checkpoints
        assert client.get("/health/ready").status_code == 200


@pytest.mark.postgres
def test_a_postgresql_deployment_gets_its_keys_backed_up_and_is_told_about_pg_dump(
        postgres_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from tests.migrated import migrated_postgres

    url = migrated_postgres(postgres_admin_url, f"wgs_backup_{datetime.now(UTC):%H%M%S%f}")
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WGS_DATABASE_URL", url)
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    destination = tmp_path / "backup"
    result = runner.invoke(app, ["db", "backup", str(destination)])
    assert result.exit_code == 0, result.output
    [told] = result.stderr.strip().splitlines()
    assert "pg_dump" in told
    manifest = json.loads((destination / "MANIFEST.json").read_text())
    assert manifest["database"] == "postgresql"
    assert manifest["database_copied"] is False
    assert not (destination / "gateway.sqlite").exists()
    assert "keys/audit-checkpoint.pem" in manifest["files"]
    assert manifest["state"]["audit_size"] == 1  # its own entry, in the live database
    verified = _verify(destination)
    assert verified.exit_code == 0, verified.output
    assert "not in this backup" in verified.stderr


@pytest.mark.postgres
def test_a_postgresql_restore_is_recorded_although_the_dump_holds_entries_written_after_the_backup(
        postgres_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL is dumped with its own tools after `db backup`, while the gateways keep running (as
    docs/deployment.md says): the dump, once restored, may hold entries written after the manifest was. It is
    still that backup's log (it holds the manifest's checkpoint), so `db record-restore` records the restore at
    the size restored; a log without that checkpoint stays refused."""
    from datetime import UTC, datetime

    from tests.migrated import migrated_postgres

    url = migrated_postgres(postgres_admin_url, f"wgs_restore_{datetime.now(UTC):%H%M%S%f}")
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WGS_DATABASE_URL", url)
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    destination = tmp_path / "backup"
    assert runner.invoke(app, ["db", "backup", str(destination)]).exit_code == 0
    recorded_size = json.loads((destination / "MANIFEST.json").read_text())["state"]["audit_size"]
    # a gateway's write between `db backup` and pg_dump: the dump (restored here as the live database) holds it
    for command in (["clients", "add", "kvk-handelsregister", "--generate-secret"],
                    ["clients", "disable", "kvk-handelsregister"]):  # the disabling is audited
        assert runner.invoke(app, command).exit_code == 0

    other = migrated_postgres(postgres_admin_url, f"wgs_other_{datetime.now(UTC):%H%M%S%f}")
    monkeypatch.setenv("WGS_DATABASE_URL", other)  # not this backup's log: refused, as before
    assert "not backup" in _refusal(runner.invoke(app, ["db", "record-restore", str(destination)]))

    monkeypatch.setenv("WGS_DATABASE_URL", url)
    done = runner.invoke(app, ["db", "record-restore", str(destination)])
    assert done.exit_code == 0, done.output
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT canonical FROM audit_entries ORDER BY log_index")).scalars().all()
    finally:
        engine.dispose()
    restored_size = len(rows) - 1
    assert restored_size > recorded_size
    assert json.loads(rows[-1])["event"]["extra"]["restored_size"] == restored_size
    assert f"at index {restored_size}" in done.stdout


def test_a_restore_shows_as_a_rollback_to_a_checkpoint_kept_from_after_the_backup(
        backup: Path, data_dir: Path, tmp_path: Path) -> None:
    """What docs/deployment.md tells operators to expect: the restored log verifies on its own and against a
    checkpoint kept from before the backup, and is reported rolled back against one from after it — and, once
    the gateway has written past that size, as a log whose entries do not give the root that was signed. The
    restore's own entry (`db record-restore`, refused over a log that is not the backup as restored) is the
    first one after the backup's."""
    before = tmp_path / "before.txt"
    before.write_text(newest_checkpoint_note(backup / "gateway.sqlite"))
    for command in (["clients", "add", "kvk-handelsregister", "--generate-secret"],
                    ["clients", "disable", "kvk-handelsregister"], ["clients", "enable", "kvk-handelsregister"]):
        assert runner.invoke(app, command).exit_code == 0
    exported = runner.invoke(app, ["audit", "export", "--out", str(tmp_path / "export.jsonl")])  # signs one
    assert exported.exit_code == 0, exported.output
    after = tmp_path / "after.txt"
    after.write_text(newest_checkpoint_note(data_dir / "gateway.sqlite"))

    not_restored = _refusal(runner.invoke(app, ["db", "record-restore", str(backup)]))
    assert "not backup" in not_restored
    for name in ("gateway.sqlite-wal", "gateway.sqlite-shm"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.copy2(backup / "gateway.sqlite", data_dir / "gateway.sqlite")
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    assert runner.invoke(app, ["audit", "verify", "--checkpoint", str(before)]).exit_code == 0
    rolled_back = runner.invoke(app, ["audit", "verify", "--checkpoint", str(after)])
    assert rolled_back.exit_code == 1
    assert "rolled back" in rolled_back.stderr
    restored_size = len(_entries(data_dir / "gateway.sqlite"))
    recorded = runner.invoke(app, ["db", "record-restore", str(backup)])
    assert recorded.exit_code == 0, recorded.output
    assert "retire again any token-signing key retired since" in " ".join(recorded.output.split())
    backup_id = json.loads((backup / "MANIFEST.json").read_text())["backup_id"]
    restore_entry = _entries(data_dir / "gateway.sqlite")[restored_size]  # the first entry after the restore
    assert restore_entry["extra"] == {"action": "restore", "channel": "cli", "backup_id": backup_id,
                                      "restored_size": restored_size}
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    for command in (["clients", "add", "kvk-handelsregister", "--generate-secret"],  # lost with the restore
                    ["clients", "disable", "kvk-handelsregister"], ["clients", "enable", "kvk-handelsregister"]):
        assert runner.invoke(app, command).exit_code == 0
    forked = runner.invoke(app, ["audit", "verify", "--checkpoint", str(after)])
    assert forked.exit_code == 1
    assert "do not produce the root signed" in " ".join(forked.stderr.split())
