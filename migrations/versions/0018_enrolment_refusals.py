"""The discovery index learns what a holder would refuse discovery on: a subject it keeps confidential (with
the reason code it refuses with) and a minor (refused when the purpose does not allow minors).

Discovery with pseudonyms is answered from the index without asking the holder, so without these the index
said ``hit`` where the holder itself refuses. Rows enrolled before carry neither flag (false) until their
partner enrols them again.

Revision ID: 0018_enrolment_refusals
Revises: 0017_console_sign_outs
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_enrolment_refusals"
down_revision = "0017_console_sign_outs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrolments") as batch:
        batch.add_column(sa.Column("confidential", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("confidential_reason", sa.String(64), nullable=True))
        batch.add_column(sa.Column("minor", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("enrolments") as batch:
        batch.drop_column("minor")
        batch.drop_column("confidential_reason")
        batch.drop_column("confidential")
