"""A certificate-bound client may be pinned to certificates (RFC 8705 §2.1.1's ``tls_client_auth``, adapted):
``oauth_clients.certificate_pins`` lists the thumbprints (``x5t#S256``) of the certificates it may get tokens
over. Without pins (``NULL``, every existing client) a bound client gets tokens over any certificate the trusted
proxy verified, as before: a leaked client key together with any certificate of the partnership's CA got a
bound token, which pinning ends.

Down drops the column: pinned clients stay bound, and get tokens over any verified certificate again (the code
of 0032 cannot check pins).

Revision ID: 0036_client_certificate_pins
Revises: 0035_match_filter_replacements
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0036_client_certificate_pins"
down_revision = "0035_match_filter_replacements"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.add_column(sa.Column("certificate_pins", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.drop_column("certificate_pins")
