"""The authorisation matrix: every route of the app x every kind of caller → the expected class of answer,
generated from ONE table (``TABLE``).

A route the app serves without an entry here fails ``test_every_route_has_an_entry``: adding a route forces
a decision about who may call it. Classes: ``ALLOW`` (2xx/3xx, or the exact status named), ``UNAUTH`` (401
with ``WWW-Authenticate: Bearer``; for the console, the redirect to its sign-in page), ``FORBID`` (403) and
``HIDDEN`` (404, the answer for an object that does not exist — checked against a random id).

Objects are real (made through the API in ``tests/security/world.py``): the municipality's exchange with the
police as a holder, a tier-1 escalation case about it, a legal gap and their audit entries. Requests that
change an object get a fresh one, so every caller meets the same state.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from audit.events import AuditEvent, DataSubject, EventType, ProcessingActivity, Requester
from gateway.client.pseudonyms import PseudonymClient
from gateway.matching.encoding import CLKEncoder, dataset_to_wire
from gateway.matching.schema import shipped_schema
from tests.auth_helpers import client_assertion, token_form
from tests.security.world import (
    ADMIN,
    BAD_TOKENS,
    BIBOB_REQUEST,
    CALLERS,
    CONTACT,
    DENIED_REQUEST,
    PEOPLE,
    PO_COORD,
    PO_HOLDER,
    PO_OTHER,
    PO_OWN,
    RIEC,
    SUBJECT,
    SYS,
    SYS_OTHER,
    SYSTEM,
    SYSTEMS,
    World,
    all_routes,
    running_world,
)

ALLOW, UNAUTH, FORBID, HIDDEN = "allow", "unauthenticated", "forbidden", "hidden"
Expectation = str | int  # a class, or an exact status for an allowed caller (e.g. 422: authorised, bad input)
ALL_PEOPLE = tuple(PEOPLE)
OFFICERS = (PO_OWN, PO_HOLDER, PO_COORD, PO_OTHER)
WORKERS = (*OFFICERS, ADMIN)
CASE_PARTIES = (PO_OWN, PO_HOLDER, PO_COORD)  # the case's two organisations and the coordinating officer


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    json: Any = None
    data: dict[str, str] | None = None
    params: dict[str, Any] | None = None
    object_id: str | None = None  # the id in the path, for the 404-hiding comparison
    browser: TestClient | None = None  # console: the cookie jar to send from (default: the caller's)


Builder = Callable[[World, str], Req]
Check = Callable[[World, str, httpx.Response], None]


@dataclass(frozen=True)
class Entry:
    expect: dict[str, Expectation]
    build: Builder
    scopes: tuple[str, ...] = ()  # what a partner system needs here (the "without the scope" caller lacks them)
    console: bool = False  # session-cookie routes: bearer tokens do not count
    check: Check | None = None  # what "allowed" must also mean (e.g. what a list shows)
    landing: bool = False  # a route of a module that is landing in parallel: may be absent
    also: tuple[Builder, ...] = ()  # other forms of the route's request (another body): each answered alike


def public() -> dict[str, Expectation]:
    return dict.fromkeys(CALLERS, ALLOW)


def api(allow: tuple[str, ...] = (), hide: tuple[str, ...] = (), **exact: int) -> dict[str, Expectation]:
    """Bad tokens → 401; ``allow`` → allowed; ``hide`` → 404; every other authenticated caller → 403."""
    expect: dict[str, Expectation] = {}
    for caller in CALLERS:
        key = caller.replace("-", "_")
        default = (UNAUTH if caller in BAD_TOKENS else ALLOW if caller in allow else
                   HIDDEN if caller in hide else FORBID)
        expect[caller] = exact.get(key, default)
    return expect


def console(allow: tuple[str, ...] = (), hide: tuple[str, ...] = ()) -> dict[str, Expectation]:
    """Nobody without a console session gets in (bearer tokens are ignored); people by role."""
    return {caller: (UNAUTH if caller not in PEOPLE else ALLOW if caller in allow else
                     HIDDEN if caller in hide else FORBID) for caller in CALLERS}


def get(path: str, **params: Any) -> Builder:
    return lambda world, caller: Req("GET", path.format(**world.ids), params=params or None,
                                     object_id=_object_in(path, world))


def _object_in(path: str, world: World) -> str | None:
    for name in ("exchange", "case", "gap"):
        if "{" + name + "}" in path:
            return str(world.ids[name])
    return None


def on_fresh_case(action: str, body: Callable[[dict[str, Any]], dict[str, Any]]) -> Builder:
    def build(world: World, caller: str) -> Req:
        case = world.fresh_case()
        return Req("POST", f"/v1/escalations/{case['id']}/{action}", json=body(case), object_id=case["id"])
    return build


def gap_status(world: World, caller: str) -> Req:
    gap = world.fresh_gap()
    return Req("POST", f"/v1/legal-gaps/{gap['id']}/status", object_id=gap["id"],
               json={"expected_version": gap["version"], "status": "on-agenda", "note": "steering group, 12 Jan"})


def objection(world: World, caller: str) -> Req:
    return Req("POST", "/v1/escalations", json={"exchange_id": world.denied_exchange(), "holder": "politie",
                                               "motivation": "The incidents are needed for the Bibob advice."})


def token_request(world: World, caller: str) -> Req:
    return Req("POST", "/oauth/token", data=token_form(client_assertion(world.container, world.keys[SYSTEM])))


def console_form(path: str, fields: dict[str, str], *, fresh: bool = False) -> Builder:
    """A console POST with the CSRF token of the caller's session (a fresh session where the POST ends it)."""
    def build(world: World, caller: str) -> Req:
        browser = world.console(caller, fresh=fresh)
        return Req("POST", path, data=fields | {"csrf_token": world.console_csrf(browser, caller)}, browser=browser)
    return build


