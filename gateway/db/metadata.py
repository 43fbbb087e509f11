"""The gateway's SQLAlchemy ``MetaData``.

Each package (gateway, audit, escalation) owns its tables in its own MetaData; all use the same
constraint naming convention so Alembic autogenerate produces stable, portable names on SQLite and
PostgreSQL. Alembic's environment combines the MetaData objects into one migration history.
"""

from __future__ import annotations

from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
