"""Shared helpers for the audit tests: realistic events, deterministic keys, trigger bypass for tampering."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, MetaData, delete, insert, select, text, update

from audit.checkpoint import NoteSigner
from audit.events import AuditEvent, DataSubject, Decision, EventType, ProcessingActivity, Requester
from audit.merkle import CompactRange, flat_index, leaf_hash
from audit.tables import audit_entries, audit_tree_nodes
from audit.writer import AsyncAuditWriter, CompanionRow
from gateway.db.engine import make_engine

ORIGIN = "wgs.example/audit"


def private_key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


def log_signer(seed: str = "log key", name: str = ORIGIN) -> NoteSigner:
    return NoteSigner(name, private_key(seed))


def trace_id(n: int) -> str:
    return hashlib.sha256(f"trace {n}".encode()).hexdigest()[:32]


def span_id(n: int) -> str:
    return hashlib.sha256(f"span {n}".encode()).hexdigest()[:16]


_TYPES = list(EventType)


def make_event(n: int = 0, **overrides: Any) -> AuditEvent:
    """A plausible, personal-data-free event; ``n`` varies it so that entries differ."""
    fields: dict[str, Any] = {
        "event_type": _TYPES[n % len(_TYPES)],
        "trace_id": trace_id(n),
        "span_id": span_id(n),
        "parent_span_id": span_id(n + 1_000_000) if n % 2 else None,
        "processing_activity": ProcessingActivity(partnership="riec-noord-holland", purpose="bibob-check"),
        "data_subject": DataSubject(pseudonym=hashlib.sha256(f"subject {n % 7}".encode()).hexdigest()),
        "requester": Requester(org=f"gemeente-{n % 3}", system="bibob-desk"),
        "holder": "belastingdienst" if n % 2 else "kvk",
        "decision": list(Decision)[n % len(Decision)],
        "reasons": (f"rule.{n % 5}",),
        "categories": ("tax.debts", "company.directors"),
        "policy_version": "2026.11.1",
        "register_version": "7",
        "obligations": {"retain_until": "2027-11-25", "onward_sharing": False},
        "payload_sha256": hashlib.sha256(f"payload {n}".encode()).hexdigest(),
        "exchange_id": f"ex-{n}",
        "extra": {"n": n},
    }
    fields.update(overrides)
    return AuditEvent(**fields)


APPEND_ONLY_TABLES = ("audit_entries", "audit_tree_nodes", "audit_checkpoints", "audit_checkpoint_keys")


@contextmanager
def triggers_disabled(engine: Engine) -> Iterator[Connection]:
    """Play the attacker with database-owner rights: drop the append-only triggers, yield, put them back.

    Recreates the triggers exactly as migration 0010_audit does, so later checks still see them.
    """
    with engine.begin() as connection:
        dialect = connection.dialect.name
        for table in APPEND_ONLY_TABLES:
            if dialect == "sqlite":
                for action in ("update", "delete"):
                    connection.exec_driver_sql(f"DROP TRIGGER {table}_no_{action}")
            else:
                connection.exec_driver_sql(f"DROP TRIGGER {table}_append_only ON {table}")
        yield connection
        for table in APPEND_ONLY_TABLES:
            if dialect == "sqlite":
                for action in ("UPDATE", "DELETE"):
                    connection.exec_driver_sql(
                        f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only ({action} refused)'); END")
            else:
                connection.exec_driver_sql(
                    f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change()")


def sql(connection: Connection, statement: str, **params: Any) -> Any:
    return connection.execute(text(statement), params)


@contextmanager
def engine_with_tables(db_url: str, metadata: MetaData) -> Iterator[Engine]:
    """An engine on the migrated database ``db_url`` with a test module's own scratch tables added for the test
    and dropped after it (tables that stand in for another package's rows next to the log's, e.g. companion
    rows). Only for such scratch tables: the real schema always comes from the migrations."""
    engine = make_engine(db_url)
    metadata.create_all(engine)
    try:
        yield engine
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def enrol_logged(service: Any, key_dir: Path, *args: Any) -> Any:
    """``service.enrol(*args)`` as the gateway runs it: through an audit writer on the service's database, which
    logs the batch in the transaction that changes the index (signing with the gateway's checkpoint key in
    ``key_dir``, so that the log stays the gateway's). For tests that build a ``PseudonymService`` by hand."""
    from audit import AsyncAuditWriter, AuditLog
    from gateway.auditing.setup import load_or_create_checkpoint_key, log_origin
    from gateway.settings import Settings

    signer = NoteSigner(log_origin(Settings().issuer), load_or_create_checkpoint_key(key_dir))

    async def run() -> Any:
        async with AsyncAuditWriter(AuditLog(service.sessions.kw["bind"], signer)) as writer:
            service.writer = writer
            try:
                return await service.enrol(*args)
            finally:
                service.writer = None

    return asyncio.run(run())


@asynccontextmanager
async def writer_held(writer: AsyncAuditWriter) -> AsyncIterator[None]:
    """The writer thread held inside another caller's transaction while the block runs: what the block hands it
    (each call started there runs up to its wait) is then written in one batch, as under load."""
    held, go = threading.Event(), threading.Event()

    def hold(_connection: Connection) -> None:
        held.set()
        go.wait(10)

    holder = asyncio.ensure_future(writer.record([make_event(99)], CompanionRow(None, None, hold)))
    try:
        assert await asyncio.to_thread(held.wait, 10)
        yield
        await asyncio.sleep(0)  # each call started in the block runs up to its wait: all are queued
    finally:
        go.set()
        await holder


def forge_entry(connection: Connection, index: int) -> None:
    """Play the thorough forger (run inside :func:`triggers_disabled`): rewrite entry ``index`` and its leaf hash,
    then rebuild every cached subtree from the forged leaves, so that the cache agrees with them."""
    canonical = connection.execute(select(audit_entries.c.canonical)
                                   .where(audit_entries.c.log_index == index)).scalar_one()
    forged = canonical.replace('"n":', '"n":1', 1)
    assert forged != canonical
    connection.execute(update(audit_entries).where(audit_entries.c.log_index == index)
                       .values(canonical=forged, leaf_hash=leaf_hash(forged.encode())))
    rebuild_tree_nodes(connection)


def rebuild_tree_nodes(connection: Connection) -> None:
    """The thorough forger's second step: recompute every cached subtree from the (forged) leaves."""
    leaves = connection.execute(select(audit_entries.c.leaf_hash).order_by(audit_entries.c.log_index)).scalars()
    compact, nodes = CompactRange(), []
    for leaf in leaves:
        nodes.extend(compact.append(bytes(leaf)))
    connection.execute(delete(audit_tree_nodes))
    connection.execute(insert(audit_tree_nodes), [{"node_id": flat_index(node), "hash": h} for node, h in nodes])
