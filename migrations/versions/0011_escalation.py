"""Escalation cases and their history.

Revision ID: 0011_escalation
Revises: 0010_audit
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_escalation"
down_revision = "0010_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "escalation_cases",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("exchange_id", sa.String(36), nullable=True),
        sa.Column("request_fingerprint", sa.String(64), nullable=True),
        sa.Column("partnership", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("requester_org", sa.String(64), nullable=False),
        sa.Column("holder_org", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.Date(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("register_version", sa.String(64), nullable=False),
        sa.Column("policy_reasons", sa.JSON(), nullable=False),
        sa.Column("decision", sa.JSON(), nullable=True),
        sa.Column("legal_gap", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalation_cases")),
    )
    op.create_table(
        "escalation_events",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor_org", sa.String(64), nullable=True),
        sa.Column("actor_user", sa.String(64), nullable=True),
        sa.Column("motivation", sa.Text(), nullable=True),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["escalation_cases.id"],
                                name=op.f("fk_escalation_events_case_id_escalation_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalation_events")),
    )
    op.create_index(op.f("ix_escalation_events_case_id"), "escalation_events", ["case_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_escalation_events_case_id"), table_name="escalation_events")
    op.drop_table("escalation_events")
    op.drop_table("escalation_cases")
