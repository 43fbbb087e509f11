"""Every way of rewriting history is caught, at the right index: in a live database and in an export file.

The attacker here has full control of the database (the append-only triggers dropped) or of the export
file, but not of the log's signing key. The log has 40 entries with signed checkpoints at 8, 16, 24, 32
and 40; most cases tamper with entry 13, between the checkpoints at 8 and 16.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import rfc8785
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, delete, insert, select, update

from audit.checkpoint import Checkpoint, NoteSigner, open_checkpoint, sign_checkpoint
from audit.export import ENTRY_LINE, entry_line, export_log
from audit.log import AuditLog, CheckpointPolicy
from audit.merkle import CompactRange, flat_index, leaf_hash, node_at_flat_index
from audit.review import subject_disclosures
from audit.tables import audit_checkpoints, audit_entries, audit_tree_nodes
from audit.verify import FailureKind, VerifyResult, verify_database, verify_export
from gateway.db.engine import alembic_config, make_engine
from tests.audit_support import ORIGIN, log_signer, make_event, rebuild_tree_nodes, triggers_disabled

TARGET = 13
SIGNER = log_signer()
IMPOSTOR = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
TABLES = (audit_entries, audit_tree_nodes, audit_checkpoints)
HUGE_NUMBER = '"n":1' + "0" * 5000
"""Valid JSON, but more digits than Python converts to an integer (a ValueError that is no JSON error)."""


def _build_log(engine: Engine) -> AuditLog:
    log = AuditLog(engine, SIGNER, policy=CheckpointPolicy(every_entries=8, every_seconds=None))
    for batch in range(5):
        log.append([make_event(batch * 8 + i) for i in range(8)])
    assert [c.tree_size for c in log.checkpoints()] == [8, 16, 24, 32, 40]
    return log


@dataclass(frozen=True)
class Expect:
    kind: FailureKind
    index: int
    last_index: int | None = None
    checkpoint_size: int | None = None


def _check(result: VerifyResult, expect: Expect) -> str | None:
    failure = result.failure
    if failure is None:
        return "not detected"
    got = Expect(failure.kind, failure.index or 0, failure.last_index, failure.checkpoint_size)
    wanted = Expect(expect.kind, expect.index, expect.last_index or got.last_index,
                    expect.checkpoint_size or got.checkpoint_size)
    return None if got == wanted else f"expected {wanted}, got {got} ({failure.reason})"


# -- live database ---------------------------------------------------------------------------------


def _edit_canonical(connection: Connection, index: int, *, fix_leaf: bool,
                    text: tuple[str, str] = ("tax.debts", "tax.debtz")) -> None:
    canonical = connection.execute(select(audit_entries.c.canonical).where(
        audit_entries.c.log_index == index)).scalar_one()
    changed = canonical.replace(*text, 1)  # one byte
    assert changed != canonical
    values: dict[str, Any] = {"canonical": changed}
    if fix_leaf:
        values["leaf_hash"] = leaf_hash(changed.encode())
    connection.execute(update(audit_entries).where(audit_entries.c.log_index == index).values(**values))


def _shift_up_from(connection: Connection, index: int) -> None:
    last = connection.execute(select(audit_entries.c.log_index).order_by(audit_entries.c.log_index.desc())).first()
    assert last is not None
    for position in range(last[0], index - 1, -1):
        connection.execute(update(audit_entries).where(audit_entries.c.log_index == position)
                           .values(log_index=position + 1))


def _swap(connection: Connection, a: int, b: int) -> None:
    rows = {row.log_index: row for row in connection.execute(
        select(audit_entries.c.log_index, audit_entries.c.canonical, audit_entries.c.leaf_hash)
        .where(audit_entries.c.log_index.in_([a, b])))}
    for mine, other in ((a, b), (b, a)):
        connection.execute(update(audit_entries).where(audit_entries.c.log_index == mine)
                           .values(canonical=rows[other].canonical, leaf_hash=rows[other].leaf_hash))


def _replace_note(connection: Connection, size: int, note: str) -> None:
    connection.execute(update(audit_checkpoints).where(audit_checkpoints.c.tree_size == size).values(note=note))


def _note(connection: Connection, size: int) -> str:
    return str(connection.execute(select(audit_checkpoints.c.note)
                                  .where(audit_checkpoints.c.tree_size == size)).scalar_one())


def _forge_root(connection: Connection, size: int) -> None:
    lines = _note(connection, size).split("\n")
    lines[2] = lines[2][:-2] + ("A=" if lines[2][-2] != "A" else "B=")  # another root, the old signature
    _replace_note(connection, size, "\n".join(lines))


def _resign_with_impostor(connection: Connection, size: int) -> None:
    honest = open_checkpoint(_note(connection, size), SIGNER.verifier)
    _replace_note(connection, size, sign_checkpoint(honest, IMPOSTOR))


def _insert_copy(connection: Connection) -> None:
    _shift_up_from(connection, TARGET)
    source = connection.execute(select(audit_entries).where(audit_entries.c.log_index == 5)).one()._asdict()
    source.update(log_index=TARGET, entry_id=uuid4())
    connection.execute(insert(audit_entries).values(**source))


def _plant_before_the_first(connection: Connection) -> None:
    """An INSERT (which the append-only triggers allow) of a copy of entry 2, a disclosure, at index -1: a row the
    searches, statistics and data-subject look-ups read, before the log's first index."""
    source = connection.execute(select(audit_entries).where(audit_entries.c.log_index == 2)).one()._asdict()
    source.update(log_index=-1, entry_id=uuid4())
    connection.execute(insert(audit_entries).values(**source))


