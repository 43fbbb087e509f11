"""A full disk under the audit log (issue 8): requests are denied with 503 and nothing is disclosed without
its entry; once there is room again the gateway serves without a restart, and the log verifies throughout.

The disk is made full for real as SQLite sees it: ``PRAGMA max_page_count`` caps the database file at its
current size, so the next page the log needs fails with SQLITE_FULL ("database or disk is full").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from audit import verify_database
from gateway.auditing.setup import audit_verifier
from tests.stack import running_stack

BODY = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
        "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-991",
        "signal": {"type": "bibob-application", "reference": "BIBOB-2026-991"}, "holders": ["kvk"],
        "categories": ["company_registration"]}


def test_full_disk_denies_then_recovers_by_itself(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        body = BODY | {"subjects": [{"ref": r} for r in stack.world.scenarios()["bibob-applicant"][:1]]}
        assert stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body).status_code == 200
        engine = stack.container.engine
        cap: dict[str, int] = {"pages": 0}

        def limit(dbapi_connection: Any, _record: Any) -> None:
            if cap["pages"]:
                cursor = dbapi_connection.cursor()
                cursor.execute(f"PRAGMA max_page_count = {cap['pages']}")
                cursor.close()

        event.listen(engine, "connect", limit)
        with engine.connect() as connection:
            cap["pages"] = int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())
        engine.dispose()  # every new connection sees a full disk
        refused = [stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body) for _ in range(3)]
        assert [r.status_code for r in refused] == [503, 503, 503]
        for response in refused:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "nothing was disclosed" in response.json()["detail"]
            assert "records" not in response.text

        cap["pages"] = 1_000_000  # room again
        engine.dispose()
        served = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body)
        assert served.status_code == 200, served.text
        assert served.json()["targets"][0]["records"]
        settings = stack.container.settings
        verifier = audit_verifier(settings)
        result = verify_database(engine, verifier)
        assert result.ok, result.failure
