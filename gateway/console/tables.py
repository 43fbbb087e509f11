"""Tables of the console (schema by migrations 0017_console_sign_outs and 0023_sign_in_windows)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, String, Table

from gateway.db.metadata import metadata

console_sign_outs = Table(
    "console_sign_outs",
    metadata,
    Column("sid", String(64), primary_key=True),  # the signed-out session's id (random, no personal data)
    Column("until", DateTime(timezone=True), nullable=False),  # the session's absolute expiry: forget it then
)

sign_in_windows = Table(
    "sign_in_windows",
    metadata,
    Column("channel", String(16), primary_key=True),  # console, api, token
    Column("reason", String(40), primary_key=True),  # throttled, wrong-credentials, an OAuth error code
    Column("target", String(64), primary_key=True),  # an account id or a system id; "" for nobody
    Column("period", BigInteger, primary_key=True, index=True),  # which window: POSIX time // its length
    Column("organisation", String(64), nullable=True),  # the target's organisation
    Column("first_at", Float, nullable=False),  # POSIX seconds of the attempt that opened it (audited)
    Column("last_at", Float, nullable=False),
    Column("more", Integer, nullable=False),  # attempts after the first: the summary's count
    Column("claim", String(32), nullable=True),  # the process writing its summary, while it does
    Column("claimed_at", Float, nullable=True),
)
"""The windows of failed sign-ins and refused token requests (:mod:`gateway.console.signins`), shared by every
gateway process; a window's row goes in the transaction that writes its summary."""
