"""`wgs-gateway audit key rotate` end to end: the CLI, a running gateway, the audit API's key route, backups.

After a rotation the gateway signs with the new key (a running one takes it from the key store), `audit verify`
passes over both eras with the old key pinned as with the new, the retired private key is gone from the key
store, and `GET /v1/audit/key` names the new key with the history behind it. A start with the retired key file,
or with a rotation interrupted before its key was put in place, is refused; `rotate` again finishes it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from audit import NoteVerifier, VerificationError, open_checkpoint
from gateway.app import create_app
from gateway.auditing import rotation
from gateway.auditing.setup import CHECKPOINT_KEY_FILE, CheckpointKeyError
from gateway.cli import app
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.settings import Settings
from tests.audit_support import make_event
from tests.auth_helpers import bearer, person_token
from tests.deployment import newest_checkpoint_note, prepared_data_dir

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return prepared_data_dir(tmp_path / "data", monkeypatch)


@pytest.fixture
def gateway(data_dir: Path, clock: FixedClock) -> Iterator[tuple[TestClient, Container]]:
    container = build_container(Settings(log_json=True), clock)
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        yield client, container
    container.close()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _rotate(*options: str) -> str:
    """The new verifier key `rotate` prints on its last line."""
    return _ok(["audit", "key", "rotate", *options]).strip().splitlines()[-1]


def test_a_rotation_hands_a_running_gateway_over_and_both_eras_verify(
        gateway: tuple[TestClient, Container], data_dir: Path, tmp_path: Path) -> None:
    client, container = gateway
    officer = bearer(person_token(client, container, "po-gemeente-0", "gemeente-0", ["privacy-officer"]))
    log = container.services["audit"].log
    log.append([make_event(n) for n in range(5)])
    old = client.get("/v1/audit/key", headers=officer).text
    kept = client.get("/v1/audit/checkpoint", params={"covering": log.size()}, headers=officer).text
    (tmp_path / "kept.txt").write_text(kept)  # what an officer keeps before the rotation
    old_pem = (data_dir / "keys" / CHECKPOINT_KEY_FILE).read_bytes()

    new = _rotate()
    assert new != old
    assert _ok(["audit", "key"]).strip() == new

    # the running gateway signs with the new key from now on, and the API says so
    log.append([make_event(n) for n in range(5, 8)])
    answer = client.get("/v1/audit/checkpoint", params={"covering": log.size()}, headers=officer)
    assert answer.status_code == 200, answer.text
    assert open_checkpoint(answer.text, NoteVerifier.from_vkey(new)).tree_size == log.size()
    with pytest.raises(VerificationError):
        open_checkpoint(answer.text, NoteVerifier.from_vkey(old))
    assert client.get("/v1/audit/key", headers=officer).text == new
    history = client.get("/v1/audit/key", headers={**officer, "Accept": "application/json"})
    assert history.status_code == 200, history.text
    body = history.json()
    handover = body["keys"][1]["from_size"]
    assert body["current"] == new
    assert [(k["verifier_key"], k["from_size"], k["to_size"]) for k in body["keys"]] == [
        (old, 0, handover), (new, handover, None)]
    assert body["keys"][1]["rotated_at"] is not None

    # the rotation is audited, naming the new key
    rotated = json.loads(log.entries(handover - 1, handover)[0].canonical)["event"]
    assert rotated["extra"]["action"] == "checkpoint-key.rotated"
    assert rotated["extra"]["key_id"] == NoteVerifier.from_vkey(new).key_id.hex()
    assert rotated["extra"]["verifier_key"] == new

    # the retired private key is out of the key store; the new one is readable by its owner only
    keys = data_dir / "keys"
    assert not (keys / rotation.NEXT_KEY_FILE).exists()
    assert all(path.read_bytes() != old_pem for path in keys.rglob("*") if path.is_file())
    assert stat.S_IMODE((keys / CHECKPOINT_KEY_FILE).stat().st_mode) == 0o600

    # an officer who pinned the old key verifies both eras (and the checkpoint kept before), as with the new key
    for pinned in (old, new):
        verified = runner.invoke(app, ["audit", "verify", "--key", pinned, "--checkpoint", str(tmp_path / "kept.txt")])
        assert verified.exit_code == 0, verified.output
    listed = _ok(["audit", "key", "--history"]).splitlines()
    assert listed[0] == new
    assert listed[1].startswith(f"{NoteVerifier.from_vkey(old).key_id.hex()} from size 0 to size {handover}")
    assert listed[2].startswith(f"{NoteVerifier.from_vkey(new).key_id.hex()} from size {handover} current")


def test_a_backup_across_a_rotation_verifies(data_dir: Path, tmp_path: Path) -> None:
    _rotate()
    destination = tmp_path / "backup"
    _ok(["db", "backup", str(destination)])
    verified = runner.invoke(app, ["db", "verify-backup", str(destination)])
    assert verified.exit_code == 0, verified.output


def test_a_backup_started_during_a_rotation_waits_for_it_and_verifies(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotation paused where it hurts most (its handover committed, its key file not yet in place): a backup
    copying the database now and the key directory before the swap would hold a key its log never handed over
    to. It waits for the rotation instead (and says so), and what it then takes verifies."""
    from gateway.backup.check import check_backup
    from gateway.backup.take import take_backup
    from gateway.db.engine import existing_engine_for

    in_window, go, waiting = threading.Event(), threading.Event(), threading.Event()
    install = rotation._install

    def paused(directory: Path) -> None:
        in_window.set()
        assert go.wait(30)
        install(directory)

    monkeypatch.setattr(rotation, "_install", paused)
    settings, destination = Settings(), tmp_path / "backup"
    engine = existing_engine_for(settings)
    failures: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as exc:
            failures.append(exc)

    rotating = threading.Thread(target=run, args=(lambda: rotation.rotate_checkpoint_key(settings, engine),))
    backing_up = threading.Thread(target=run, args=(lambda: take_backup(settings, destination, busy=waiting.set),))
    rotating.start()
    try:
        assert in_window.wait(30)
        backing_up.start()
        assert waiting.wait(30), "the backup waits for the rotation, and says so"
        assert not destination.exists(), "nothing of the backup is written meanwhile"
    finally:
        go.set()
        rotating.join(30)
        if backing_up.ident is not None:
            backing_up.join(60)
        engine.dispose()
    assert failures == []
    check = check_backup(settings, destination)
    assert check.problems == []


