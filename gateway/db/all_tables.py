"""Import every module that defines tables, so each MetaData is complete (Alembic, tests).

Add a line here when a package gains a tables module.
"""

from __future__ import annotations

import audit.tables
import escalation.tables
import gateway.auth.tables
import gateway.console.tables
import gateway.enrolment.tables
import gateway.exchange.tables
import gateway.register.tables  # noqa: F401
from gateway.db.metadata import metadata as gateway_metadata

ALL_METADATA = [gateway_metadata, audit.tables.metadata, escalation.tables.metadata]
