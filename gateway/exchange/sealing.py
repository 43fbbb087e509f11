"""Records of an answer kept only encrypted (AES-256-GCM), only for the idempotency window.

Why keep them at all: a partner that lost the response retries with the same Idempotency-Key and must
get the same answer without a second disclosure (and without a second audit trail). After the window a retry
gets the outcome without records (``sealed_until``), and the sealed bytes are dropped
(``ExchangeService.drop_expired_seals``, at start-up and every few minutes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.keyfiles import read_or_create


class RecordSealer:
    def __init__(self, directory: Path) -> None:
        self._aead = AESGCM(read_or_create(directory / "exchange-seal.key",
                                           lambda: AESGCM.generate_key(bit_length=256)))

    def __repr__(self) -> str:
        return "RecordSealer(<key hidden>)"

    def seal(self, exchange_id: str, payload: Any) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, json.dumps(payload).encode(), exchange_id.encode())

    def open(self, exchange_id: str, sealed: bytes) -> Any:
        return json.loads(self._aead.decrypt(sealed[:12], sealed[12:], exchange_id.encode()))
