"""Auth: which address first typed each username the login throttle counts (``login_failures.source_key``, an
HMAC of the address, never the address itself), so that one address cannot grow the table with a row per
distinct username it types (see ``gateway.auth.accounts.LoginThrottle``).

Revision ID: 0027_login_failure_sources
Revises: 0026_client_key_generation
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027_login_failure_sources"
down_revision = "0026_client_key_generation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("login_failures") as batch:
        batch.add_column(sa.Column("source_key", sa.String(64), nullable=True))
        batch.create_index(batch.f("ix_login_failures_source_key"), ["source_key"])


def downgrade() -> None:
    with op.batch_alter_table("login_failures") as batch:
        batch.drop_index(batch.f("ix_login_failures_source_key"))
        batch.drop_column("source_key")
