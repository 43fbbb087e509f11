"""WGS data-sharing gateway: purpose-bound exchange between partnership participants.

The ``gateway`` package wires everything together (HTTP API, register, auth, policy, exchange);
``audit``, ``escalation`` and ``connectors`` are separate packages with one-way imports
(see DESIGN.md and the import-linter contracts in pyproject.toml).
"""
