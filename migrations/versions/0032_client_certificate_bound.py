"""Partner systems' clients may be certificate-bound (RFC 8705): such a client gets an access token only over a
TLS client certificate its proxy forwards, and the token carries that certificate's thumbprint
(``cnf.x5t#S256``), so that a token copied off the system is of no use without the certificate's key.

Existing clients are not bound (``false``): their tokens keep working as before, until an operator binds
them with ``wgs-gateway clients bind``.

Revision ID: 0032_client_certificate_bound
Revises: 0031_exchange_rerun_citation
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032_client_certificate_bound"
down_revision = "0031_exchange_rerun_citation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.add_column(sa.Column("certificate_bound", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.drop_column("certificate_bound")