def _edit_and_rebuild_tree_cache(connection: Connection) -> None:
    _edit_canonical(connection, TARGET, fix_leaf=True)
    rebuild_tree_nodes(connection)


# The tamper (what it returns is not used: some are a statement's result), what verification reports, options.
LIVE_CASES: dict[str, tuple[Callable[[Connection], object], Expect, dict[str, Any]]] = {
    "changed byte": (lambda c: _edit_canonical(c, TARGET, fix_leaf=False), Expect(FailureKind.LEAF_HASH, TARGET), {}),
    "changed byte, leaf hash rewritten": (
        lambda c: _edit_canonical(c, TARGET, fix_leaf=True), Expect(FailureKind.NODE_CACHE, 12, 13), {}),
    "changed byte, leaf hash rewritten, cache not checked": (
        lambda c: _edit_canonical(c, TARGET, fix_leaf=True), Expect(FailureKind.ROOT, 8, 15, 16),
        {"check_node_cache": False}),
    "changed byte, leaf hash and whole tree cache rewritten": (
        _edit_and_rebuild_tree_cache, Expect(FailureKind.ROOT, 8, 15, 16), {}),
    "purpose changed in the entry, leaf hash rewritten (columns disagree)": (
        lambda c: _edit_canonical(c, TARGET, fix_leaf=True, text=("bibob-check", "bibob-checc")),
        Expect(FailureKind.COLUMNS, TARGET), {}),
    "number too long to read, leaf hash rewritten": (
        lambda c: _edit_canonical(c, TARGET, fix_leaf=True, text=(f'"n":{TARGET}', HUGE_NUMBER)),
        Expect(FailureKind.ENTRY, TARGET), {}),
    "indexed column changed": (
        lambda c: c.execute(update(audit_entries).where(audit_entries.c.log_index == TARGET)
                            .values(requester_org="someone-else")), Expect(FailureKind.COLUMNS, TARGET), {}),
    "deleted entry": (lambda c: c.execute(delete(audit_entries).where(audit_entries.c.log_index == TARGET)),
                      Expect(FailureKind.GAP, TARGET), {}),
    "inserted entry": (_insert_copy, Expect(FailureKind.INDEX, TARGET), {}),
    "reordered entries": (lambda c: _swap(c, TARGET, 17), Expect(FailureKind.INDEX, TARGET), {}),
    "entry planted before index 0": (_plant_before_the_first, Expect(FailureKind.GAP, -1), {}),
    "truncated log": (lambda c: c.execute(delete(audit_entries).where(audit_entries.c.log_index >= 30)),
                      Expect(FailureKind.TRUNCATED, 30, None, 32), {}),
    "forged checkpoint": (lambda c: _forge_root(c, 16), Expect(FailureKind.SIGNATURE, 16), {}),
    "checkpoint from another key": (lambda c: _resign_with_impostor(c, 24), Expect(FailureKind.SIGNATURE, 24), {}),
    "checkpoint root column changed": (
        lambda c: c.execute(update(audit_checkpoints).where(audit_checkpoints.c.tree_size == 16)
                            .values(root_hash=bytes(32))), Expect(FailureKind.CHECKPOINT, 16), {}),
    "cached subtree corrupted": (
        lambda c: c.execute(update(audit_tree_nodes).where(audit_tree_nodes.c.node_id == flat_index((2, 5)))
                            .values(hash=bytes(32))), Expect(FailureKind.NODE_CACHE, 20, 23), {}),
}


