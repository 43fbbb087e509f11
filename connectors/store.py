"""A partner's own database: an SQLite file with its slice of the synthetic world.

Each simulated partner has a separate file (``partner-<system>.sqlite``), created and seeded on first start,
so partners share no storage with each other or with the gateway. The file remembers the digest of the world
it was seeded from; a different seed or a changed generator re-seeds it instead of serving stale data.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Literal

from connectors.world import Record, World

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    record_id TEXT PRIMARY KEY, subject TEXT NOT NULL, record_type TEXT NOT NULL,
    category TEXT NOT NULL, fields TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_records_subject ON records(subject);
CREATE TABLE IF NOT EXISTS confidential (subject TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS minors (subject TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identifiers (subject TEXT PRIMARY KEY, kind TEXT NOT NULL, number TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pseudonyms (
    partnership TEXT NOT NULL, pseudonym TEXT NOT NULL, subject TEXT NOT NULL,
    PRIMARY KEY (partnership, pseudonym, subject));
CREATE INDEX IF NOT EXISTS ix_pseudonyms_subject ON pseudonyms(subject);
CREATE TABLE IF NOT EXISTS received (
    request_id TEXT NOT NULL, subject TEXT NOT NULL, category TEXT NOT NULL, fields TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_received_request ON received(request_id);
"""


def _one_pseudonym_many_references(db: sqlite3.Connection) -> None:
    """Move a store made when ``pseudonyms`` was keyed by (partnership, pseudonym) to the current key, which
    includes the reference, keeping what it remembers (each old row is one row of the new table).

    Why: a partner can hold one person under two references (two files, or a confidential and a plain one);
    both enrol as the same person and come back with the same pseudonym. Keyed by pseudonym alone, the second
    replaced the first, so a question about that person found only one reference's records — and, when the
    confidential reference was the one replaced, an answer where the partner refuses."""
    keyed = [row[1] for row in db.execute("PRAGMA table_info(pseudonyms)") if row[5]]
    if not keyed or "subject" in keyed:  # a new file, or already moved
        return
    with db:
        db.execute("DROP INDEX IF EXISTS ix_pseudonyms_subject")
        db.execute("ALTER TABLE pseudonyms RENAME TO pseudonyms_by_pseudonym")
        db.execute("CREATE TABLE pseudonyms (partnership TEXT NOT NULL, pseudonym TEXT NOT NULL, "
                   "subject TEXT NOT NULL, PRIMARY KEY (partnership, pseudonym, subject))")
        db.execute("INSERT INTO pseudonyms SELECT partnership, pseudonym, subject FROM pseudonyms_by_pseudonym")
        db.execute("DROP TABLE pseudonyms_by_pseudonym")


def store_path(data_dir: Path, system: str) -> Path:
    """Where ``system``'s database lives under ``data_dir``."""
    return data_dir / f"partner-{system}.sqlite"


