"""Wiring of the audit log into the gateway (checkpoint key, ``AuditLog``, group-commit writer).

The checkpoint-signing key is an Ed25519 key in the key store directory (0600), separate from the token
keys: privacy officers pin its public key to verify the log without trusting the operators.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AsyncAuditWriter, AuditEvent, AuditLog, CheckpointPolicy, EventType, NoteSigner, NoteVerifier
from gateway.container import Container
from gateway.settings import Settings


@dataclass
class AuditServices:
    log: AuditLog
    writer: AsyncAuditWriter
    signer: NoteSigner


def load_or_create_checkpoint_key(directory: Path) -> Ed25519PrivateKey:
    path = directory / "audit-checkpoint.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise RuntimeError("audit checkpoint key is not an Ed25519 key")
        return key
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first (workers starting together): use that one
        time.sleep(0.2)  # let the winner finish writing
        return load_or_create_checkpoint_key(directory)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return key


def log_origin(issuer: str) -> str:
    """The checkpoint origin line: the gateway's host plus a fixed suffix (C2SP: a schema-less URL)."""
    return f"{urlparse(issuer).netloc or 'wgs-gateway'}/audit-log"


def audit_verifier(settings: Settings) -> NoteVerifier:
    """The log's own verifier (checkpoint key from the key store, origin from the issuer): what
    ``audit verify``, the console's "verify now" and the reliability tests check the log against."""
    return NoteVerifier(log_origin(settings.issuer), load_or_create_checkpoint_key(settings.key_dir).public_key())


def install_audit(container: Container) -> AuditServices:
    key = load_or_create_checkpoint_key(container.settings.key_dir)
    signer = NoteSigner(log_origin(container.settings.issuer), key)
    log = AuditLog(container.engine, signer, policy=CheckpointPolicy(every_entries=100, every_seconds=60.0),
                   clock=container.clock.now)
    services = AuditServices(log=log, writer=AsyncAuditWriter(log), signer=signer)
    container.services["audit"] = services
    record_register_change(container, services)
    return services


def record_register_change(container: Container, services: AuditServices) -> None:
    """A register version recorded for the first time is itself an audit entry (before any request)."""
    from gateway.register.setup import register_service

    register = register_service(container)
    if not register.newly_recorded:
        return
    services.log.append([AuditEvent(
        event_type=EventType.REGISTER_CHANGED, trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8),
        register_version=register.version, extra={"sha256": register.digest})])


def audit_services(container: Container) -> AuditServices:
    return container.service("audit", AuditServices)