@pytest.fixture
def live_log(db_url: str) -> Iterator[tuple[Engine, AuditLog]]:
    engine = make_engine(db_url)
    yield engine, _build_log(engine)
    engine.dispose()


def _snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as connection:
        return {t.name: [row._asdict() for row in connection.execute(select(t))] for t in TABLES}


def _restore(engine: Engine, snapshot: dict[str, list[dict[str, Any]]]) -> None:
    with triggers_disabled(engine) as connection:
        for table in TABLES:
            connection.execute(delete(table))
            connection.execute(insert(table), snapshot[table.name])


def test_every_tampering_of_the_live_database_is_caught_at_the_right_index(live_log: tuple[Engine, AuditLog]) -> None:
    engine, log = live_log
    assert verify_database(engine, log.verifier).ok
    snapshot = _snapshot(engine)
    problems = {}
    for name, (tamper, expect, options) in LIVE_CASES.items():
        with triggers_disabled(engine) as connection:
            tamper(connection)
        problem = _check(verify_database(engine, log.verifier, **options), expect)
        if problem:
            problems[name] = problem
        _restore(engine, snapshot)
        assert verify_database(engine, log.verifier).ok, f"restoring after {name!r} failed"
    assert not problems, "\n".join(f"{name}: {problem}" for name, problem in problems.items())


def test_an_entry_planted_before_index_0_fails_every_verification(live_log: tuple[Engine, AuditLog]) -> None:
    """An INSERT needs no trigger dropped. Every read of a verification starts at index 0, while the contact
    point's look-up, the statistics and the anomaly flags filter on columns only: the planted disclosure was
    one a data subject was told of, while the log verified as intact."""
    engine, log = live_log
    with engine.begin() as connection:
        _plant_before_the_first(connection)
        subject = connection.execute(select(audit_entries.c.subject_pseudonym)
                                     .where(audit_entries.c.log_index == -1)).scalar_one()
    found = subject_disclosures(engine, frozenset({"riec-noord-holland"}), subject)
    assert [entry.index for entry in found] == [-1, 2]  # what the contact point is shown
    for deep, cache in ((True, True), (False, True), (False, False)):
        result = verify_database(engine, log.verifier, deep=deep, check_node_cache=cache)
        assert _check(result, Expect(FailureKind.GAP, -1)) is None, f"deep={deep}, cache={cache}: {result}"


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)  # SQLite keeps text in a column of bytes
def test_a_cached_subtree_edited_into_text_is_a_node_cache_verdict(db_url: str) -> None:
    """A verification compares the subtrees it completes with the cache, the few far below the rest (a large
    subtree completed at a checkpoint) read by their ids. A hash edited into text made that read a TypeError:
    a traceback from ``audit verify`` (a 500 from the console's "verify now") where a cached subtree edited
    into other bytes is the verdict ``node-cache``."""
    engine = make_engine(db_url)
    try:
        log = AuditLog(engine, SIGNER, policy=CheckpointPolicy(every_entries=64, every_seconds=None))
        for batch in range(5):
            log.append([make_event(batch * 64 + i) for i in range(64)])
        assert verify_database(engine, log.verifier, deep=False).ok
        with triggers_disabled(engine) as connection:
            connection.exec_driver_sql(f"UPDATE audit_tree_nodes SET hash = 'not a hash' "
                                       f"WHERE node_id = {flat_index((8, 0))}")
        for deep in (True, False):
            result = verify_database(engine, log.verifier, deep=deep)
            assert _check(result, Expect(FailureKind.NODE_CACHE, 0, 255)) is None, f"deep={deep}: {result}"
    finally:
        engine.dispose()


