"""Database access for the gateway's own tables (engine, sessions, migration guard)."""
