"""Escalation: one active case per exchange and holder; the re-run that holds an allow decision.

A partial unique index makes the database refuse a second active case for the same exchange and holder
(two objections at the same moment); two columns record which re-run holds an allow decision, so that a
decision is used once even by concurrent re-runs.

An upgrade fails (and, on PostgreSQL, changes nothing) if a database already holds two active cases for one
exchange and holder: withdraw one of them first.

Revision ID: 0015_escalation_claims
Revises: 0014_exchange_claims
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_escalation_claims"
down_revision = "0014_exchange_claims"
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('open', 'in_review', 'escalated')")
INDEX = "uq_escalation_cases_active_exchange_holder"


def upgrade() -> None:
    with op.batch_alter_table("escalation_cases") as batch:
        batch.add_column(sa.Column("rerun_claim", sa.String(36), nullable=True))
        batch.add_column(sa.Column("rerun_claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(INDEX, "escalation_cases", ["exchange_id", "holder_org"], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="escalation_cases")  # first: a batch copy of the table would lose its WHERE
    with op.batch_alter_table("escalation_cases") as batch:
        batch.drop_column("rerun_claimed_at")
        batch.drop_column("rerun_claim")