def console_on_fresh_case(action: str, fields: Callable[[dict[str, Any]], dict[str, str]]) -> Builder:
    """A console form about a fresh case, sent with the caller's session and its CSRF token."""
    def build(world: World, caller: str) -> Req:
        case = world.fresh_case()
        browser = world.console(caller)
        return Req("POST", f"/console/escalations/{case['id']}/{action}", browser=browser,
                   data=fields(case) | {"csrf_token": world.console_csrf(browser, caller)})
    return build


def console_gap_status(world: World, caller: str) -> Req:
    gap = world.fresh_gap()
    browser = world.console(caller)
    return Req("POST", f"/console/legal-gaps/{gap['id']}/status", browser=browser, data={
        "expected_version": str(gap["version"]), "status": "on-agenda", "note": "steering group", "back": "list",
        "csrf_token": world.console_csrf(browser, caller)})


def subject_by_identifier(world: World, caller: str) -> Req:
    """The contact point's lookup by identifier: a real polymorphic pseudonym of a (synthetic) BSN."""
    key = world.client.get("/v1/pseudonyms/key", headers=world.headers_for(SYS)).json()
    polymorphic = PseudonymClient(str(key["public_key"])).polymorphic("bsn", "111222333")
    return Req("POST", "/v1/audit/subjects/disclosures",
               json={"partnership": RIEC, "subject": {"type": "bsn", "polymorphic": polymorphic}})


def subject_by_pseudonym(world: World, caller: str) -> Req:
    """The contact point's lookup by the log's pseudonym, in the body (the path form is deprecated)."""
    return Req("POST", "/v1/audit/subjects/disclosures", json={"pseudonym": SUBJECT})


def post(path: str, body: dict[str, Any]) -> Builder:
    return lambda world, caller: Req("POST", path, json=body)


def sees(key: str, who: tuple[str, ...]) -> Check:
    """A list answer holds the object ``key`` exactly for the callers ``who`` (filtering, not hiding)."""
    def check(world: World, caller: str, response: httpx.Response) -> None:
        assert (str(world.ids[key]) in response.text) == (caller in who), f"{caller} and {key} in the list"
    return check


def foreign_exchange_is_denied(world: World, caller: str, response: httpx.Response) -> None:
    if caller == SYS_OTHER:  # a bank asking in the RIEC: answered, but every holder denied by policy
        targets = response.json()["targets"]
        assert targets
        assert {t["outcome"] for t in targets} == {"denied"}
        assert all(any(r["code"] == "requester-not-participant" for r in t["reasons"]) for t in targets)
        assert all(t.get("records", []) == [] for t in targets)


