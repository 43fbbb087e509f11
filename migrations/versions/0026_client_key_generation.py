"""Partner systems' clients count how often they were given new credentials (``key_generation``), and a
system's access token carries the count it was issued under (``gen``): re-keying a client ends the tokens
issued before it (each process refuses them once it has re-read the counts, within
``revocation_refresh_seconds``).

Without it ``wgs-gateway clients add`` on an existing client replaced its key or secret, but a token got with
the old (leaked) one kept working until it expired. Existing clients start at 0, which a token without ``gen``
counts as: tokens issued before this migration keep working until they expire or the client is re-keyed.

Revision ID: 0026_client_key_generation
Revises: 0024_account_access_generation
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026_client_key_generation"
down_revision = "0025_match_handles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.add_column(sa.Column("key_generation", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.drop_column("key_generation")
