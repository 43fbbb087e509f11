"""`wgs-gateway audit export|verify` given what a hostile or careless world hands them: an export file that is
missing or built to crash its parser, an output path that cannot be written, a live database edited behind the
gateway's back. Every case ends in a verdict or one line and exit code 1, never a traceback; a failed export
leaves no partial file behind."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from gateway.cli import app
from tests.deployment import newest_checkpoint_note, prepared_data_dir

runner = CliRunner()
NESTED = b"[" * 10_000 + b"]" * 10_000  # deeper than Python's recursion limit, shorter than an export line


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated SQLite database with the log's key and 24 entries (checkpoints at 8, 16 and 24)."""
    from audit import AuditLog, CheckpointPolicy
    from gateway.auditing.setup import audit_signer
    from gateway.db.engine import make_engine
    from gateway.settings import Settings
    from tests.audit_support import make_event

    prepared_data_dir(tmp_path, monkeypatch)
    settings = Settings()
    engine = make_engine(settings.effective_database_url)
    try:
        log = AuditLog(engine, audit_signer(settings), policy=CheckpointPolicy(every_entries=8, every_seconds=None))
        for batch in range(3):
            log.append([make_event(batch * 8 + i) for i in range(8)])
    finally:
        engine.dispose()
    return tmp_path


@pytest.fixture
def exported(data_dir: Path) -> tuple[list[bytes], str]:
    """The export's lines and the pinned key."""
    out = data_dir / "log.jsonl"
    assert runner.invoke(app, ["audit", "export", "--out", str(out)]).exit_code == 0
    return out.read_bytes().splitlines(keepends=True), runner.invoke(app, ["audit", "key"]).output.strip()


