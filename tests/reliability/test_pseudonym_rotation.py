"""A pseudonym key rotation made by the CLI while a gateway process keeps running on the same key directory and
database: the running process must answer under the rotated key ring from its next request on, without a
restart (as its token-signing keys already do)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from gateway.client.api import GatewayClient
from gateway.client.pseudonyms import PseudonymClient
from gateway.demo import demo_register
from gateway.pseudonyms.keys import KeyRing
from gateway.pseudonyms.keystore import FileKeyStore
from gateway.settings import Settings
from tests.auth_helpers import ClientKeys, register_client
from tests.reliability.gateways import gateway_processes, prepared_container
from tests.reliability.test_crash_safety import _token

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
KVK = "kvk-handelsregister"
DISCOVERY = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
             "case_reference": "RIEC-AA-2026-880", "signal": {"type": "bibob-application",
                                                              "reference": "BIBOB-2026-880"},
             "categories": ["company_registration"]}
COMPANY, LATER = ("kvk", "12345678"), ("kvk", "87654321")


def _cli(data_dir: Path, url: str, *args: str) -> str:
    """``wgs-gateway *args`` as an operator runs it: a process of its own on the same data directory."""
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"WGS_DATA_DIR": str(data_dir), "WGS_DATABASE_URL": url,
                                            "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _kvk_outcome(base: str, token: str, mine: str) -> str:
    """The KvK's discovery outcome for the municipality's pseudonym ``mine`` (answered from the index)."""
    response = httpx.post(f"{base}/v1/discovery", timeout=30, headers={"Authorization": f"Bearer {token}"},
                          json=DISCOVERY | {"subjects": [{"ref": mine}]})
    assert response.status_code == 200, response.text
    return str({t["holder"]: t["outcome"] for t in response.json()["targets"]}["kvk"])


async def _enrol(base: str, keys: ClientKeys, subject: tuple[str, str]) -> str:
    async with GatewayClient(base, keys.system_id, keys.key, issuer=Settings().issuer) as kvk:
        (own,) = await kvk.enrol(RIEC, [(*subject, ["trade-name"], ["company_registration"])])
    return own


def _published_version(base: str, token: str) -> int:
    """The gateway key version the process hands to partners for making polymorphic pseudonyms."""
    response = httpx.get(f"{base}/v1/pseudonyms/key", timeout=30, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def _pseudonymised_under(base: str, token: str, ring: KeyRing) -> bool:
    """Whether the process pseudonymises a subject made under ``ring``'s current public key."""
    polymorphic = PseudonymClient(ring.public_key).polymorphic(*COMPANY)
    response = httpx.post(f"{base}/v1/pseudonyms", timeout=30, headers={"Authorization": f"Bearer {token}"},
                          json={"partnership": RIEC, "subjects": [{"type": COMPANY[0], "polymorphic": polymorphic}]})
    assert response.status_code in (200, 422), response.text
    return response.status_code == 200


async def _own(base: str, keys: ClientKeys, subject: tuple[str, str]) -> str:
    """The municipality's own pseudonym for ``subject``, made with a client that fetches the gateway's keys
    afresh (as a partner process started now does)."""
    async with GatewayClient(base, keys.system_id, keys.key, issuer=Settings().issuer) as municipality:
        (own,) = await municipality.own_pseudonyms(RIEC, [subject])
    return own


def test_a_running_gateway_follows_a_rotation_made_by_the_cli(tmp_path: Path, empty_db_url: str) -> None:
    """Found by a review: a running gateway kept the key ring it loaded at start until it was restarted. After
    `pseudonyms rotate` (which re-keys the index to the new version) it still computed partnership pseudonyms
    under the old version, so discovery answered `no-hit` for a subject the index holds; it published the old
    public key, refused the new version's pseudonyms (422) that a partner made with keys fetched from an
    up-to-date process, and enrolled under the old version (rows discovery cannot see until `rekey`)."""
    settings = {"register_file": demo_register(Settings(data_dir=tmp_path))}  # any hour: no rule-7 escalation
    container = prepared_container(tmp_path, empty_db_url, **settings)
    kvk = register_client(container, KVK, ["enrol"])
    municipality = register_client(container, MUNICIPALITY, ["discovery", "enrol"])
    with gateway_processes(tmp_path, empty_db_url, count=1,
                           env={"WGS_REGISTER_FILE": str(settings["register_file"])}) as (base,):
        token = _token(base, municipality, container.settings.issuer)
        asyncio.run(_enrol(base, kvk, COMPANY))
        before = asyncio.run(_own(base, municipality, COMPANY))
        assert (_published_version(base, token), before.split(".")[1]) == (1, "v1")
        assert _kvk_outcome(base, token, before) == "hit"

        rotated = _cli(tmp_path, empty_db_url, "pseudonyms", "rotate")
        assert "1 index rows re-keyed" in rotated, rotated

        # The same process, not restarted: the old version's pseudonym is still held and finds the subject ...
        assert _kvk_outcome(base, token, before) == "hit"
        # ... a partner that fetched the new key from an up-to-date process is answered, not refused (422) ...
        assert _pseudonymised_under(base, token, asyncio.run(FileKeyStore(tmp_path / "keys" / "pseudonyms").load()))
        # ... it publishes the new key version, and that version's pseudonyms are its own.
        assert _published_version(base, token) == 2
        after = asyncio.run(_own(base, municipality, COMPANY))
        assert after.split(".")[1] == "v2"
        assert _kvk_outcome(base, token, after) == "hit"
        # What it enrols now is under the new version: nothing is left for `rekey`.
        asyncio.run(_enrol(base, kvk, LATER))
        later = asyncio.run(_own(base, municipality, LATER))
        assert _kvk_outcome(base, token, later) == "hit"

        # A key file changed into one the gateway would not start with is not worked around with the ring in
        # memory: 503 (fail closed, nothing disclosed) until it is put right.
        key_file = tmp_path / "keys" / "pseudonyms" / "pseudonym-keys.json"
        key_file.chmod(0o644)
        refused = httpx.post(f"{base}/v1/discovery", timeout=30, headers={"Authorization": f"Bearer {token}"},
                             json=DISCOVERY | {"subjects": [{"ref": after}]})
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "kvk" not in refused.text
        key_file.chmod(0o600)
        assert _kvk_outcome(base, token, after) == "hit"
    assert "index rows not under the current key version: 0" in _cli(tmp_path, empty_db_url, "pseudonyms", "status")
    container.close()
