"""Audit: when a checkpoint was last signed on demand, in the database, so that the limit of one a second
holds for every gateway process together (it was kept per process: N workers signed up to N a second).

Revision ID: 0028_audit_on_demand
Revises: 0024_account_access_generation
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028_audit_on_demand"
down_revision = "0027_login_failure_sources"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_on_demand",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("signed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_on_demand")),
    )


def downgrade() -> None:
    op.drop_table("audit_on_demand")