def _no_traceback(result: Result) -> str:
    """The command's stderr, after checking it ended by itself with exit code 1 (no exception escaped)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return " ".join(result.stderr.split())  # rich wraps long lines


def _verify_file(tmp_path: Path, content: bytes, key: str, *options: str) -> str:
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(content)
    return _no_traceback(runner.invoke(app, ["audit", "verify", "--export", str(path), "--key", key, *options]))


# -- verify --export --------------------------------------------------------------------------------------------


def test_an_export_that_is_not_there_or_no_file_is_a_usage_error(
        data_dir: Path, exported: tuple[list[bytes], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """As for a kept checkpoint (`--checkpoint`): the option names the path and what is wrong with it."""
    monkeypatch.setenv("COLUMNS", "400")  # the usage box: no wrapping inside the path
    _, key = exported
    for path, problem in ((data_dir / "missing.jsonl", "does not exist"), (data_dir, "is a directory")):
        result = runner.invoke(app, ["audit", "verify", "--export", str(path), "--key", key])
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert f"'{path}' {problem}" in result.stderr, result.stderr


@pytest.mark.parametrize("line", [0, 1], ids=["header", "checkpoint"])
def test_a_header_or_checkpoint_line_nested_too_deep_is_a_format_verdict(
        tmp_path: Path, exported: tuple[list[bytes], str], line: int) -> None:
    """json.loads gives up on deep nesting with RecursionError, which no `except ValueError` catches."""
    lines, key = exported
    tampered = [*lines[:line], NESTED + b"\n", *lines[line + 1:]]
    for options in ([], ["--fast"]):
        assert "log NOT intact: format" in _verify_file(tmp_path, b"".join(tampered), key, *options)


def test_an_entry_nested_too_deep_is_caught_at_its_index(tmp_path: Path, exported: tuple[list[bytes], str]) -> None:
    """Whoever holds the file writes an entry whose event is deeply nested, with a matching leaf hash and its
    own index in the envelope: the deep check parses it (and must not crash); the signed root catches it."""
    import hashlib

    lines, key = exported
    target = 4 + 13  # header, three checkpoints, then entries 0..
    original = json.loads(lines[target])
    canonical = (b'{"entry_id":"' + original["entry"]["entry_id"].encode() + b'","event":' + NESTED
                 + b',"index":13,"recorded_at":"' + original["entry"]["recorded_at"].encode() + b'","v":1}')
    leaf = hashlib.sha256(b"\x00" + canonical).hexdigest().encode()
    lines[target] = b'{"entry":' + canonical + b',"index":13,"leaf_hash":"' + leaf + b'","type":"entry"}\n'
    assert "log NOT intact: entry at index 13" in _verify_file(tmp_path, b"".join(lines), key)
    assert "log NOT intact: root" in _verify_file(tmp_path, b"".join(lines), key, "--fast")


@pytest.mark.parametrize("digits", [5000, 4301], ids=["5000 digits", "one past the limit"])
def test_an_entry_line_whose_index_has_more_digits_than_python_reads_is_a_format_verdict(
        tmp_path: Path, exported: tuple[list[bytes], str], digits: int) -> None:
    """Python converts at most 4,300 digits to an integer (ValueError past that, as for an entry's number in
    ``HUGE_NUMBER``): an entry line's index of more digits, the rest of the line untouched, was a traceback
    from ``audit verify --export`` where every other malformed line is a ``format`` verdict at its entry."""
    lines, key = exported
    target = 4 + 13
    start = lines[target].rindex(b',"index":')
    end = lines[target].index(b',"leaf_hash":', start)
    lines[target] = lines[target][:start] + b',"index":' + b"1" * digits + lines[target][end:]
    for options in ([], ["--fast"]):
        assert "log NOT intact: format at index 13" in _verify_file(tmp_path, b"".join(lines), key, *options)


# -- export -----------------------------------------------------------------------------------------------------


def test_an_export_to_a_path_that_cannot_be_written_is_one_line(data_dir: Path) -> None:
    for path in (data_dir / "no-such-directory" / "log.jsonl", data_dir):
        stderr = _no_traceback(runner.invoke(app, ["audit", "export", "--out", str(path)]))
        assert stderr.startswith(f"export failed: cannot write {path}"), stderr


def test_a_failed_export_leaves_no_partial_file_and_keeps_the_one_there(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export that stops half-way (the database went away) must not leave a file that looks like an
    export — nor destroy the previous export at that path."""
    from audit import store

    out = data_dir / "log.jsonl"
    assert runner.invoke(app, ["audit", "export", "--out", str(out)]).exit_code == 0
    before = out.read_bytes()

    original = store.iter_leaves

    def failing(*args: Any, **kwargs: Any) -> Iterator[tuple[int, bytes, bytes]]:
        for written, row in enumerate(original(*args, **kwargs)):
            if written == 5:
                raise OSError(28, "No space left on device")
            yield row

    monkeypatch.setattr(store, "iter_leaves", failing)
    stderr = _no_traceback(runner.invoke(app, ["audit", "export", "--out", str(out)]))
    assert stderr.startswith(f"export failed: cannot write {out}"), stderr
    assert out.read_bytes() == before
    fresh = data_dir / "fresh.jsonl"
    _no_traceback(runner.invoke(app, ["audit", "export", "--out", str(fresh)]))
    assert sorted(p.name for p in data_dir.iterdir() if "jsonl" in p.name) == ["log.jsonl"]


def test_an_export_is_readable_by_its_owner_only(data_dir: Path) -> None:
    """It holds every entry's pseudonyms and who asked whom what, like the database it comes from."""
    out = data_dir / "log.jsonl"
    assert runner.invoke(app, ["audit", "export", "--out", str(out)]).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def _last_entry(data_dir: Path) -> tuple[int, dict[str, Any]]:
    with sqlite3.connect(data_dir / "gateway.sqlite") as database:
        index, canonical = database.execute(
            "SELECT log_index, canonical FROM audit_entries ORDER BY log_index DESC LIMIT 1").fetchone()
    return index, json.loads(canonical)


def test_an_export_is_itself_an_audit_entry_naming_what_and_which_file_but_not_where(data_dir: Path) -> None:
    """Exporting the log hands out who asked whom for what: it was the one disclosure that left no entry."""
    out = data_dir / "exports of jan.jsonl"
    assert runner.invoke(app, ["audit", "export", "--out", str(out)]).exit_code == 0
    content = out.read_bytes()
    header, *rest = (json.loads(line) for line in content.splitlines())
    last_checkpoint = [line for line in rest if line["type"] == "checkpoint"][-1]
    index, entry = _last_entry(data_dir)
    assert index == header["tree_size"] == 24  # the entry after the exported ones: the export does not hold it
    event = entry["event"]
    assert (event["event_type"], event["status"], event["requester"]) == ("console.action", "ok", None)
    assert event["extra"] == {
        "action": "export", "channel": "cli", "export": "audit-log", "entries": 24,
        "checkpoints": header["checkpoint_count"], "sha256": hashlib.sha256(content).hexdigest(),
        "root_hash": base64.b64decode(last_checkpoint["note"].splitlines()[2]).hex()}
    assert "jan" not in json.dumps(entry)
    assert str(data_dir) not in json.dumps(entry)
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    # the next export holds the first one's entry, and has an entry of its own
    assert runner.invoke(app, ["audit", "export", "--out", str(out)]).exit_code == 0
    index, entry = _last_entry(data_dir)
    assert (index, entry["event"]["extra"]["entries"]) == (25, 25)


