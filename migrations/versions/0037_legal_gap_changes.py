"""Legal gaps keep every status change with its note (``legal_gap_changes``): the register is a record, and a
status change with a new note used to overwrite the previous one in ``legal_gaps.note``.

Upgrade carries each gap's current note over as the first row of its history, at the gap's last change, with
its current status: who wrote it and from which status was not kept, so ``actor_org`` and ``status_before`` stay
empty there. ``legal_gaps.note`` stays, holding the latest note (the API's ``note``), so down loses the older
notes only, as the code of 0036 cannot show them.

Revision ID: 0037_legal_gap_changes
Revises: 0036_client_certificate_pins
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
import uuid6
from alembic import op

revision = "0037_legal_gap_changes"
down_revision = "0036_client_certificate_pins"
branch_labels = None
depends_on = None


def upgrade() -> None:
    changes = op.create_table(
        "legal_gap_changes",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("gap_id", sa.String(36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_before", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("actor_org", sa.String(64), nullable=True),
        sa.Column("actor_user", sa.String(128), nullable=True),
        sa.ForeignKeyConstraint(["gap_id"], ["legal_gaps.id"], name=op.f("fk_legal_gap_changes_gap_id_legal_gaps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_gap_changes")),
    )
    op.create_index(op.f("ix_legal_gap_changes_gap_id"), "legal_gap_changes", ["gap_id"])
    gaps = sa.table("legal_gaps", sa.column("id", sa.String), sa.column("status", sa.String),
                    sa.column("updated_at", sa.DateTime(timezone=True)), sa.column("note", sa.Text))
    noted = op.get_bind().execute(sa.select(gaps.c.id, gaps.c.status, gaps.c.updated_at, gaps.c.note)
                                  .where(gaps.c.note.is_not(None)).order_by(gaps.c.updated_at, gaps.c.id)).all()
    if noted:
        op.bulk_insert(changes, [{"id": str(uuid6.uuid7()), "gap_id": row.id, "at": row.updated_at,
                                  "status_before": None, "status": row.status, "note": row.note,
                                  "actor_org": None, "actor_user": None} for row in noted])


def downgrade() -> None:
    op.drop_index(op.f("ix_legal_gap_changes_gap_id"), table_name="legal_gap_changes")
    op.drop_table("legal_gap_changes")
