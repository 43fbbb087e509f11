"""``GET /v1/audit/anomalies?day=``: a day at the ends of the calendar is refused as a problem, not a 500.

The flags compare ``day`` with the 14 days before it and read up to the next midnight; outside
``0001-01-15`` .. ``9999-12-30`` that date arithmetic overflows.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.container import Container
from tests.auth_helpers import bearer, person_token


def test_a_day_whose_baseline_leaves_the_calendar_is_a_422_problem(client: TestClient, container: Container) -> None:
    officer = bearer(person_token(client, container, "po-gem", "gemeente-amsterdam", ["privacy-officer"]))
    for day in ("0001-01-01", "0001-01-14", "9999-12-31"):
        response = client.get("/v1/audit/anomalies", params={"day": day}, headers=officer)
        assert response.status_code == 422, (day, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "0001-01-15" in response.json()["detail"]
    for day in ("0001-01-15", "2026-11-25", "9999-12-30"):  # the first and last usable days still answer
        response = client.get("/v1/audit/anomalies", params={"day": day}, headers=officer)
        assert (response.status_code, response.json()) == (200, []), day
    assert client.get("/v1/audit/anomalies", params={"day": "9999-12-31"}).status_code == 401  # auth comes first