_DECIDE = {"outcome": "deny", "motivation": "Criminal intelligence is never shared; the refusal stands."}
_PSEUDONYM_BODY = {"partnership": RIEC, "subjects": [{"type": "bsn", "polymorphic": "A" * 44}]}
# Authorised garbage for filter enrolment (a schema version that does not exist): 422 for a participant only.
_FILTER_BODY = {"partnership": RIEC, "record_type": "person", "schema_version": 99, "replace": True}
_FUZZY_REQUEST = {k: v for k, v in DENIED_REQUEST.items() if k not in {"holders", "subjects"}} | {
    "record_type": "person", "schema_version": shipped_schema("person").version, "subjects": dataset_to_wire(
        CLKEncoder(shipped_schema("person"), b"authorisation-matrix-secret").encode_dataset(
            [{"given_name": "jan", "surname": "jansen", "date_of_birth": "19800101"}]))}

TABLE: dict[tuple[str, str], Entry] = {
    # -- public ----------------------------------------------------------------------------------------
    ("GET", "/health/live"): Entry(public(), get("/health/live")),
    ("GET", "/health/ready"): Entry(public(), get("/health/ready")),
    ("GET", "/openapi.json"): Entry(public(), get("/openapi.json")),
    ("GET", "/docs"): Entry(public(), get("/docs")),
    ("GET", "/docs/oauth2-redirect"): Entry(public(), get("/docs/oauth2-redirect")),
    ("GET", "/redoc"): Entry(public(), get("/redoc")),
    ("GET", "/.well-known/jwks.json"): Entry(public(), get("/.well-known/jwks.json")),
    ("GET", "/.well-known/oauth-authorization-server"): Entry(public(), get("/.well-known/oauth-authorization-server")),
    # Public; the world's issuer has no path, so no path has metadata: not found for anyone (RFC 8414 §3.1).
    ("GET", "/.well-known/oauth-authorization-server/{issuer_path:path}"): Entry(
        dict.fromkeys(CALLERS, 404), get("/.well-known/oauth-authorization-server/wgs")),
    ("POST", "/oauth/token"): Entry(public(), token_request),  # client authentication, not the bearer, decides
    ("POST", "/v1/auth/login"): Entry(public(), lambda w, c: Req("POST", "/v1/auth/login", json={
        "username": "console-probe", "password": "correct horse battery staple"})),
    # -- register (register:read) ----------------------------------------------------------------------
    ("GET", "/v1/register"): Entry(api(allow=(SYS, SYS_OTHER, *ALL_PEOPLE)), get("/v1/register"),
                                   scopes=("register:read",)),
    ("GET", "/v1/register/partnerships/{partnership_id}"): Entry(
        api(allow=(SYS, SYS_OTHER, *ALL_PEOPLE)), get(f"/v1/register/partnerships/{RIEC}"), scopes=("register:read",)),
    ("GET", "/v1/register/partnerships/{partnership_id}/purposes/{purpose_id}"): Entry(
        api(allow=(SYS, SYS_OTHER, *ALL_PEOPLE)),
        get(f"/v1/register/partnerships/{RIEC}/purposes/bibob-integrity-check"), scopes=("register:read",)),
    ("GET", "/v1/register/versions"): Entry(api(allow=(SYS, SYS_OTHER, *ALL_PEOPLE)), get("/v1/register/versions"),
                                            scopes=("register:read",)),
    ("GET", "/v1/register/versions/{version}"): Entry(
        api(allow=(SYS, SYS_OTHER, *ALL_PEOPLE)), get("/v1/register/versions/2026.11.1"), scopes=("register:read",)),
    # -- exchange --------------------------------------------------------------------------------------
    ("POST", "/v1/exchanges"): Entry(api(allow=(SYS, SYS_OTHER)), lambda w, c: Req(
        "POST", "/v1/exchanges", json=BIBOB_REQUEST), scopes=("exchange",), check=foreign_exchange_is_denied),
    ("GET", "/v1/exchanges/{exchange_id}"): Entry(
        api(allow=(SYS, PO_OWN), hide=(SYS_OTHER, PO_HOLDER, PO_COORD, PO_OTHER, ADMIN, CONTACT)),
        get("/v1/exchanges/{exchange}"), scopes=("exchange",)),
    ("POST", "/v1/discovery"): Entry(api(allow=(SYS, SYS_OTHER)), lambda w, c: Req(
        "POST", "/v1/discovery", json={k: v for k, v in DENIED_REQUEST.items() if k != "holders"}),
        scopes=("discovery",)),
    # -- audit proofs (audit:read: people; audit:receipts: a system, for the entries it requested) -------
    ("GET", "/v1/audit/checkpoint"): Entry(api(allow=(SYS, *ALL_PEOPLE)), get("/v1/audit/checkpoint"),
                                           scopes=("audit:receipts",)),
    ("GET", "/v1/audit/key"): Entry(api(allow=(SYS, *ALL_PEOPLE)), get("/v1/audit/key"), scopes=("audit:receipts",)),
    ("GET", "/v1/audit/entries/{index}/proof"): Entry(  # the municipality's system requested the exchange
        api(allow=(SYS, *ALL_PEOPLE)), lambda w, c: Req("GET", f"/v1/audit/entries/{w.ids['entry']}/proof",
                                                        params={"size": int(w.ids["entry"]) + 1}),
        scopes=("audit:receipts",)),
    ("GET", "/v1/audit/consistency"): Entry(api(allow=ALL_PEOPLE),
                                            get("/v1/audit/consistency", **{"from": 1, "to": 2})),
    # -- audit review (privacy officers; data-subject requests: the contact point) --------------------
    ("GET", "/v1/audit/entries"): Entry(api(allow=OFFICERS), get("/v1/audit/entries", limit=200),
                                        check=sees("exchange", CASE_PARTIES)),
    ("POST", "/v1/audit/entries/search"): Entry(api(allow=OFFICERS), post("/v1/audit/entries/search", {"limit": 200}),
                                                check=sees("exchange", CASE_PARTIES)),
    ("GET", "/v1/audit/statistics"): Entry(api(allow=OFFICERS), get("/v1/audit/statistics")),
    ("GET", "/v1/audit/anomalies"): Entry(api(allow=OFFICERS), get("/v1/audit/anomalies")),
    ("GET", "/v1/audit/subjects/{pseudonym}/disclosures"): Entry(
        api(allow=(CONTACT,)), get(f"/v1/audit/subjects/{SUBJECT}/disclosures")),
    ("POST", "/v1/audit/subjects/disclosures"): Entry(api(allow=(CONTACT,)), subject_by_identifier,
                                                      also=(subject_by_pseudonym,)),
    # -- escalations (systems: exchange scope, own organisation's requests; people: escalation scope) -
    ("POST", "/v1/escalations"): Entry(
        api(allow=(SYS, PO_OWN), hide=(SYS_OTHER, PO_COORD, PO_OTHER, ADMIN), po_holder_org=422),
        objection, scopes=("exchange",)),  # the police officer objects to a denial it did not suffer: 422
    ("GET", "/v1/escalations"): Entry(api(allow=(SYS, SYS_OTHER, *WORKERS)), get("/v1/escalations", limit=200),
                                      scopes=("exchange",), check=sees("case", (SYS, *CASE_PARTIES))),
    ("GET", "/v1/escalations/feed"): Entry(api(allow=(SYS, SYS_OTHER, *WORKERS)), get("/v1/escalations/feed"),
                                           scopes=("exchange",)),
    ("GET", "/v1/escalations/metrics"): Entry(api(allow=WORKERS), get("/v1/escalations/metrics")),
    ("GET", "/v1/escalations/{case_id}"): Entry(
        api(allow=(SYS, *CASE_PARTIES), hide=(SYS_OTHER, PO_OTHER, ADMIN)), get("/v1/escalations/{case}"),
        scopes=("exchange",)),
    ("POST", "/v1/escalations/{case_id}/comments"): Entry(
        api(allow=CASE_PARTIES, hide=(PO_OTHER, ADMIN)),
        on_fresh_case("comments", lambda case: {"text": "See the memo.", "attachments": [
            {"reference": "dms://politie/2026/4711", "title": "Memo"}]})),
    ("POST", "/v1/escalations/{case_id}/review"): Entry(  # tier 1: the two parties' officers
        api(allow=(PO_OWN, PO_HOLDER), hide=(PO_OTHER, ADMIN)),
        on_fresh_case("review", lambda case: {"expected_version": case["version"]})),
    ("POST", "/v1/escalations/{case_id}/decision"): Entry(  # four eyes: not the requesting organisation
        api(allow=(PO_HOLDER,), hide=(PO_OTHER, ADMIN)),
        on_fresh_case("decision", lambda case: _DECIDE | {"expected_version": case["version"]})),
    ("POST", "/v1/escalations/{case_id}/withdraw"): Entry(  # the organisation that asked
        api(allow=(SYS, PO_OWN), hide=(SYS_OTHER, PO_OTHER, ADMIN)),
        on_fresh_case("withdraw", lambda case: {"expected_version": case["version"], "motivation": "Resolved."}),
        scopes=("exchange",)),
    ("POST", "/v1/escalations/{case_id}/legal-gap"): Entry(
        api(allow=CASE_PARTIES, hide=(PO_OTHER, ADMIN)),
        on_fresh_case("legal-gap", lambda case: {"title": "Gap", "description": "No basis in the covenant."})),
    ("GET", "/v1/legal-gaps"): Entry(api(allow=WORKERS), get("/v1/legal-gaps"),
                                     check=sees("gap", (*CASE_PARTIES, ADMIN))),
    ("GET", "/v1/legal-gaps/export"): Entry(api(allow=WORKERS), get("/v1/legal-gaps/export"),
                                            check=sees("gap", (*CASE_PARTIES, ADMIN))),
    ("GET", "/v1/legal-gaps/{gap_id}"): Entry(api(allow=(*CASE_PARTIES, ADMIN), hide=(PO_OTHER,)),
                                              get("/v1/legal-gaps/{gap}")),
    ("POST", "/v1/legal-gaps/{gap_id}/status"): Entry(  # the coordinating officer and tier-2/3 organisations
        api(allow=(PO_OWN, PO_COORD, ADMIN), hide=(PO_OTHER,)), gap_status),
    # -- pseudonyms and enrolment (landing in parallel; authorised garbage is a 422) -------------------
    ("GET", "/v1/pseudonyms/key"): Entry(api(allow=(SYS, SYS_OTHER)), get("/v1/pseudonyms/key"),
                                         scopes=("enrol", "exchange")),
    ("GET", "/v1/pseudonyms/recipient-key"): Entry(api(allow=(SYS,)), get("/v1/pseudonyms/recipient-key",
                                                                          partnership=RIEC),
                                                   scopes=("enrol", "exchange")),
    ("POST", "/v1/pseudonyms"): Entry(api(system=422), lambda w, c: Req("POST", "/v1/pseudonyms", json=_PSEUDONYM_BODY),
                                      scopes=("enrol", "exchange")),
    ("POST", "/v1/enrolments"): Entry(api(system=422), lambda w, c: Req("POST", "/v1/enrolments", json=_PSEUDONYM_BODY),
                                      scopes=("enrol",)),
    ("POST", "/v1/enrolments/filters"): Entry(api(system=422), lambda w, c: Req(
        "POST", "/v1/enrolments/filters", json=_FILTER_BODY), scopes=("enrol",)),
    ("POST", "/v1/discovery/fuzzy"): Entry(api(allow=(SYS, SYS_OTHER)), lambda w, c: Req(
        "POST", "/v1/discovery/fuzzy", json=_FUZZY_REQUEST), scopes=("discovery",)),
    # -- console (session cookie, CSRF) ----------------------------------------------------------------
    ("GET", "/console"): Entry(console(allow=ALL_PEOPLE), get("/console"), console=True),
    ("GET", "/console/login"): Entry(public(), get("/console/login"), console=True),
    ("POST", "/console/login"): Entry(public(), console_form("/console/login", {
        "username": "console-probe", "password": "correct horse battery staple", "next": "/console"}, fresh=True),
        console=True),
    ("POST", "/console/logout"): Entry(console(allow=ALL_PEOPLE), console_form("/console/logout", {}, fresh=True),
                                       console=True),
    ("GET", "/console/audit"): Entry(console(allow=OFFICERS), get("/console/audit"), console=True),
    ("GET", "/console/audit/entries/{index}"): Entry(
        console(allow=CASE_PARTIES, hide=(PO_OTHER,)), get("/console/audit/entries/{entry}"), console=True),
    ("POST", "/console/audit"): Entry(console(allow=OFFICERS), console_form("/console/audit", {"subject": "p-unknown"}),
                                      console=True),
    ("POST", "/console/audit/verify"): Entry(console(allow=OFFICERS), console_form("/console/audit/verify", {}),
                                             console=True),
    ("GET", "/console/statistics"): Entry(console(allow=OFFICERS), get("/console/statistics"), console=True),
    ("GET", "/console/statistics.csv"): Entry(console(allow=OFFICERS), get("/console/statistics.csv"), console=True),
    ("GET", "/console/register"): Entry(console(allow=ALL_PEOPLE), get("/console/register"), console=True),
    ("GET", "/console/subjects"): Entry(console(allow=(CONTACT,)), get("/console/subjects"), console=True),
    ("POST", "/console/subjects"): Entry(console(allow=(CONTACT,)),
                                         console_form("/console/subjects", {"pseudonym": SUBJECT}), console=True),
    ("GET", "/console/static/{name}"): Entry(public(), get("/console/static/console.css"), console=True),
    # -- console: escalations and legal gaps (the same service and rules as the API) --------------------
    ("GET", "/console/escalations"): Entry(console(allow=WORKERS), get("/console/escalations"), console=True),
    ("GET", "/console/escalations/{case_id}"): Entry(
        console(allow=CASE_PARTIES, hide=(PO_OTHER, ADMIN)), get("/console/escalations/{case}"), console=True),
    ("POST", "/console/escalations/{case_id}/comments"): Entry(
        console(allow=CASE_PARTIES, hide=(PO_OTHER, ADMIN)),
        console_on_fresh_case("comments", lambda case: {"text": "See the memo."}), console=True),
    ("POST", "/console/escalations/{case_id}/review"): Entry(
        console(allow=(PO_OWN, PO_HOLDER), hide=(PO_OTHER, ADMIN)),
        console_on_fresh_case("review", lambda case: {"expected_version": str(case["version"])}), console=True),
    ("POST", "/console/escalations/{case_id}/decision"): Entry(
        console(allow=(PO_HOLDER,), hide=(PO_OTHER, ADMIN)),
        console_on_fresh_case("decision", lambda case: _DECIDE | {"expected_version": str(case["version"])}),
        console=True),
    ("POST", "/console/escalations/{case_id}/withdraw"): Entry(
        console(allow=(PO_OWN,), hide=(PO_OTHER, ADMIN)),
        console_on_fresh_case("withdraw", lambda case: {"expected_version": str(case["version"]),
                                                        "motivation": "Resolved."}), console=True),
    ("POST", "/console/escalations/{case_id}/legal-gap"): Entry(
        console(allow=CASE_PARTIES, hide=(PO_OTHER, ADMIN)),
        console_on_fresh_case("legal-gap", lambda case: {"title": "Gap", "description": "No basis."}), console=True),
    ("GET", "/console/legal-gaps"): Entry(console(allow=WORKERS), get("/console/legal-gaps"), console=True),
    ("GET", "/console/legal-gaps.csv"): Entry(console(allow=WORKERS), get("/console/legal-gaps.csv"), console=True),
    ("GET", "/console/legal-gaps/{gap_id}"): Entry(
        console(allow=(*CASE_PARTIES, ADMIN), hide=(PO_OTHER,)), get("/console/legal-gaps/{gap}"), console=True),
    ("POST", "/console/legal-gaps/{gap_id}/status"): Entry(
        console(allow=(PO_OWN, PO_COORD, ADMIN), hide=(PO_OTHER,)), console_gap_status, console=True),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("matrix"), log_level="WARNING") as running:
        yield running