def test_a_rolled_back_database_is_caught_with_a_checkpoint_the_verifier_kept(
        live_log: tuple[Engine, AuditLog]) -> None:
    engine, log = live_log
    kept = log.checkpoint().note  # an officer saved the checkpoint at 40 earlier
    with triggers_disabled(engine) as connection:  # restore an old backup: everything after 24 is gone
        connection.execute(delete(audit_entries).where(audit_entries.c.log_index >= 24))
        connection.execute(delete(audit_checkpoints).where(audit_checkpoints.c.tree_size > 24))
        for node_id in list(connection.execute(select(audit_tree_nodes.c.node_id)).scalars()):
            level, index = node_at_flat_index(node_id)
            if ((index + 1) << level) > 24:
                connection.execute(delete(audit_tree_nodes).where(audit_tree_nodes.c.node_id == node_id))
    assert verify_database(engine, log.verifier).ok, "a clean rollback is self-consistent..."
    problem = _check(verify_database(engine, log.verifier, known_checkpoints=[kept]),
                     Expect(FailureKind.TRUNCATED, 24, None, 40))
    assert problem is None, "...but not with a checkpoint seen before"


# -- export file -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("audit-export")
    url = f"sqlite:///{directory / 'audit.sqlite'}"
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    try:
        log = _build_log(engine)
        path = directory / "export.jsonl"
        export_log(log, path)
    finally:
        engine.dispose()
    return path


Lines = list[dict[str, Any]]


def _entries(lines: Lines) -> Lines:
    return [line for line in lines if line["type"] == "entry"]


def _position(lines: Lines, index: int) -> int:
    return next(i for i, line in enumerate(lines) if line["type"] == "entry" and line["index"] == index)


def _change_byte(lines: Lines, *, fix_leaf: bool, text: tuple[str, str] = ("tax.debts", "tax.debtz")) -> None:
    line = lines[_position(lines, TARGET)]
    line["canonical"] = line["canonical"].replace(*text, 1)
    if fix_leaf:
        line["leaf_hash"] = leaf_hash(line["canonical"].encode()).hex()


def _renumber(lines: Lines) -> None:
    for number, line in enumerate(_entries(lines)):
        line["index"] = number
    lines[0]["tree_size"] = len(_entries(lines))


def _delete(lines: Lines, *, renumber: bool) -> None:
    del lines[_position(lines, TARGET)]
    if renumber:
        _renumber(lines)


def _insert_copy_line(lines: Lines) -> None:
    lines.insert(_position(lines, TARGET), dict(lines[_position(lines, 5)]))
    _renumber(lines)


def _reorder(lines: Lines, *, swap_index_fields: bool) -> None:
    a, b = _position(lines, TARGET), _position(lines, 17)
    lines[a], lines[b] = lines[b], lines[a]
    if swap_index_fields:
        lines[a]["index"], lines[b]["index"] = TARGET, 17


def _checkpoint_line(lines: Lines, size: int) -> dict[str, Any]:
    return next(line for line in lines if line["type"] == "checkpoint" and line["tree_size"] == size)


def _forge_exported_root(lines: Lines) -> None:
    line = _checkpoint_line(lines, 16)
    parts = line["note"].split("\n")
    parts[2] = parts[2][:-2] + ("A=" if parts[2][-2] != "A" else "B=")
    line["note"] = "\n".join(parts)


def _resign(lines: Lines, size: int) -> None:
    line = _checkpoint_line(lines, size)
    line["note"] = sign_checkpoint(open_checkpoint(line["note"], SIGNER.verifier), IMPOSTOR)


def _take_over_key(lines: Lines) -> None:
    for line in lines:
        if line["type"] == "checkpoint":
            line["note"] = sign_checkpoint(open_checkpoint(line["note"], SIGNER.verifier), IMPOSTOR)
    lines[0]["verifier_key"] = IMPOSTOR.verifier.vkey


def _truncate(lines: Lines, *, fix_header: bool) -> None:
    lines[:] = [line for line in lines if line["type"] != "entry" or line["index"] < 30]
    if fix_header:
        lines[0]["tree_size"] = 30