def test_a_compromised_rotation_is_recorded_and_warned_about(data_dir: Path) -> None:
    from gateway.db.engine import make_engine

    engine = make_engine(Settings().effective_database_url)
    try:
        from audit import AuditLog, CheckpointPolicy
        from gateway.auditing.setup import audit_signer

        log = AuditLog(engine, audit_signer(Settings()), policy=CheckpointPolicy(every_entries=4, every_seconds=None))
        log.append([make_event(n) for n in range(4)])
        log.append([make_event(n) for n in range(4, 8)])
        assert [c.tree_size for c in log.checkpoints()] == [4, 8]
    finally:
        engine.dispose()
    _rotate("--compromised-after", "4")
    listed = _ok(["audit", "key", "--history"]).splitlines()
    assert "compromised: not trusted above size 4" in listed[1]
    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    assert "compromise" in verified.stderr
    refused = runner.invoke(app, ["audit", "key", "rotate", "--compromised-after", "100"])
    assert refused.exit_code == 1
    assert "compromise point" in refused.stderr


def test_the_retired_key_file_or_an_interrupted_rotation_stops_the_start_until_finished(
        data_dir: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retired key restored over the current one, and a crash between the rotation's commit and its key file."""
    key_file = data_dir / "keys" / CHECKPOINT_KEY_FILE
    old_pem = key_file.read_bytes()
    _start(clock)  # the log has a checkpoint under the first key
    _rotate()
    rotated_pem = key_file.read_bytes()
    key_file.write_bytes(old_pem)  # the retired key restored (an old backup of the key directory)
    with pytest.raises(CheckpointKeyError, match="rotated"):
        _start(clock)
    key_file.write_bytes(rotated_pem)
    _start(clock)

    def crash(directory: Path) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as patched:
        patched.setattr(rotation, "_install", crash)  # the transaction commits, the files are not swapped
        interrupted = runner.invoke(app, ["audit", "key", "rotate"])
    assert interrupted.exit_code == 1
    assert "run `wgs-gateway audit key rotate` again" in interrupted.stderr
    assert (data_dir / "keys" / rotation.NEXT_KEY_FILE).exists()
    with pytest.raises(CheckpointKeyError, match="rotate"):
        _start(clock)
    finished = _ok(["audit", "key", "rotate"])
    assert finished.startswith("finished an interrupted rotation")
    _start(clock)
    assert len(_ok(["audit", "key", "--history"]).splitlines()) == 4, "two rotations, three keys, no third rotation"
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


def _start(clock: FixedClock) -> None:
    container = build_container(Settings(log_json=True), clock)
    try:
        with TestClient(create_app(container=container)) as client:
            assert client.get("/health/live").status_code == 200
    finally:
        container.close()


def _restore(backup: Path, data_dir: Path) -> None:
    """Step 3 of docs/deployment.md's restore: the key directory whole, the database without its WAL files."""
    for name in ("gateway.sqlite-wal", "gateway.sqlite-shm"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.copy2(backup / "gateway.sqlite", data_dir / "gateway.sqlite")
    shutil.rmtree(data_dir / "keys")
    shutil.copytree(backup / "keys", data_dir / "keys")


@pytest.mark.parametrize("kept_after", ["handover", "signed-by-the-new-key"])
def test_a_restore_from_before_a_rotation_rotates_the_retired_key_again(
        data_dir: Path, tmp_path: Path, clock: FixedClock, kept_after: str) -> None:
    """The backup holds the key a later rotation (after a leak, here) retired. An officer's checkpoint kept from
    before the restore shows it — the handover itself, verified with the restored key's own signature, or a later
    checkpoint the restored key did not sign — and `record-restore` does not finish without a rotation: the
    restored key's era ends right after the restore's entry, with the lost handover's compromise point."""
    _start(clock)
    backup = tmp_path / "backup"
    _ok(["db", "backup", str(backup)])
    restored_key = _ok(["audit", "key"]).strip()
    lost = _rotate("--compromised-after", "1")
    kept = tmp_path / "kept.txt"
    if kept_after == "signed-by-the-new-key":
        _ok(["clients", "add", "kvk-handelsregister", "--generate-secret"])
        _ok(["audit", "export", "--out", str(tmp_path / "export.jsonl")])  # signs a checkpoint with the new key
    _ok(["audit", "checkpoint", "--out", str(kept)])  # saved from the live log, as verify-backup says
    assert kept.read_text() == newest_checkpoint_note(data_dir / "gateway.sqlite")
    _restore(backup, data_dir)
    assert _ok(["audit", "key"]).strip() == restored_key, "restored: the retired key is the current one again"

    done = _ok(["db", "record-restore", str(backup), "--latest-checkpoint", str(kept)])
    current = _ok(["audit", "key"]).strip()
    assert current not in (restored_key, lost)
    said = " ".join(done.split())
    assert "rotated again at size" in said
    assert current in said
    assert NoteVerifier.from_vkey(lost).key_id.hex() in said
    listed = _ok(["audit", "key", "--history"]).splitlines()
    assert listed[0] == current
    assert len(listed) == 3, "the restored key's era ends at the new handover"
    assert "compromised: not trusted above size 1" in listed[1]
    verified = runner.invoke(app, ["audit", "verify", "--key", restored_key])
    assert verified.exit_code == 0, verified.output
    _start(clock)


def test_a_kept_checkpoint_of_the_restored_key_rotates_nothing_and_a_bad_one_records_nothing(
        data_dir: Path, tmp_path: Path, clock: FixedClock) -> None:
    _start(clock)
    backup = tmp_path / "backup"
    _ok(["db", "backup", str(backup)])
    key = _ok(["audit", "key"]).strip()
    _ok(["clients", "add", "kvk-handelsregister", "--generate-secret"])
    _ok(["audit", "export", "--out", str(tmp_path / "export.jsonl")])
    kept = tmp_path / "kept.txt"
    kept.write_text(newest_checkpoint_note(data_dir / "gateway.sqlite"))  # signed by the same key: no rotation since
    _restore(backup, data_dir)
    size = len(_ok(["audit", "key", "--history"]).splitlines())
    bad = tmp_path / "bad.txt"
    note = kept.read_text()
    bad.write_text("elsewhere.example/audit" + note[note.index("\n"):])  # another log's origin
    for wrong in (bad, tmp_path / "missing.txt"):
        refused = runner.invoke(app, ["db", "record-restore", str(backup), "--latest-checkpoint", str(wrong)])
        assert refused.exit_code == 1
        assert "not recorded" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    done = _ok(["db", "record-restore", str(backup), "--latest-checkpoint", str(kept)])  # nothing written before
    assert "rotated" not in done
    assert _ok(["audit", "key"]).strip() == key
    assert len(_ok(["audit", "key", "--history"]).splitlines()) == size


def test_a_restore_recorded_without_a_kept_checkpoint_says_what_to_check(data_dir: Path, tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    _ok(["db", "backup", str(backup)])
    _restore(backup, data_dir)
    said = " ".join(_ok(["db", "record-restore", str(backup)]).split())
    assert "if the audit checkpoint key was rotated after this backup" in said
    assert "`wgs-gateway audit key rotate`" in said
    assert "--latest-checkpoint" in said


def test_verify_backup_says_that_the_backups_key_was_retired_here(data_dir: Path, tmp_path: Path) -> None:
    """Before the restore the live log still knows the handover: the last moment it is known for sure."""
    backup = tmp_path / "backup"
    _ok(["db", "backup", str(backup)])
    _rotate("--compromised-after", "1")
    checked = runner.invoke(app, ["db", "verify-backup", str(backup)])
    assert checked.exit_code == 0, checked.output
    [warning] = [line for line in checked.stderr.splitlines() if line.startswith("warning: the backup's audit")]
    assert "retired here by a rotation at size" in warning
    assert "`wgs-gateway audit key rotate --compromised-after 1`" in warning
    assert "--latest-checkpoint" in warning
    assert "`wgs-gateway audit checkpoint --out FILE`" in warning


def test_a_restore_whose_rotation_fails_stays_recorded_and_names_the_command(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.backup import restore

    backup = tmp_path / "backup"
    _ok(["db", "backup", str(backup)])
    _rotate("--compromised-after", "1")
    kept = tmp_path / "kept.txt"
    kept.write_text(newest_checkpoint_note(data_dir / "gateway.sqlite"))  # the handover
    _restore(backup, data_dir)
    size = len(_entries_of(data_dir / "gateway.sqlite"))

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(restore, "rotate_checkpoint_key", broken)
    failed = runner.invoke(app, ["db", "record-restore", str(backup), "--latest-checkpoint", str(kept)])
    assert failed.exit_code == 1
    [line] = failed.stderr.strip().splitlines()
    assert "the restore is recorded" in line
    assert "run `wgs-gateway audit key rotate --compromised-after 1` before starting the gateways" in line
    assert json.loads(_entries_of(data_dir / "gateway.sqlite")[size])["event"]["extra"]["action"] == "restore"


def _entries_of(database: Path) -> list[str]:
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        return [str(row[0]) for row in connection.execute("SELECT canonical FROM audit_entries ORDER BY log_index")]
    finally:
        connection.close()