def test_every_route_has_an_entry(world: World) -> None:
    served = all_routes(world.app)
    missing = sorted(served - set(TABLE))
    assert not missing, f"routes without an entry in the authorisation matrix: {missing}"
    stale = sorted(key for key, entry in TABLE.items() if key not in served and not entry.landing)
    assert not stale, f"entries for routes the app does not serve: {stale}"


def test_every_entry_names_every_caller() -> None:
    for key, entry in TABLE.items():
        assert set(entry.expect) == set(CALLERS), key


def _outcome(response: httpx.Response, console_route: bool) -> Expectation:
    status = response.status_code
    if console_route and status in {302, 303, 307} and "next=" in response.headers.get("location", "") \
            and response.headers["location"].startswith("/console/login"):
        return UNAUTH
    return {401: UNAUTH, 403: FORBID, 404: HIDDEN}.get(status, ALLOW if 200 <= status < 400 else status)


def _send(world: World, caller: str, entry: Entry, request: Req) -> httpx.Response:
    headers = world.headers_for(caller, entry.scopes)
    answer: httpx.Response
    if entry.console:
        browser = request.browser or world.console(caller)
        answer = browser.request(request.method, request.path, params=request.params, data=request.data,
                                 headers=headers)
    else:
        answer = world.client.request(request.method, request.path, params=request.params, json=request.json,
                                      data=request.data, headers=headers)
    return answer