def _roll_back(lines: Lines) -> None:
    lines[:] = [line for line in lines
                if not (line["type"] == "entry" and line["index"] >= 24)
                and not (line["type"] == "checkpoint" and line["tree_size"] > 24)]
    lines[0]["tree_size"], lines[0]["checkpoint_count"] = 24, 3


def _drop_checkpoints(lines: Lines, *, above: int) -> None:
    """Remove the checkpoint lines beyond ``above`` entries and announce only the ones left."""
    lines[:] = [line for line in lines if line["type"] != "checkpoint" or line["tree_size"] <= above]
    lines[0]["checkpoint_count"] = sum(line["type"] == "checkpoint" for line in lines)


def _forge_unsigned(lines: Lines) -> None:
    """Drop every checkpoint, then rewrite entry 13 with its leaf hash: only signatures could tell."""
    _drop_checkpoints(lines, above=-1)
    _change_byte(lines, fix_leaf=True)


def _forge_tail(lines: Lines) -> None:
    """Drop the checkpoint at 40, then rewrite entry 35 (after the one at 32) with its leaf hash."""
    _drop_checkpoints(lines, above=32)
    line = lines[_position(lines, 35)]
    line["canonical"] = line["canonical"].replace("tax.debts", "tax.debtz", 1)
    line["leaf_hash"] = leaf_hash(line["canonical"].encode()).hex()


def _forge_consistently(lines: Lines) -> None:
    """Rewrite entry 13 and re-sign every later checkpoint with the impostor's key: the pinned key refuses."""
    _change_byte(lines, fix_leaf=True)
    compact = CompactRange()
    roots = {}
    for line in _entries(lines):
        compact.append(bytes.fromhex(line["leaf_hash"]))
        roots[compact.size] = compact.root()
    for line in lines:
        if line["type"] == "checkpoint" and line["tree_size"] >= 16:
            line["note"] = sign_checkpoint(Checkpoint(ORIGIN, line["tree_size"], roots[line["tree_size"]]), IMPOSTOR)


EXPORT_CASES: dict[str, tuple[Callable[[Lines], None], Expect, dict[str, Any]]] = {
    "changed byte": (lambda ls: _change_byte(ls, fix_leaf=False), Expect(FailureKind.LEAF_HASH, TARGET), {}),
    "changed byte, leaf hash rewritten": (lambda ls: _change_byte(ls, fix_leaf=True),
                                          Expect(FailureKind.ROOT, 8, 15, 16), {}),
    "non-canonical whitespace, leaf hash rewritten (deep)": (
        lambda ls: _change_byte(ls, fix_leaf=True, text=('{"entry_id"', '{ "entry_id"')),
        Expect(FailureKind.ENTRY, TARGET), {}),
    "non-canonical whitespace, leaf hash rewritten (fast)": (
        lambda ls: _change_byte(ls, fix_leaf=True, text=('{"entry_id"', '{ "entry_id"')),
        Expect(FailureKind.ROOT, 8, 15, 16), {"deep": False}),
    "number too long to read, leaf hash rewritten (deep)": (
        lambda ls: _change_byte(ls, fix_leaf=True, text=(f'"n":{TARGET}', HUGE_NUMBER)),
        Expect(FailureKind.ENTRY, TARGET), {}),
    "deleted entry": (lambda ls: _delete(ls, renumber=False), Expect(FailureKind.GAP, TARGET), {}),
    "deleted entry, indices renumbered": (lambda ls: _delete(ls, renumber=True), Expect(FailureKind.INDEX, TARGET),
                                          {}),
    "deleted entry, indices renumbered (fast)": (lambda ls: _delete(ls, renumber=True),
                                                 Expect(FailureKind.INDEX, TARGET), {"deep": False}),
    "inserted entry": (_insert_copy_line, Expect(FailureKind.INDEX, TARGET), {}),
    "reordered lines": (lambda ls: _reorder(ls, swap_index_fields=False), Expect(FailureKind.GAP, TARGET), {}),
    "reordered entries, index fields swapped": (lambda ls: _reorder(ls, swap_index_fields=True),
                                                Expect(FailureKind.INDEX, TARGET), {}),
    "forged checkpoint": (_forge_exported_root, Expect(FailureKind.SIGNATURE, 16), {}),
    "checkpoint from another key": (lambda ls: _resign(ls, 24), Expect(FailureKind.SIGNATURE, 24), {}),
    "consistently forged and re-signed by another key": (_forge_consistently, Expect(FailureKind.SIGNATURE, 16), {}),
    "truncated file": (lambda ls: _truncate(ls, fix_header=False), Expect(FailureKind.TRUNCATED, 30), {}),
    "truncated file, header adjusted": (lambda ls: _truncate(ls, fix_header=True),
                                        Expect(FailureKind.TRUNCATED, 30, None, 32), {}),
    "checkpoints removed, entry and leaf hash rewritten": (_forge_unsigned, Expect(FailureKind.UNCOVERED, 0), {}),
    "checkpoints removed, entry and leaf hash rewritten (fast)": (_forge_unsigned, Expect(FailureKind.UNCOVERED, 0),
                                                                  {"deep": False}),
    "last checkpoint removed, later entry and leaf hash rewritten": (_forge_tail, Expect(FailureKind.UNCOVERED, 32),
                                                                     {}),
    "last checkpoint removed, nothing else changed": (lambda ls: _drop_checkpoints(ls, above=32),
                                                      Expect(FailureKind.UNCOVERED, 32), {}),
}


