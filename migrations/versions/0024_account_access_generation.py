"""Accounts count how often they were disabled (``access_generation``), and a person's token fingerprint
includes the count: a token issued before its account was disabled stays refused once it is enabled again.

Without it the fingerprint (id, organisation, roles, password hash) was the same before the disabling and
after the enabling, so ``wgs-gateway users enable`` brought back every token of the account that had not
expired yet, a leaked one too. Existing accounts start at 0, which the fingerprint leaves out: tokens issued
before this migration keep working until they expire.

Revision ID: 0024_account_access_generation
Revises: 0023_sign_in_windows
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024_account_access_generation"
down_revision = "0023_sign_in_windows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("access_generation", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("access_generation")
