"""A partner's own database: an SQLite file with its slice of the synthetic world.

Each simulated partner has a separate file, created and seeded on first start, so partners share no
storage with each other or with the gateway.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from connectors.world import Record, World

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    record_id TEXT PRIMARY KEY, subject TEXT NOT NULL, record_type TEXT NOT NULL,
    category TEXT NOT NULL, fields TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_records_subject ON records(subject);
CREATE TABLE IF NOT EXISTS confidential (subject TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS received (
    request_id TEXT NOT NULL, subject TEXT NOT NULL, category TEXT NOT NULL, fields TEXT NOT NULL);
"""


class PartnerStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.executescript(_SCHEMA)

    def seed_from(self, world: World, system: str) -> None:
        """Fill the store with the partner's slice of ``world`` once (idempotent per seed)."""
        with self._lock, self._db:
            seeded = self._db.execute("SELECT value FROM meta WHERE key='seed'").fetchone()
            if seeded and seeded[0] == str(world.seed):
                return
            self._db.execute("DELETE FROM records")
            self._db.execute("DELETE FROM confidential")
            self._db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                [(r.record_id, r.subject, r.record_type, r.category, json.dumps(r.fields, sort_keys=True))
                 for r in world.records.get(system, [])])
            self._db.executemany("INSERT INTO confidential VALUES (?)",
                                 [(s,) for s in sorted(world.confidential.get(system, set()))])
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('seed', ?)", (str(world.seed),))

    def records(self, subjects: list[str], categories: list[str] | None = None) -> list[Record]:
        marks = ",".join("?" * len(subjects))
        sql = f"SELECT record_id, subject, record_type, category, fields FROM records WHERE subject IN ({marks})"
        params: list[str] = list(subjects)
        if categories is not None:
            sql += f" AND category IN ({','.join('?' * len(categories))})"
            params += categories
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY record_id", params).fetchall()
        return [Record(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def is_confidential(self, subjects: list[str]) -> bool:
        marks = ",".join("?" * len(subjects))
        with self._lock:
            return self._db.execute(f"SELECT 1 FROM confidential WHERE subject IN ({marks}) LIMIT 1",
                                    subjects).fetchone() is not None

    def receive(self, request_id: str, records: list[dict[str, Any]]) -> int:
        """Keep records a requester handed over (e.g. dissolution grounds for the KvK)."""
        with self._lock, self._db:
            self._db.executemany("INSERT INTO received VALUES (?, ?, ?, ?)", [
                (request_id, r["subject"], r["category"], json.dumps(r["fields"], sort_keys=True)) for r in records])
        return len(records)

    def received(self, subject: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute("SELECT category, fields FROM received WHERE subject = ?", (subject,)).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        self._db.close()
