"""The register in force: load on start, record its version, hand it to whoever decides.

Rules: a register version is recorded once; the same version string with different content is refused
(an operator must bump ``version``, so every past decision keeps citing the text it was made under).
Listeners (the audit log) hear about a newly recorded version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from gateway.clock import Clock
from gateway.errors import InvalidRegister
from gateway.ids import new_id
from gateway.register import repository
from gateway.register.model import Register

RegisterListener = Callable[[Register, str], None]


def register_digest(document: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the register document (stable across YAML formatting)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RegisterService:
    """Holds the register in force; cheap to read on every request."""

    def __init__(self, register: Register, digest: str, document: dict[str, Any] | None = None) -> None:
        self._register = register
        self._digest = digest
        self._opa_data = document if document is not None else register.model_dump(mode="json")
        self.listeners: list[RegisterListener] = []
        self.newly_recorded = False  # set at start-up when this version was recorded for the first time

    @classmethod
    def holding(cls, register: Register) -> RegisterService:
        """The service of ``register``, its JSON document and digest made once: recording the version, the
        policy engine's data and every decision's digest all read these (each dump of the register is a walk
        over every partnership, purpose and participant)."""
        document = register.model_dump(mode="json")
        return cls(register, register_digest(document), document)

    def current(self) -> Register:
        return self._register

    @property
    def version(self) -> str:
        return self._register.version

    @property
    def digest(self) -> str:
        return self._digest

    def as_opa_data(self) -> dict[str, Any]:
        """The register as the JSON document the Rego policies read as ``data.register``."""
        return self._opa_data


def record_version(session: Session, held: RegisterService, source: str, clock: Clock) -> bool:
    """Store the register ``held`` unless already recorded; returns True when a new version was recorded.

    The insert comes first (``ON CONFLICT DO NOTHING``) and the stored version is read only when it inserted
    nothing: gateway processes starting at once with the same new version each try, one inserts, and the
    others — whose insert waited for the winner's commit (SQLite's write lock, PostgreSQL's unique index)
    — read what it recorded. No process reads before it writes, so none decides on a read that another's
    commit has overtaken.

    Raises InvalidRegister (nothing written) if the version exists with different content.
    """
    register, document, digest = held.current(), held.as_opa_data(), held.digest
    if repository.insert_version(session, repository.StoredVersion(
            id=new_id(), version=register.version, sha256=digest, source=source, loaded_at=clock.now()), document):
        return True
    existing = repository.find_version(session, register.version)  # recorded before, by this process or another
    assert existing is not None  # versions are never deleted
    if existing.sha256 != digest:
        raise InvalidRegister(
            f"register version {register.version} is already recorded with different content; "
            "bump `version` in the register file")
    return False
