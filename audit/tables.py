"""The audit log's tables, in the audit package's own ``MetaData``.

Four append-only tables (the migration adds triggers that reject UPDATE, DELETE and, on PostgreSQL,
TRUNCATE):

* ``audit_entries``: one row per leaf. ``log_index`` is the 0-based, gap-free leaf index; ``canonical``
  holds the exact RFC 8785 bytes (as UTF-8 text) that ``leaf_hash`` commits to. The other columns are
  copies of fields inside ``canonical``, only there so that review queries can use indexes; every
  verification, fast or deep, checks that they agree with the canonical text (:mod:`audit.query_columns`).
  Subjects are found through ``subject_key``, the first 8 bytes of SHA-256 of the pseudonym as a signed
  integer (:func:`audit.store.subject_key`), filtered on ``subject_pseudonym`` itself: pseudonyms are long and
  random, and an index on them made every append write far more index pages (half the throughput).
* ``audit_tree_nodes``: the hash of every complete subtree of two or more leaves. The subtree at
  ``(level, index)`` covers leaves ``[index·2**level, (index+1)·2**level)`` and is keyed by one integer,
  ``node_id = index·2**(level+1) + 2**level - 1`` (its in-order "flat tree" position; the level is the
  number of trailing one bits), so any set of nodes is one primary-key ``IN`` lookup. A complete subtree
  never changes in an append-only tree, so caching it is safe, and any proof or root needs at most
  O(log n) of them. Level 0 (the leaves) is ``audit_entries.leaf_hash``.
* ``audit_checkpoints``: every signed checkpoint issued, keyed by tree size.
* ``audit_checkpoint_keys``: one row per rotation of the checkpoint key (an index of the handover checkpoints).

Beside them ``audit_on_demand``, one row saying when a checkpoint was last signed on demand (not append-only),
and ``audit_anomaly_flags``, one row per ``anomaly.flagged`` entry, keyed by what a flag is logged once for.

The column is called ``log_index`` rather than ``index`` because INDEX is an SQL keyword.
The naming convention is the gateway's, duplicated on purpose: ``audit`` imports nothing of ours.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

APPEND_ONLY_TABLES = ("audit_entries", "audit_tree_nodes", "audit_checkpoints", "audit_checkpoint_keys")

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("log_index", BigInteger, primary_key=True, autoincrement=False),
    Column("entry_id", Uuid, nullable=False, unique=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False, index=True),
    Column("event_type", String(40), nullable=False),
    Column("partnership", String(200), nullable=True),
    Column("purpose", String(200), nullable=True),
    Column("requester_org", String(200), nullable=True, index=True),
    Column("holder_org", String(200), nullable=True, index=True),
    Column("decision", String(20), nullable=True),
    Column("subject_pseudonym", String(1024), nullable=True),
    Column("subject_key", BigInteger, nullable=True, index=True),
    Column("canonical", Text, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Index("ix_audit_entries_partnership_purpose", "partnership", "purpose"),
)

audit_tree_nodes = Table(
    "audit_tree_nodes",
    metadata,
    Column("node_id", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

audit_checkpoint_keys = Table(
    "audit_checkpoint_keys",
    metadata,
    Column("from_size", BigInteger, primary_key=True, autoincrement=False),  # the handover checkpoint's size
    Column("verifier_key", Text, nullable=False),  # the key current from then on
    Column("previous_key", Text, nullable=False),  # the key it retired
    Column("compromised_after", BigInteger, nullable=True),
    Column("rotated_at", DateTime(timezone=True), nullable=False),
)
"""One row per rotation of the checkpoint key (:mod:`audit.keys`), written in the transaction of its handover
checkpoint: an index of the handovers, so that the gateway finds the current key and the history without reading
every checkpoint. Not evidence of its own: verification compares it with the handover checkpoints' signed text.
Append-only like the log."""

audit_on_demand = Table(
    "audit_on_demand",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one row, the whole database's
    Column("signed_at", Float, nullable=False),  # POSIX seconds of the latest checkpoint signed on demand
)
"""When a checkpoint was last signed on demand (:mod:`audit.on_demand`), by any process on the database: the
pace of asking, not part of the log. Not append-only: its one row is overwritten, under the append lock, in
the transaction that stores the checkpoint. Its time is the signing process's wall clock (the log's own clock
is injectable and often frozen in tests)."""

audit_anomaly_flags = Table(
    "audit_anomaly_flags",
    metadata,
    Column("actor", String(200), primary_key=True),
    Column("organisation", String(200), primary_key=True),  # "" for an actor of no organisation
    Column("day", Date, primary_key=True),
    Column("metric", String(40), primary_key=True),
    Column("log_index", BigInteger, nullable=False),  # the index of the flag's ``anomaly.flagged`` entry
)
"""Which anomaly flags the log holds an ``anomaly.flagged`` entry for (:mod:`audit.anomaly`): each row commits in
the transaction of its entry (a companion row, :class:`audit.writer.CompanionRow`), and its primary key is what a
flag is logged once for, so two gateway processes listing the same flag at once cannot both log it. Not part of
the log's evidence (the entries are): bookkeeping that keeps the log from saying a flag twice."""
