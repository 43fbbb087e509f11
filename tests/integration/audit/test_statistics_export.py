"""The statistics download through the API is an audited export, as the console's is.

The console's ``statistics.csv`` writes a ``console.action`` entry (``export``) before the file is sent; the same
file from ``GET /v1/audit/statistics?format=csv`` wrote none, so an officer could take the accountability figures
unseen by going around the console — what :mod:`gateway.auditing.actions` already closed for subject look-ups. The
JSON answer is a view, as the console's statistics page is, and writes nothing."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from audit import AuditEvent, Decision, EventType, ProcessingActivity, Requester
from gateway.auditing.setup import audit_services
from gateway.container import Container
from tests.audit_support import span_id, trace_id
from tests.auth_helpers import bearer, person_token

RIEC = "riec-amsterdam-amstelland"


def _exports(container: Container) -> list[dict[str, Any]]:
    log = audit_services(container).log
    events = [json.loads(entry.canonical)["event"] for entry in log.entries(0, log.size())]
    return [event for event in events
            if event["event_type"] == "console.action" and event["extra"].get("action") == "export"]


def test_a_csv_download_of_the_statistics_is_an_audited_export(client: TestClient, container: Container) -> None:
    audit_services(container).log.append([AuditEvent(
        event_type=EventType.POLICY_DECIDED, trace_id=trace_id(n), span_id=span_id(n),
        processing_activity=ProcessingActivity(partnership=RIEC, purpose="bibob-integrity-check"),
        requester=Requester(org="gemeente-amsterdam", system="gemeente-amsterdam-vth"), holder="kvk",
        decision=Decision.ALLOW) for n in range(3)])
    officer = bearer(person_token(client, container, "po-amsterdam", "gemeente-amsterdam", ["privacy-officer"]))

    assert client.get("/v1/audit/statistics", headers=officer).status_code == 200
    assert _exports(container) == [], "a view is no export"

    download = client.get("/v1/audit/statistics", params={"format": "csv", "partnership": RIEC,
                                                          "since": "2026-11-01T00:00:00+01:00"}, headers=officer)
    assert download.status_code == 200, download.text
    [export] = _exports(container)
    assert export["requester"]["org"] == "gemeente-amsterdam"
    assert export["requester"]["user"]
    assert export["requester"]["user"] != "po-amsterdam"  # an account id, no name
    assert export["extra"] == {"action": "export", "channel": "api", "export": "statistics.csv", "rows": 1,
                               "partnership": RIEC, "since": "2026-10-31T23:00:00+00:00"}