@dataclass
class _Cell:
    route: tuple[str, str]
    caller: str
    expected: Expectation = field(init=False)

    def __post_init__(self) -> None:
        self.expected = TABLE[self.route].expect[self.caller]


@pytest.mark.parametrize(("route", "caller"), [(route, caller) for route in TABLE for caller in CALLERS],
                         ids=[f"{m} {p} | {c}" for (m, p) in TABLE for c in CALLERS])
def test_matrix(world: World, route: tuple[str, str], caller: str) -> None:
    entry = TABLE[route]
    if route not in all_routes(world.app):
        assert entry.landing
        pytest.skip("route not served by this build (its module is landing in parallel)")
    cell = _Cell(route, caller)
    for build in (entry.build, *entry.also):
        _check_cell(world, entry, cell, build(world, caller))


def _check_cell(world: World, entry: Entry, cell: _Cell, request: Req) -> None:
    route, caller = cell.route, cell.caller
    response = _send(world, caller, entry, request)
    got = _outcome(response, entry.console)
    if isinstance(cell.expected, int):
        assert response.status_code == cell.expected, response.text[:500]
    else:
        assert got == cell.expected, f"{route} as {caller}: {response.status_code} {response.text[:500]}"
    if not entry.console and response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text[:200]
        assert response.json()["status"] == response.status_code
    if got == UNAUTH and not entry.console:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if got == ALLOW and entry.check is not None:
        entry.check(world, caller, response)
    if got == HIDDEN and request.object_id and not entry.console:
        # Hiding: exactly the answer for an object that does not exist at all.
        absent = str(uuid.uuid4())
        ghost = Req(request.method, request.path.replace(request.object_id, absent), request.json, request.data,
                    request.params)
        other = _send(world, caller, entry, ghost)
        assert other.status_code == 404
        assert other.json()["title"] == response.json()["title"]
        assert other.json()["detail"].replace(absent, "ID") == response.json()["detail"].replace(
            request.object_id, "ID")


