"""Audit: one row per logged anomaly flag, keyed by actor, organisation, day and metric, committed with the flag's
``anomaly.flagged`` entry, so that two gateway processes listing the same flag at once cannot both log it (each
looked the flag up in the log, found nothing, and wrote it).

Flags logged before this revision have no row: the listing still looks them up in the log first.

Revision ID: 0034_audit_anomaly_flags
Revises: 0033_escalation_checks
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0034_audit_anomaly_flags"
down_revision = "0033_escalation_checks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_anomaly_flags",
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("organisation", sa.String(200), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("actor", "organisation", "day", "metric", name=op.f("pk_audit_anomaly_flags")),
    )


def downgrade() -> None:
    op.drop_table("audit_anomaly_flags")