class PartnerStore:
    """All SQL of one simulated partner; thread-safe (the HTTP handlers run in worker threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        _one_pseudonym_many_references(self._db)
        self._db.executescript(_SCHEMA)

    def seed_from(self, world: World, system: str) -> bool:
        """Fill the store with ``system``'s slice of ``world`` unless it already holds exactly that world.
        Returns whether it (re-)seeded."""
        marker = f"{system}:{world.digest()}:store-v3"  # v2: identifiers and pseudonyms; v3: minors
        with self._lock, self._db:
            seeded = self._db.execute("SELECT value FROM meta WHERE key='world'").fetchone()
            if seeded and seeded[0] == marker:
                return False
            self._db.execute("DELETE FROM records")
            self._db.execute("DELETE FROM confidential")
            self._db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                [(r.record_id, r.subject, r.record_type, r.category, json.dumps(r.fields, sort_keys=True))
                 for r in world.records.get(system, [])])
            self._db.executemany("INSERT INTO confidential VALUES (?)",
                                 [(s,) for s in sorted(world.confidential.get(system, set()))])
            self._db.execute("DELETE FROM identifiers")
            self._db.execute("DELETE FROM pseudonyms")  # a new world: enrol again
            subjects = sorted({r.subject for r in world.records.get(system, [])})
            held = set(subjects)
            self._db.execute("DELETE FROM minors")  # from the dates of birth the partner holds
            self._db.executemany("INSERT INTO minors VALUES (?)",
                                 [(p.subject_ref,) for p in world.persons if p.is_minor and p.subject_ref in held])
            self._db.executemany("INSERT INTO identifiers VALUES (?, ?, ?)",
                                 [(ref, *world.identifier_of(ref)) for ref in subjects])
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('world', ?)", (marker,))
        return True

    def records(self, subjects: list[str], categories: list[str] | None = None) -> list[Record]:
        """Records about ``subjects`` (only in ``categories`` when given), in a stable order."""
        if not subjects or categories == []:
            return []
        sql = ("SELECT record_id, subject, record_type, category, fields FROM records "
               f"WHERE subject IN ({','.join('?' * len(subjects))})")
        params: list[str] = list(subjects)
        if categories is not None:
            sql += f" AND category IN ({','.join('?' * len(categories))})"
            params += categories
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY record_id", params).fetchall()
        return [Record(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def enrolment(self) -> list[tuple[str, str, str, list[str], list[str], bool, bool]]:
        """Per subject held: (reference, identifier kind, number, record types, categories, confidential,
        minor) — what the partner turns into polymorphic pseudonyms and enrols, with the grounds it refuses
        on (its confidential and minors lists), so that the gateway's index refuses where it would."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.subject, i.kind, i.number, group_concat(DISTINCT r.record_type), "
                "group_concat(DISTINCT r.category), "
                "EXISTS (SELECT 1 FROM confidential c WHERE c.subject = i.subject), "
                "EXISTS (SELECT 1 FROM minors m WHERE m.subject = i.subject) "
                "FROM identifiers i JOIN records r ON r.subject = i.subject "
                "GROUP BY i.subject ORDER BY i.subject").fetchall()
        return [(r[0], r[1], r[2], sorted(r[3].split(",")), sorted(r[4].split(",")), bool(r[5]), bool(r[6]))
                for r in rows]

    def remember_pseudonyms(self, partnership: str, pairs: list[tuple[str, str]]) -> None:
        """Keep (own pseudonym, reference) pairs the gateway handed out at enrolment. Two references of one
        person get the same pseudonym, and both are kept: the pseudonym stands for the person, and a question
        about it is about every reference of the person this partner holds."""
        with self._lock, self._db:
            self._db.executemany("INSERT OR IGNORE INTO pseudonyms VALUES (?, ?, ?)",
                                 [(partnership, pseudonym, ref) for pseudonym, ref in pairs])

    def own_pseudonyms(self, partnership: str, refs: list[str]) -> dict[str, str]:
        """Own reference → own pseudonym in ``partnership``, for the references that were enrolled."""
        if not refs:
            return {}
        marks = ",".join("?" * len(refs))
        with self._lock:
            return {ref: pseudonym for pseudonym, ref in self._db.execute(
                f"SELECT pseudonym, subject FROM pseudonyms WHERE partnership = ? AND subject IN ({marks})",
                [partnership, *refs]).fetchall()}

    def resolve(self, partnership: str, asked: list[str]) -> dict[str, list[str]]:
        """Asked subject → own references: own pseudonyms of ``partnership`` through its enrolment mapping, to
        every reference the partner holds the person under (one person may be held under several, and all of
        them are the person asked about — answering from one only withholds records, or, when another is
        confidential, answers where the partner refuses); references of partners that send them directly
        (before enrolment) as they are. Unknown pseudonyms resolve to nothing: the partner holds nothing on
        that subject. A pseudonym of another partnership is unknown here: a query is answered within its own
        partnership's domain, or pseudonyms would link across partnerships, which they exist to prevent."""
        if not asked:
            return {}
        marks = ",".join("?" * len(asked))
        with self._lock:
            rows = self._db.execute(
                f"SELECT pseudonym, subject FROM pseudonyms WHERE partnership = ? AND pseudonym IN ({marks}) "
                "ORDER BY subject", [partnership, *asked]).fetchall()
        mapped: dict[str, list[str]] = {}
        for pseudonym, ref in rows:
            mapped.setdefault(pseudonym, []).append(ref)
        return {a: mapped.get(a, [a]) for a in asked}

    def is_confidential(self, subjects: list[str]) -> bool:
        """Whether any of ``subjects`` is one this partner refuses to answer about."""
        return self._any_listed("confidential", subjects)

    def any_minor(self, subjects: list[str]) -> bool:
        """Whether any of ``subjects`` is a person under 18 by the date of birth this partner holds."""
        return self._any_listed("minors", subjects)

    def _any_listed(self, table: Literal["confidential", "minors"], subjects: list[str]) -> bool:
        """Whether any of ``subjects`` is in ``table`` (a one-column list of subject references)."""
        if not subjects:
            return False
        marks = ",".join("?" * len(subjects))
        with self._lock:
            return self._db.execute(f"SELECT 1 FROM {table} WHERE subject IN ({marks}) LIMIT 1",
                                    subjects).fetchone() is not None

    def receive(self, request_id: str | None, records: list[dict[str, Any]]) -> int:
        """Keep records a requester handed over (e.g. dissolution grounds for the KvK); returns how many.

        Idempotent per ``request_id``: a request id already taken in is not taken in again (the gateway
        retries a failed call with the same id, and a request id names one request), and the count kept
        for it is returned. Without a request id the records are kept, as the gateway then never retries."""
        with self._lock, self._db:
            if request_id is not None:
                kept = int(self._db.execute("SELECT COUNT(*) FROM received WHERE request_id = ?",
                                            (request_id,)).fetchone()[0])
                if kept:
                    return kept
            self._db.executemany("INSERT INTO received VALUES (?, ?, ?, ?)", [
                (request_id or "", r["subject"], r["category"], json.dumps(r["fields"], sort_keys=True))
                for r in records])  # "": no request id (a request id is never empty)
        return len(records)

    def received(self, subject: str) -> list[tuple[str, dict[str, Any]]]:
        """(category, fields) of what was handed over about ``subject``, in arrival order."""
        with self._lock:
            rows = self._db.execute("SELECT category, fields FROM received WHERE subject = ? ORDER BY rowid",
                                    (subject,)).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