_GETS = [route for route in TABLE if route[0] == "GET"]


@pytest.mark.parametrize(("route", "caller"), [(route, caller) for route in _GETS for caller in CALLERS],
                         ids=[f"HEAD {p} | {c}" for (_, p) in _GETS for c in CALLERS])
def test_head_is_answered_as_the_get(world: World, route: tuple[str, str], caller: str) -> None:
    """Every GET route answers HEAD (RFC 9110 §9.3.2), to each caller as the GET: the same class of answer
    (401 with its challenge, 403, the 404 that hides), and no body. HEAD is no second door."""
    entry = TABLE[route]
    if route not in all_routes(world.app):
        assert entry.landing
        pytest.skip("route not served by this build (its module is landing in parallel)")
    cell = _Cell(route, caller)
    response = _send(world, caller, entry, replace(entry.build(world, caller), method="HEAD"))
    assert response.content == b""
    if isinstance(cell.expected, int):
        assert response.status_code == cell.expected, f"HEAD {route[1]} as {caller}: {response.status_code}"
    else:
        assert _outcome(response, entry.console) == cell.expected, f"HEAD {route[1]} as {caller}: " \
                                                                   f"{response.status_code}"
    if not entry.console and response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
    if cell.expected == UNAUTH and not entry.console:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_bearer_token_of_a_person_does_not_open_the_console(world: World) -> None:
    browser = world.console(SYS)  # no console session
    for caller in PEOPLE:
        answer = browser.get("/console/register", headers=world.headers_for(caller))
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/login")