def test_an_export_whose_entry_cannot_be_written_leaves_no_file(data_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: no export without its entry (and the one at that path before stays)."""
    from audit import AuditLog, AuditWriteError

    out = data_dir / "log.jsonl"
    out.write_bytes(b"the previous export")

    def refused(self: AuditLog, events: Any) -> Any:
        raise AuditWriteError("audit log write failed (OperationalError)")

    monkeypatch.setattr(AuditLog, "append", refused)
    stderr = _no_traceback(runner.invoke(app, ["audit", "export", "--out", str(out)]))
    assert stderr.startswith("export failed: its audit entry could not be written"), stderr
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in data_dir.iterdir() if "jsonl" in p.name) == ["log.jsonl"]
    assert _last_entry(data_dir)[0] == 23


# -- verify (live database) -------------------------------------------------------------------------------------


def _tamper(data_dir: Path, sql: str) -> None:
    """Edit the SQLite file as its owner can: past the append-only triggers (dropped for the edit)."""
    with sqlite3.connect(data_dir / "gateway.sqlite") as database:
        triggers = database.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                    "AND tbl_name LIKE 'audit_%'").fetchall()
        for name, _ in triggers:
            database.execute(f"DROP TRIGGER {name}")
        database.execute(sql)
        for _, create in triggers:
            database.execute(create)


@pytest.mark.parametrize(("sql", "verdict"), [
    ("UPDATE audit_entries SET recorded_at = 'yesterday' WHERE log_index = 13", "columns at index 13"),
    ("UPDATE audit_entries SET entry_id = 'not-a-uuid' WHERE log_index = 13", "columns at index 13"),
    ("UPDATE audit_entries SET log_index = 'thirteen' WHERE log_index = 13", "gap at index 13"),
    ("UPDATE audit_checkpoints SET issued_at = 'noon' WHERE tree_size = 16", "checkpoint"),
    ("UPDATE audit_checkpoints SET tree_size = 'sixteen' WHERE tree_size = 16", "checkpoint"),
    ("UPDATE audit_entries SET recorded_at = replace(recorded_at, ' ', 'T') WHERE log_index = 13",
     "columns at index 13"),
], ids=["recorded_at", "entry_id", "log_index", "issued_at", "tree_size", "recorded_at in another form"])
def test_a_stored_value_the_gateway_could_never_have_written_is_a_verdict(
        data_dir: Path, sql: str, verdict: str) -> None:
    """SQLite keeps whatever is written into a column; a value no log row can hold was written by someone
    else, which is what verification is there to say — not a ValueError from deep inside the driver."""
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    _tamper(data_dir, sql)
    stderr = _no_traceback(runner.invoke(app, ["audit", "verify"]))
    assert f"log NOT intact: {verdict}" in stderr, stderr


@pytest.mark.parametrize(("sql", "verdict"), [
    ("UPDATE audit_entries SET log_index = 'thirteen' WHERE log_index = 13", "gap at index 13"),
    ("UPDATE audit_entries SET log_index = X'0d' WHERE log_index = 13", "gap at index 13"),
    ("INSERT INTO audit_entries SELECT 'x', lower(hex(randomblob(16))), recorded_at, event_type, partnership, purpose, "
     "requester_org, holder_org, decision, subject_pseudonym, subject_key, canonical, leaf_hash FROM audit_entries "
     "WHERE log_index = 2", "columns at index 24"),
], ids=["log_index text", "log_index blob", "row added with a text index"])
def test_an_index_that_is_no_number_is_a_verdict_of_a_fast_verification_too(
        data_dir: Path, sql: str, verdict: str) -> None:
    """The fast verification reads the log's size (the largest index) first, and an index SQLite keeps as text
    or bytes made that a ValueError: a traceback from ``audit verify --fast`` (and a 500 from the console's
    "verify now", which verifies fast) where the deep verification says what was changed. Same verdict."""
    assert runner.invoke(app, ["audit", "verify", "--fast"]).exit_code == 0
    _tamper(data_dir, sql)
    deep = _no_traceback(runner.invoke(app, ["audit", "verify"]))
    assert f"log NOT intact: {verdict}" in deep, deep
    fast = _no_traceback(runner.invoke(app, ["audit", "verify", "--fast"]))
    assert f"log NOT intact: {verdict}" in fast, fast


@pytest.mark.parametrize("sql", [
    "UPDATE audit_entries SET holder_org = 'someone-else' WHERE log_index = 13",
    "UPDATE audit_entries SET requester_org = NULL WHERE log_index = 13",
    "UPDATE audit_entries SET subject_key = subject_key + 1 WHERE log_index = 13",
], ids=["holder_org", "requester_org", "subject_key"])
def test_a_changed_search_column_is_caught_by_a_fast_verification_too(data_dir: Path, sql: str) -> None:
    """Every hash still verifies: only the comparison of the columns with the entry tells that a search by them
    would miss the entry or show it under another organisation."""
    assert runner.invoke(app, ["audit", "verify", "--fast"]).exit_code == 0
    _tamper(data_dir, sql)
    stderr = _no_traceback(runner.invoke(app, ["audit", "verify", "--fast"]))
    assert "log NOT intact: columns at index 13: column(s)" in stderr, stderr


@pytest.mark.parametrize("layer", ["driver", "pool"])
def test_a_database_that_goes_away_mid_export_is_one_line_and_leaves_no_file(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, layer: str) -> None:
    """The lean read of the entries goes to the driver itself, so a database lost half-way raised the driver's
    own error (no SQLAlchemy error, which the command explained): a traceback, with exit status 1 only by luck.
    Either layer noticing it ends the export with one line, and nothing under the name asked for."""
    from sqlalchemy.exc import OperationalError

    from audit import store

    lost = sqlite3.OperationalError("unable to open database file")
    error = lost if layer == "driver" else OperationalError("SELECT", None, lost)
    original = store.leaf_batches

    def failing(*args: Any, **kwargs: Any) -> Iterator[list[tuple[Any, ...]]]:
        for batch in original(*args, **{**kwargs, "batch_size": 5}):
            yield batch
            raise error  # the next batch's read: the database is gone

    monkeypatch.setattr(store, "leaf_batches", failing)
    out = data_dir / "log.jsonl"
    stderr = _no_traceback(runner.invoke(app, ["audit", "export", "--out", str(out)]))
    assert stderr == "export failed: audit log read failed (OperationalError); nothing was exported", stderr
    assert not [p.name for p in data_dir.iterdir() if "jsonl" in p.name], "no file, partial or final"


def test_a_log_that_cannot_be_read_is_one_line_not_a_verdict(data_dir: Path) -> None:
    """Text that is not UTF-8 in the canonical column: the driver cannot hand it over at all. That is no
    verdict of intact or not, but it must not be a traceback either."""
    _tamper(data_dir, "UPDATE audit_entries SET canonical = CAST(X'EDA080' AS TEXT) WHERE log_index = 13")
    stderr = _no_traceback(runner.invoke(app, ["audit", "verify"]))
    assert stderr.startswith("log NOT verified:"), stderr


@pytest.mark.parametrize("line", [0, 1, 4 + 13], ids=["header", "checkpoint", "entry"])
def test_an_endless_line_is_refused_without_reading_it_into_memory(
        tmp_path: Path, exported: tuple[list[bytes], str], line: int) -> None:
    """An export comes from whoever hands it over. Lines were read whole, so one line of a few gigabytes (no
    newline anywhere) was held in memory, and matched, before being refused. No export line can be longer than
    an entry can be (events are at most MAX_EVENT_BYTES): a longer one is a format verdict after reading a
    bounded amount."""
    import tracemalloc

    from audit import NoteVerifier, verify_export

    lines, key = exported
    huge = b'{"entry":{"' + b"x" * (40 * 1024 * 1024)  # 40 MB, and no end of line
    path = tmp_path / "endless.jsonl"
    path.write_bytes(b"".join(lines[:line]) + huge)
    tracemalloc.start()
    try:
        result = verify_export(path, verifier=NoteVerifier.from_vkey(key))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.failure is not None
    assert result.failure.kind.value == "format", result.failure
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"
    assert "log NOT intact: format" in _verify_file(tmp_path, path.read_bytes(), key)


def test_an_export_of_the_largest_entries_still_verifies(sqlite_db_url: str, tmp_path: Path) -> None:
    """The line bound leaves room for every entry the log can hold: events up to MAX_EVENT_BYTES."""
    from audit import AuditLog, InvalidEvent, export_log, verify_export
    from audit.canonical import MAX_EVENT_BYTES
    from gateway.db.engine import make_engine
    from tests.audit_support import log_signer, make_event

    engine = make_engine(sqlite_db_url)
    try:
        log = AuditLog(engine, log_signer())
        size = MAX_EVENT_BYTES - 1200
        while True:  # the largest filler the log accepts
            try:
                log.append([make_event(1, extra={"filler": "\u00e9" * (size // 2)})])
                size += 64
            except InvalidEvent:
                break
        assert size > MAX_EVENT_BYTES - 1200
        out = tmp_path / "largest.jsonl"
        export_log(log, out)
        result = verify_export(out, verifier=log.verifier)
    finally:
        engine.dispose()
    assert result.ok, result.failure


@pytest.mark.parametrize("sql", [
    "UPDATE audit_checkpoints SET issued_at = 'noon' WHERE tree_size = 24",
    "UPDATE audit_checkpoints SET tree_size = 'sixteen' WHERE tree_size = 16",
], ids=["latest issued_at", "tree_size"])
def test_an_export_of_a_log_edited_behind_its_back_is_one_line_pointing_to_verify(data_dir: Path, sql: str) -> None:
    """The export copies what verification then judges; a row it cannot even read ends it in one line that
    says where to look, and leaves no file."""
    _tamper(data_dir, sql)
    out = data_dir / "log.jsonl"
    stderr = _no_traceback(runner.invoke(app, ["audit", "export", "--out", str(out)]))
    assert stderr.startswith("export failed:"), stderr
    assert "audit verify" in stderr
    assert not out.exists()
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".partial")]


def test_an_export_whose_signature_fails_on_an_edited_tree_is_one_line_pointing_to_verify(data_dir: Path) -> None:
    """Entries past the last checkpoint make the export sign one at its size, from the cached subtrees; with
    those deleted behind the log's back the signing fails (an ``AuditWriteError``), which escaped the command as
    a traceback while a row it could not read was one line."""
    from audit import AuditLog, CheckpointPolicy
    from gateway.auditing.setup import audit_signer
    from gateway.db.engine import make_engine
    from gateway.settings import Settings
    from tests.audit_support import make_event

    settings = Settings()
    engine = make_engine(settings.effective_database_url)
    try:
        AuditLog(engine, audit_signer(settings), policy=CheckpointPolicy(every_entries=8, every_seconds=None)).append(
            [make_event(100 + i) for i in range(3)])  # not covered by a checkpoint: the export signs one
    finally:
        engine.dispose()
    _tamper(data_dir, "DELETE FROM audit_tree_nodes")
    out = data_dir / "log.jsonl"
    stderr = _no_traceback(runner.invoke(app, ["audit", "export", "--out", str(out)]))
    assert stderr.startswith("export failed:"), stderr
    assert "audit verify" in stderr
    assert not out.exists()


def _forged_export(tmp_path: Path) -> Path:
    """An export that whoever holds the log's file could make: every entry, checkpoint and the header's key their
    own (a log of their making under the log's origin, signed with a key of theirs)."""
    from alembic import command

    from audit import AuditLog, export_log
    from gateway.auditing.setup import log_origin
    from gateway.db.engine import alembic_config, make_engine
    from gateway.settings import Settings
    from tests.audit_support import log_signer, make_event

    url = f"sqlite:///{tmp_path / 'forger.sqlite'}"
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    try:
        log = AuditLog(engine, log_signer("forger", name=log_origin(Settings().issuer)))
        log.append([make_event(n) for n in range(5)])
        export_log(log, tmp_path / "forged.jsonl")
    finally:
        engine.dispose()
    return tmp_path / "forged.jsonl"


def test_an_export_is_never_intact_on_the_key_it_names_itself(data_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``--key`` an export was verified with the key in its own header, and a rewritten file (entries,
    checkpoints and key alike) came out "log intact", exit 0, with only a warning. The key must come from outside
    the evidence: without ``--key`` the export is checked against the log's key from the key store where there
    is one (as the live log is), and refused (usage error) where there is none."""
    forged = _forged_export(tmp_path)
    here = runner.invoke(app, ["audit", "verify", "--export", str(forged)])  # beside the log's key store
    assert here.exit_code == 1, here.output
    assert "log intact" not in here.output
    assert "log NOT intact: key" in " ".join(here.stderr.split())
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "elsewhere"))  # an officer's machine: no key store
    away = runner.invoke(app, ["audit", "verify", "--export", str(forged)])
    assert away.exit_code == 2, away.output
    assert "log intact" not in away.output
    assert "--key" in away.stderr
    exported = data_dir / "log.jsonl"  # the log's own export still verifies without --key beside its key
    monkeypatch.setenv("WGS_DATA_DIR", str(data_dir))
    assert runner.invoke(app, ["audit", "export", "--out", str(exported)]).exit_code == 0
    assert runner.invoke(app, ["audit", "verify", "--export", str(exported)]).exit_code == 0


# -- checkpoint ---------------------------------------------------------------------------------------------------


def test_the_latest_checkpoint_is_printed_or_written_whole_for_keeping(data_dir: Path) -> None:
    """What an officer keeps apart from the gateway and later hands to `audit verify --checkpoint` (or, after a
    restore, to `db record-restore --latest-checkpoint`): the newest checkpoint exactly as signed."""
    newest = newest_checkpoint_note(data_dir / "gateway.sqlite")
    printed = runner.invoke(app, ["audit", "checkpoint"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == newest
    assert printed.stdout.startswith(f"{_origin(newest)}\n24\n")
    kept = data_dir / "kept" / "checkpoint.txt"
    kept.parent.mkdir()
    written = runner.invoke(app, ["audit", "checkpoint", "--out", str(kept)])
    assert written.exit_code == 0, written.output
    assert "size 24" in written.stdout
    assert kept.read_text(encoding="utf-8") == newest
    assert [path.name for path in kept.parent.iterdir()] == ["checkpoint.txt"], "no draft left beside it"
    assert runner.invoke(app, ["audit", "verify", "--checkpoint", str(kept)]).exit_code == 0


def _origin(note: str) -> str:
    return note.split("\n", 1)[0]


@pytest.mark.parametrize("sql", [
    "UPDATE audit_checkpoints SET root_hash = zeroblob(32) WHERE tree_size = 24",
    "UPDATE audit_checkpoints SET note = replace(note, char(10) || '24' || char(10), char(10) || '25' || char(10)) "
    "WHERE tree_size = 24",
], ids=["row-disagrees-with-note", "note-edited"])
def test_a_latest_checkpoint_that_does_not_verify_is_not_handed_out(data_dir: Path, sql: str) -> None:
    """A kept checkpoint the log's key never signed, or one whose root the tree does not have, would make the
    officer's later check fail for the wrong reason (or a restore rotate for nothing): refused, nothing written,
    and a file already at the path is left as it was."""
    kept = data_dir / "checkpoint.txt"
    kept.write_text("kept before\n", encoding="utf-8")
    _tamper(data_dir, sql)
    for command in (["audit", "checkpoint"], ["audit", "checkpoint", "--out", str(kept)]):
        stderr = _no_traceback(runner.invoke(app, command))
        assert stderr.startswith("the latest checkpoint does not verify"), stderr
        assert "audit verify" in stderr
    assert kept.read_text(encoding="utf-8") == "kept before\n"


def test_a_log_without_a_checkpoint_yet_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared_data_dir(tmp_path, monkeypatch)
    stderr = _no_traceback(runner.invoke(app, ["audit", "checkpoint"]))
    assert stderr.startswith("no checkpoint has been signed yet"), stderr


def test_a_checkpoint_path_that_cannot_be_written_is_one_line(data_dir: Path) -> None:
    stderr = _no_traceback(runner.invoke(app, ["audit", "checkpoint", "--out",
                                               str(data_dir / "missing" / "checkpoint.txt")]))
    assert stderr.startswith("cannot write"), stderr
