"""The checkpoint-key history: one append-only row per rotation of the audit log's checkpoint key
(``audit.tables.audit_checkpoint_keys``), an index of the handover checkpoints that verification compares
with their signed text. Append-only as the log's own tables (the same triggers as 0010_audit).

Revision ID: 0040_checkpoint_keys
Revises: 0039_claim_answers_logged
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0040_checkpoint_keys"
down_revision = "0039_claim_answers_logged"
branch_labels = None
depends_on = None

TABLE = "audit_checkpoint_keys"
PG_FUNCTION = "audit_reject_change"  # created by 0010_audit


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("from_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("verifier_key", sa.Text(), nullable=False),
        sa.Column("previous_key", sa.Text(), nullable=False),
        sa.Column("compromised_after", sa.BigInteger(), nullable=True),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("from_size", name=op.f(f"pk_{TABLE}")),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()")
        op.execute(f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()")
    elif dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {TABLE}_no_{action.lower()} BEFORE {action} ON {TABLE} "
                       f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only ({action} refused)'); END")
    else:  # pragma: no cover - only the two supported engines
        raise NotImplementedError(f"append-only triggers are not written for {dialect}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_{action}")
    op.drop_table(TABLE)  # drops its (PostgreSQL) triggers with it