def test_systems_never_reach_people_only_routes(world: World) -> None:
    """A partner system with every scope it can hold still cannot read the audit log or work cases."""
    people_only = [key for key, entry in TABLE.items() if not entry.console
                   and all(entry.expect[s] in {FORBID, HIDDEN} for s in SYSTEMS)]
    assert ("GET", "/v1/audit/entries") in people_only
    assert ("POST", "/v1/escalations/{case_id}/decision") in people_only


_LOGGED_SUBJECT = "bsn.v1.bWF0cml4IHN1YmplY3Qgb2YgYSBkaXNjbG9zdXJl"


@pytest.fixture(scope="module")
def disclosed(world: World) -> tuple[str, str]:
    """A subject's pseudonym and the id of the exchange whose decision and disclosure about it are logged (the
    world's holders do not answer, so its own exchange disclosed nothing): the municipality asked, the police
    disclosed, in the RIEC."""
    exchange = str(uuid.uuid4())
    world.container.services["audit"].log.append([AuditEvent(
        event_type=kind, trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8), exchange_id=exchange,
        processing_activity=ProcessingActivity(partnership=RIEC, purpose="bibob-integrity-check"),
        requester=Requester(org="gemeente-amsterdam", system=SYSTEM), holder="politie",
        data_subject=DataSubject(pseudonym=_LOGGED_SUBJECT)) for kind in (EventType.POLICY_DECIDED,
                                                                           EventType.DISCLOSURE)])
    return _LOGGED_SUBJECT, exchange