def _read(path: Path) -> Lines:
    """The export as editable dicts; an entry's canonical bytes become the text under "canonical"."""
    lines: Lines = []
    for raw in path.read_bytes().splitlines(keepends=True):
        match = ENTRY_LINE.match(raw)
        if match is None:
            lines.append(json.loads(raw))
        else:
            lines.append({"type": "entry", "index": int(match.group(2)), "leaf_hash": match.group(3).decode(),
                          "canonical": match.group(1).decode()})
    return lines


def _write(lines: Lines, path: Path) -> None:
    with path.open("wb") as handle:
        for line in lines:
            if line["type"] == "entry":
                handle.write(entry_line(line["index"], bytes.fromhex(line["leaf_hash"]), line["canonical"].encode()))
            else:
                handle.write(json.dumps(line).encode() + b"\n")


def _tampered(exported: Path, tmp_path: Path, tamper: Callable[[Lines], None]) -> Path:
    lines = _read(exported)
    tamper(lines)
    path = tmp_path / "tampered.jsonl"
    _write(lines, path)
    assert path.read_bytes() != exported.read_bytes()
    return path


def test_the_untouched_export_verifies(exported: Path) -> None:
    result = verify_export(exported, verifier=SIGNER.verifier)
    assert result.ok, result.failure
    assert (result.entries, result.checkpoints) == (40, 5)


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_every_tampering_of_an_export_is_caught_at_the_right_index(exported: Path, tmp_path: Path,
                                                                   case: str) -> None:
    tamper, expect, options = EXPORT_CASES[case]
    result = verify_export(_tampered(exported, tmp_path, tamper), verifier=SIGNER.verifier, **options)
    assert _check(result, expect) is None, _check(result, expect)
    assert not result.ok
    with pytest.raises(Exception, match=expect.kind.value):
        result.raise_for_failure()


def test_an_export_re_signed_by_another_key_fails_against_the_pinned_key(exported: Path, tmp_path: Path) -> None:
    path = _tampered(exported, tmp_path, _take_over_key)
    pinned = verify_export(path, verifier=SIGNER.verifier)
    assert pinned.failure is not None
    assert pinned.failure.kind is FailureKind.KEY
    unpinned = verify_export(path)  # trusting the file's own key is exactly what the warning is for
    assert unpinned.ok
    assert not unpinned.key_pinned


def test_a_rolled_back_export_is_caught_with_a_checkpoint_the_verifier_kept(exported: Path, tmp_path: Path) -> None:
    newest = _checkpoint_line(_read(exported), 40)["note"]
    path = _tampered(exported, tmp_path, _roll_back)
    assert verify_export(path, verifier=SIGNER.verifier).ok
    result = verify_export(path, verifier=SIGNER.verifier, known_checkpoints=[newest])
    assert _check(result, Expect(FailureKind.TRUNCATED, 24, None, 40)) is None


