"""Sealed records that this gateway's key does not open are one error, :class:`SealUnreadable` (the replay
answers without them), never the cipher's own exception (which failed the retry with 500)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.exchange.sealing import RecordSealer, SealUnreadable

RECORDS = {"kvk": [{"record_id": "registration-2025-002189", "fields": {"legal_form": "Eenmanszaak"}}]}


def test_records_open_with_the_key_and_for_the_exchange_they_were_sealed_for(tmp_path: Path) -> None:
    sealer = RecordSealer(tmp_path)
    sealed = sealer.seal("ex-1", RECORDS)
    assert sealer.open("ex-1", sealed) == RECORDS
    with pytest.raises(SealUnreadable):
        sealer.open("ex-2", sealed)  # bound to its exchange: no row's records open as another's


@pytest.mark.parametrize("damage", ["replaced key", "truncated", "empty"])
def test_what_does_not_open_is_seal_unreadable_and_names_nothing_of_the_records(tmp_path: Path, damage: str) -> None:
    sealed = RecordSealer(tmp_path).seal("ex-1", RECORDS)
    if damage == "replaced key":
        (tmp_path / "exchange-seal.key").unlink()
    sealed = {"replaced key": sealed, "truncated": sealed[:8], "empty": b""}[damage]
    with pytest.raises(SealUnreadable) as unreadable:
        RecordSealer(tmp_path).open("ex-1", sealed)
    assert "registration" not in str(unreadable.value)
    assert "Eenmanszaak" not in str(unreadable.value)
