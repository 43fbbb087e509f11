"""Escalation workflow for disputed sharing requests: case states, tiers, deadlines in Dutch working days,
decisions, and the register of legal gaps. No FastAPI here; records through ``audit`` only (DESIGN.md)."""
