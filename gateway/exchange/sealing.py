"""Records of an answer kept only encrypted (AES-256-GCM), only for the idempotency window.

Why keep them at all: a partner that lost the response retries with the same Idempotency-Key and must
get the same answer without a second disclosure (and without a second audit trail). After the window a retry
gets the outcome without records (``sealed_until``; its targets say ``records_withheld: expired``), and the
sealed bytes are dropped (``ExchangeService.drop_expired_seals``, at start-up and every few minutes).

Sealed bytes that do not open (the key file was lost and a new one made, or replaced) raise
:class:`SealUnreadable`, the one error of this module: the replay then answers the outcome without the records
rather than failing the retry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.keyfiles import read_or_create


class SealUnreadable(Exception):
    """Sealed records that this gateway's seal key does not open (another key sealed them, or the bytes are
    damaged). Says nothing of the content: there is nothing of it to say."""


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
        """The records sealed for ``exchange_id``; :class:`SealUnreadable` when this key does not open them."""
        try:
            plain = self._aead.decrypt(sealed[:12], sealed[12:], exchange_id.encode())
        except (InvalidTag, ValueError) as exc:  # another key (or bytes too short to hold a nonce and a tag)
            raise SealUnreadable(exchange_id) from exc
        return json.loads(plain)
