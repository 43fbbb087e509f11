"""A gateway whose log already has checkpoints starts only with the key and origin that signed them.

The gateway created its checkpoint key whenever the key file was missing, also over a log that had been signing
for months: a key directory not mounted after a redeployment, or a wrong data directory beside the right
database, and the gateway carried on signing the same log under a new key. Officers' pinned key then fails on
every new checkpoint, and the gateway's own export names the new key, under which every earlier checkpoint fails:
two identities for one log, made silently. Changing ``WGS_ISSUER`` did the same through the origin line. Now
the key is created only for a log that has no checkpoint yet (where a log and its identity begin); otherwise a
missing key, another key or another origin stops the start, naming the file and what to restore, and no key file
is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from audit import AuditLog, Checkpoint, sign_checkpoint, verify_database
from audit.tables import audit_checkpoints
from gateway.app import create_app
from gateway.auditing.setup import CHECKPOINT_KEY_FILE, CheckpointKeyError, audit_signer, audit_verifier, log_origin
from gateway.clock import FixedClock
from gateway.container import build_container
from gateway.settings import Settings
from tests.audit_support import log_signer
from tests.auth_helpers import bearer, issued_person_token


def _start(settings: Settings, clock: FixedClock) -> None:
    """Start the gateway on ``settings`` and stop it again (the start writes the register's first entry)."""
    container = build_container(settings, clock)
    try:
        with TestClient(create_app(container=container)) as client:
            assert client.get("/health/live").status_code == 200
    finally:
        container.close()


@pytest.fixture
def settings(sqlite_db_url: str, tmp_path: Path, clock: FixedClock) -> Settings:
    """A gateway that has started once: its log has a checkpoint signed with the key in its data directory."""
    started = Settings(data_dir=tmp_path / "data", database_url=sqlite_db_url, log_json=True)
    _start(started, clock)
    return started


def test_a_missing_key_over_a_signed_log_stops_the_start_and_makes_no_key(settings: Settings,
                                                                          clock: FixedClock) -> None:
    key_file = settings.key_dir / CHECKPOINT_KEY_FILE
    kept = key_file.read_bytes()
    key_file.unlink()
    with pytest.raises(CheckpointKeyError, match="restore") as refused:
        _start(settings, clock)
    assert CHECKPOINT_KEY_FILE in str(refused.value)
    assert not key_file.exists(), "a new key was made for a log that has one"
    key_file.write_bytes(kept)  # restored: the gateway starts, and the log verifies under the key it always had
    _start(settings, clock)
    container = build_container(settings, clock)
    try:
        assert verify_database(container.engine, audit_verifier(settings)).ok
    finally:
        container.close()


def test_another_key_or_origin_over_a_signed_log_stops_the_start(settings: Settings, tmp_path: Path,
                                                                 clock: FixedClock) -> None:
    elsewhere = Settings(data_dir=tmp_path / "other", database_url=settings.database_url, log_json=True)
    elsewhere.key_dir.mkdir(parents=True)
    (elsewhere.key_dir / CHECKPOINT_KEY_FILE).write_bytes(_new_key())
    with pytest.raises(CheckpointKeyError, match="another key"):
        _start(elsewhere, clock)
    renamed = Settings(data_dir=settings.data_dir, database_url=settings.database_url, log_json=True,
                       issuer="https://gateway.elsewhere.example")
    with pytest.raises(CheckpointKeyError, match="another key"):
        _start(renamed, clock)


@pytest.mark.parametrize("note", ["another key", "garbage"])
def test_a_forged_newest_checkpoint_does_not_stop_the_start(settings: Settings, clock: FixedClock, note: str) -> None:
    """A row written behind the gateway's back is no other identity of the log: the gateway starts, and refuses
    to serve that checkpoint (503), as before."""
    container = build_container(settings, clock)
    try:
        size = AuditLog(container.engine, audit_signer(settings)).size()
        text = "garbage\n" if note == "garbage" else sign_checkpoint(
            Checkpoint(log_origin(settings.issuer), size + 5, b"\x07" * 32), log_signer("impostor",
                                                                                    name=log_origin(settings.issuer)))
        with container.engine.begin() as connection:  # an INSERT: the append-only triggers allow it
            connection.execute(insert(audit_checkpoints).values(tree_size=size + 5, root_hash=b"\x07" * 32,
                                                                note=text, issued_at=clock.now()))
        with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
            officer = bearer(issued_person_token(container, "po-gemeente-0", "gemeente-0", ["privacy-officer"]))
            assert client.get("/v1/audit/checkpoint", headers=officer).status_code == 503
    finally:
        container.close()


@pytest.mark.parametrize("kept", ["no key", "another key"])
def test_keys_init_makes_no_key_over_a_signed_log_and_refuses_another(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, kept: str) -> None:
    """``keys init`` made a new checkpoint key where the log's was lost, and kept quiet about another key: the
    new file stood where the log's key is to be restored, and what was wrong surfaced only later, as "another
    key". Now it refuses as the gateway's start does, and makes no key file."""
    from typer.testing import CliRunner

    from gateway.cli import app

    key_file = settings.key_dir / CHECKPOINT_KEY_FILE
    key_file.unlink()
    if kept == "another key":
        key_file.write_bytes(_new_key())
    before = key_file.read_bytes() if key_file.exists() else None
    monkeypatch.setenv("WGS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WGS_DATABASE_URL", settings.effective_database_url)
    refused = CliRunner().invoke(app, ["keys", "init"])
    assert refused.exit_code == 1, refused.output
    assert ("restore that key" if kept == "no key" else "another key") in " ".join(refused.stderr.split())
    assert "Traceback" not in refused.output
    assert (key_file.read_bytes() if key_file.exists() else None) == before, "no key made, none replaced"


def test_commands_that_write_the_log_refuse_a_key_made_after_the_logs_was_lost(
        settings: Settings, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new key where the log's was lost (put there by hand: ``keys init`` refuses to make it); a command that
    writes the log (an audited access change, an export, which signs its size) then signed with it, and the
    gateway's start, finding a checkpoint that names that key, took it for the log's. Now they refuse as the
    start does, and write nothing."""
    from typer.testing import CliRunner

    from gateway.auth.accounts import create_account
    from gateway.cli import app
    from gateway.db.engine import transaction

    container = build_container(settings, clock)
    try:
        with transaction(container.sessions) as session:
            create_account(session, "po-someone", "gemeente-0", ["privacy-officer"], "correct horse battery", clock)
        log = AuditLog(container.engine, audit_signer(settings))
        before = (log.size(), log.checkpoint().tree_size)
        (settings.key_dir / CHECKPOINT_KEY_FILE).unlink()
        monkeypatch.setenv("WGS_DATA_DIR", str(settings.data_dir))
        monkeypatch.setenv("WGS_DATABASE_URL", settings.effective_database_url)
        runner = CliRunner()
        (settings.key_dir / CHECKPOINT_KEY_FILE).write_bytes(_new_key())  # a new key, where the log's was
        disabled = runner.invoke(app, ["users", "disable", "po-someone"])
        assert disabled.exit_code != 0, disabled.output
        assert "another key" in " ".join(disabled.output.split())
        out = settings.data_dir / "log.jsonl"
        exported = runner.invoke(app, ["audit", "export", "--out", str(out)])
        assert exported.exit_code == 1, exported.output
        assert "another key" in " ".join(exported.stderr.split())
        assert not out.exists()
        log = AuditLog(container.engine, audit_signer(settings))
        assert (log.size(), log.checkpoint().tree_size) == before, "nothing written, nothing signed"
    finally:
        container.close()
    with pytest.raises(CheckpointKeyError, match="another key"):
        _start(settings, clock)


def _new_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption())
