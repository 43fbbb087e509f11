"""Audit log: entries, cached Merkle subtree hashes, signed checkpoints; append-only by trigger.

The triggers make the database itself refuse UPDATE and DELETE on the log tables (and TRUNCATE on
PostgreSQL), so that a bug or a casual operator cannot rewrite history; the Merkle tree and the signed
checkpoints make any change that gets past the database detectable anyway.

Revision ID: 0010_audit
Revises: 0003_exchange
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_audit"
down_revision = "0003_exchange"
branch_labels = None
depends_on = None

TABLES = ("audit_entries", "audit_tree_nodes", "audit_checkpoints")
PG_FUNCTION = "audit_reject_change"


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("log_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("partnership", sa.String(200), nullable=True),
        sa.Column("purpose", sa.String(200), nullable=True),
        sa.Column("requester_org", sa.String(200), nullable=True),
        sa.Column("holder_org", sa.String(200), nullable=True),
        sa.Column("decision", sa.String(20), nullable=True),
        sa.Column("subject_pseudonym", sa.String(1024), nullable=True),
        sa.Column("subject_key", sa.BigInteger(), nullable=True),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("log_index", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_audit_entries_entry_id")),
    )
    op.create_index(op.f("ix_audit_entries_recorded_at"), "audit_entries", ["recorded_at"])
    op.create_index(op.f("ix_audit_entries_requester_org"), "audit_entries", ["requester_org"])
    op.create_index(op.f("ix_audit_entries_holder_org"), "audit_entries", ["holder_org"])
    op.create_index(op.f("ix_audit_entries_subject_key"), "audit_entries", ["subject_key"])
    op.create_index("ix_audit_entries_partnership_purpose", "audit_entries", ["partnership", "purpose"])

    op.create_table(
        "audit_tree_nodes",
        sa.Column("node_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_audit_tree_nodes")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_audit_checkpoints")),
    )

    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # No '%' and no ':' in these statements: they pass through SQLAlchemy's text() and the driver.
        op.execute(
            f"CREATE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only ('"
            " || TG_OP || ' refused)', ERRCODE = 'restrict_violation'; END $$"
        )
        for table in TABLES:
            # Statement-level, so even a DELETE or UPDATE that matches no row is refused.
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()")
    elif dialect == "sqlite":
        for table in TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{table} is append-only ({action} refused)'); END")
    else:  # pragma: no cover - only the two supported engines
        raise NotImplementedError(f"append-only triggers are not written for {dialect}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in TABLES:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    for table in reversed(TABLES):
        op.drop_table(table)  # drops the table's indexes and (PostgreSQL) triggers with it
    if dialect == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {PG_FUNCTION}()")
