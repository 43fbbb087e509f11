"""The pseudonym enrolments that make the hit/no-hit discovery index.

Revision ID: 0013_enrolments
Revises: 0012_escalation_workflow
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_enrolments"
down_revision = "0012_escalation_workflow"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrolments",
        sa.Column("partnership", sa.String(64), nullable=False),
        sa.Column("organisation", sa.String(64), nullable=False),
        sa.Column("pseudonym", sa.String(128), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("record_types", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partnership", "organisation", "pseudonym", name=op.f("pk_enrolments")),
    )
    op.create_index("ix_enrolments_partnership_pseudonym", "enrolments", ["partnership", "pseudonym"])


def downgrade() -> None:
    op.drop_index("ix_enrolments_partnership_pseudonym", table_name="enrolments")
    op.drop_table("enrolments")
