"""Escalation workflow: who opened a case, votes of multi-decider tiers, decision ids, comments, legal gaps.

Revision ID: 0012_escalation_workflow
Revises: 0011_escalation
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_escalation_workflow"
down_revision = "0011_escalation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot add a unique constraint in place (Alembic copies the table there).
    with op.batch_alter_table("escalation_cases") as batch:
        batch.add_column(sa.Column("opened_by_org", sa.String(64), nullable=True))
        batch.add_column(sa.Column("opened_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("requested_categories", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("votes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("decision_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint(op.f("uq_escalation_cases_decision_id"), ["decision_id"])
    op.create_table(
        "escalation_comments",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author_org", sa.String(64), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["escalation_cases.id"],
                                name=op.f("fk_escalation_comments_case_id_escalation_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalation_comments")),
    )
    op.create_index(op.f("ix_escalation_comments_case_id"), "escalation_comments", ["case_id"])
    op.create_table(
        "legal_gaps",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("partnership", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_org", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_gaps")),
    )
    op.create_index(op.f("ix_legal_gaps_partnership"), "legal_gaps", ["partnership"])
    op.create_table(
        "legal_gap_cases",
        sa.Column("gap_id", sa.String(36), nullable=False),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["gap_id"], ["legal_gaps.id"], name=op.f("fk_legal_gap_cases_gap_id_legal_gaps")),
        sa.ForeignKeyConstraint(["case_id"], ["escalation_cases.id"],
                                name=op.f("fk_legal_gap_cases_case_id_escalation_cases")),
        sa.PrimaryKeyConstraint("gap_id", "case_id", name=op.f("pk_legal_gap_cases")),
    )


def downgrade() -> None:
    op.drop_table("legal_gap_cases")
    op.drop_index(op.f("ix_legal_gaps_partnership"), table_name="legal_gaps")
    op.drop_table("legal_gaps")
    op.drop_index(op.f("ix_escalation_comments_case_id"), table_name="escalation_comments")
    op.drop_table("escalation_comments")
    with op.batch_alter_table("escalation_cases") as batch:
        batch.drop_constraint(op.f("uq_escalation_cases_decision_id"), type_="unique")
        for column in ("decided_at", "decision_id", "votes", "requested_categories", "opened_by", "opened_by_org"):
            batch.drop_column(column)