@pytest.mark.parametrize("caller", CALLERS)
def test_a_subject_search_in_a_body_answers_each_caller_as_the_get(world: World, disclosed: tuple[str, str],
                                                                   caller: str) -> None:
    """Same door, same view: another organisation's officer is answered, but finds none of the exchange's
    entries; a partner system, any person but an officer and any bad token are refused with the same problem."""
    (subject, exchange), headers = disclosed, world.headers_for(caller)
    by_get = world.client.get("/v1/audit/entries", params={"subject": subject, "limit": 500}, headers=headers)
    by_post = world.client.post("/v1/audit/entries/search", json={"subject": subject, "limit": 500}, headers=headers)
    assert by_post.status_code == by_get.status_code, by_post.text[:300]
    assert _outcome(by_post, False) == TABLE[("GET", "/v1/audit/entries")].expect[caller]
    if by_get.status_code == 200:
        assert by_post.json() == by_get.json()
        found = {e["entry"]["event"].get("exchange_id") for e in by_post.json()["entries"]}
        assert found == ({exchange} if caller in CASE_PARTIES else set()), caller
    else:
        assert by_post.json()["title"] == by_get.json()["title"]
        assert by_post.headers.get("www-authenticate") == by_get.headers.get("www-authenticate")


@pytest.mark.parametrize("caller", CALLERS)
def test_a_lookup_by_pseudonym_in_a_body_answers_each_caller_as_the_path_form(world: World, disclosed: tuple[str, str],
                                                                             caller: str) -> None:
    (subject, exchange), headers = disclosed, world.headers_for(caller)
    by_get = world.client.get(f"/v1/audit/subjects/{subject}/disclosures", headers=headers)
    by_post = world.client.post("/v1/audit/subjects/disclosures", json={"pseudonym": subject}, headers=headers)
    assert by_post.status_code == by_get.status_code, by_post.text[:300]
    assert _outcome(by_post, False) == TABLE[("GET", "/v1/audit/subjects/{pseudonym}/disclosures")].expect[caller]
    if by_get.status_code == 200:
        assert by_post.json() == by_get.json()
        assert [e["entry"]["event"]["exchange_id"] for e in by_post.json()] == [exchange]
    else:
        assert by_post.json()["title"] == by_get.json()["title"]
        assert by_post.headers.get("www-authenticate") == by_get.headers.get("www-authenticate")
