"""What a database holds that a backup's manifest records, and that its check compares with the copy.

Only references: the migration revisions, the audit log's size and newest checkpoint (tree size and root hash,
which anyone holding a checkpoint can compare), and the register version last loaded with its digest. Nothing
here names a person or holds a key, so the manifest can lie beside the backup unencrypted.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, select
from sqlalchemy.pool import NullPool

from audit.store import latest_checkpoint, tree_size
from gateway.register.tables import register_versions


@dataclass(frozen=True)
class DatabaseState:
    """The recorded state; ``checkpoint_size`` and ``checkpoint_root`` are None for a log never signed."""

    migration_heads: tuple[str, ...]
    audit_size: int
    checkpoint_size: int | None
    checkpoint_root: str | None
    register_version: str | None
    register_sha256: str | None

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["migration_heads"] = list(self.migration_heads)
        return document

    @classmethod
    def from_json(cls, document: Any) -> DatabaseState:
        """The state a manifest recorded; ``ValueError`` when it is not one (an edited or foreign file)."""
        try:
            state = cls(migration_heads=tuple(document["migration_heads"]), audit_size=document["audit_size"],
                        checkpoint_size=document["checkpoint_size"], checkpoint_root=document["checkpoint_root"],
                        register_version=document["register_version"],
                        register_sha256=document["register_sha256"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"the database state is incomplete ({type(exc).__name__}: {exc})") from None
        if not isinstance(state.audit_size, int) or not all(isinstance(h, str) for h in state.migration_heads):
            raise ValueError("the database state holds values of the wrong type")
        return state


def database_state(connection: Connection) -> DatabaseState:
    """The state of the database behind ``connection``, read in its one transaction."""
    heads = tuple(sorted(MigrationContext.configure(connection).get_current_heads()))
    checkpoint = latest_checkpoint(connection)
    register = connection.execute(
        select(register_versions.c.version, register_versions.c.sha256)
        .order_by(register_versions.c.loaded_at.desc(), register_versions.c.version.desc()).limit(1)).first()
    return DatabaseState(
        migration_heads=heads, audit_size=tree_size(connection),
        checkpoint_size=None if checkpoint is None else checkpoint.tree_size,
        checkpoint_root=None if checkpoint is None else checkpoint.root_hash.hex(),
        register_version=None if register is None else str(register.version),
        register_sha256=None if register is None else str(register.sha256))


def read_only_sqlite(path: Path) -> Engine:
    """An engine on the SQLite file ``path`` that cannot change it: opened ``mode=ro`` (a missing file is an
    error, not a new database), and without :func:`gateway.db.engine.make_engine`'s pragmas, which switch the
    file to WAL — a write, which would change the bytes whose digest the manifest holds."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
                         poolclass=NullPool, hide_parameters=True)