def test_a_kept_text_that_is_no_checkpoint_is_a_format_failure_not_a_bad_signature(
        exported: Path, live_log: tuple[Engine, AuditLog]) -> None:
    """A file kept by mistake (an error answer saved instead of the checkpoint) is named as such; filed
    under size 0 it failed as a bad signature at index 0, which reads as damage to the log."""
    engine, log = live_log
    kept, kept_of_export = log.checkpoint().note, _checkpoint_line(_read(exported), 40)["note"]
    assert verify_database(engine, log.verifier, known_checkpoints=[kept]).ok
    assert verify_export(exported, verifier=SIGNER.verifier, known_checkpoints=[kept_of_export]).ok
    for wrong in ('{"title":"Unauthorized","status":401}', kept.replace("\n\n", "\n", 1), ""):
        for result in (verify_database(engine, log.verifier, known_checkpoints=[kept, wrong]),
                       verify_export(exported, verifier=SIGNER.verifier,
                                     known_checkpoints=[kept_of_export, wrong])):
            assert result.failure is not None, wrong
            assert result.failure.kind == FailureKind.FORMAT, result.failure
            assert result.failure.index is None
            assert str(result.failure).startswith("format: kept checkpoint 2 is not a signed checkpoint ("), \
                result.failure


def test_a_reformatted_export_is_refused_as_such(exported: Path, tmp_path: Path) -> None:
    lines = exported.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[-1])
    lines[-1] = json.dumps(entry, indent=None).encode() + b"\n"  # same JSON value, other bytes
    path = tmp_path / "reformatted.jsonl"
    path.write_bytes(b"".join(lines))
    result = verify_export(path, verifier=SIGNER.verifier)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.FORMAT
    assert result.failure.index == 39
    assert "reformatted" in result.failure.reason


def test_export_entry_lines_are_canonical_json_with_the_entry_as_an_object(exported: Path) -> None:
    line = exported.read_bytes().splitlines()[-1]
    last = json.loads(line)
    assert rfc8785.dumps(last) == line
    assert last["index"] == 39
    assert last["entry"]["index"] == 39
    assert last["entry"]["event"]["processing_activity"]["purpose"] == "bibob-check"


def test_an_unpinned_export_must_be_covered_too(exported: Path, tmp_path: Path) -> None:
    result = verify_export(_tampered(exported, tmp_path, _forge_unsigned))
    assert result.failure is not None
    assert (result.failure.kind, result.failure.index) == (FailureKind.UNCOVERED, 0)
    assert "0..39" in result.failure.reason


@pytest.mark.parametrize(("field", "value"), [
    ("tree_size", "twenty"), ("tree_size", -1), ("tree_size", None), ("tree_size", 40.0), ("tree_size", True),
    ("tree_size", [40]), ("checkpoint_count", "5"), ("checkpoint_count", -1), ("checkpoint_count", 5.5),
    ("verifier_key", 5), ("verifier_key", None),
])
def test_a_malformed_export_header_is_a_format_failure_not_a_crash(exported: Path, tmp_path: Path, field: str,
                                                                  value: Any) -> None:
    def malform(lines: Lines) -> None:
        lines[0][field] = value

    for pinned in (SIGNER.verifier, None):
        result = verify_export(_tampered(exported, tmp_path, malform), verifier=pinned)
        assert result.failure is not None
        assert (result.failure.kind, result.failure.index) == (FailureKind.FORMAT, None)
        assert field in result.failure.reason


@pytest.mark.parametrize("value", [-1, True])
def test_a_malformed_checkpoint_line_is_a_format_failure(exported: Path, tmp_path: Path, value: Any) -> None:
    def malform(lines: Lines) -> None:
        _checkpoint_line(lines, 8)["tree_size"] = value

    result = verify_export(_tampered(exported, tmp_path, malform), verifier=SIGNER.verifier)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.FORMAT


def test_garbage_instead_of_an_export_is_a_format_failure(tmp_path: Path) -> None:
    path = tmp_path / "not-an-export.jsonl"
    path.write_text('{"hello": "world"}\n')
    result = verify_export(path, verifier=SIGNER.verifier)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.FORMAT
