"""The OpenAPI document as partner systems integrate from it: for the exchange and discovery endpoints every
schema and field is described, every outcome explained, and every answer and error has an example that the
API models accept (so examples cannot drift from the contract) and that holds no personal data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from audit.guard import find_personal_data
from gateway.client.models import DiscoveryRequest, DiscoveryResult, ExchangeRequest, ExchangeResult, Outcome
from gateway.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE

OPERATIONS: dict[tuple[str, str], tuple[type[BaseModel] | None, type[BaseModel]]] = {
    ("/v1/exchanges", "post"): (ExchangeRequest, ExchangeResult),
    ("/v1/exchanges/{exchange_id}", "get"): (None, ExchangeResult),
    ("/v1/discovery", "post"): (DiscoveryRequest, DiscoveryResult),
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from alembic import command

    from gateway.app import create_app
    from gateway.db.engine import alembic_config
    from gateway.settings import Settings

    tmp = tmp_path_factory.mktemp("openapi")
    url = f"sqlite:///{tmp / 'gateway.sqlite'}"
    command.upgrade(alembic_config(url), "head")
    with TestClient(create_app(Settings(data_dir=tmp, database_url=url))) as client:
        document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def _schemas_reachable(spec: dict[str, Any], node: Any, seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                _schemas_reachable(spec, spec["components"]["schemas"][name], seen)
        for value in node.values():
            _schemas_reachable(spec, value, seen)
    elif isinstance(node, list):
        for value in node:
            _schemas_reachable(spec, value, seen)
    return seen


def _examples(media: dict[str, Any]) -> Iterator[Any]:
    if "example" in media:
        yield media["example"]
    for example in media.get("examples", {}).values():
        yield example["value"]


@pytest.mark.parametrize(("path", "method"), list(OPERATIONS))
def test_every_schema_and_field_of_the_exchange_endpoints_is_described(spec: dict[str, Any], path: str,
                                                                       method: str) -> None:
    operation = spec["paths"][path][method]
    undescribed = []
    for name in sorted(_schemas_reachable(spec, operation)):
        schema = spec["components"]["schemas"][name]
        if not schema.get("description"):
            undescribed.append(name)
        undescribed += [f"{name}.{field}" for field, prop in schema.get("properties", {}).items()
                        if not prop.get("description")]
    assert undescribed == []


def test_every_outcome_is_explained(spec: dict[str, Any]) -> None:
    description = spec["components"]["schemas"]["Outcome"]["description"]
    assert all(f"`{outcome.value}`" in description for outcome in Outcome)


@pytest.mark.parametrize(("path", "method"), list(OPERATIONS))
def test_requests_and_answers_have_examples_the_models_accept(spec: dict[str, Any], path: str, method: str) -> None:
    request_model, answer_model = OPERATIONS[(path, method)]
    operation = spec["paths"][path][method]
    if request_model is not None:
        requests = list(_examples(operation["requestBody"]["content"]["application/json"]))
        assert requests
        for example in requests:
            request_model.model_validate(example)
            assert find_personal_data(example) == []
    answers = list(_examples(operation["responses"]["200"]["content"]["application/json"]))
    assert answers
    for example in answers:
        answer_model.model_validate(example)
        assert find_personal_data(example) == []


def _policy_versions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "policy_version" and isinstance(value, str):
                yield value
            yield from _policy_versions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _policy_versions(value)


def test_examples_carry_the_shipped_policy_version(spec: dict[str, Any]) -> None:
    """An example that names a policy version names the one the policies carry (bumped on every rule change)."""
    from gateway.settings import POLICIES_DIR

    shipped = re.search(r'^policy_version := "([^"]+)"', (POLICIES_DIR / "version.rego").read_text(), re.MULTILINE)
    assert shipped is not None
    versions = set(_policy_versions(spec["paths"]))
    assert versions == {shipped.group(1)}


def test_every_error_of_every_route_has_a_problem_example_with_its_status(spec: dict[str, Any]) -> None:
    checked = 0
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation.get("responses", {}).items():
                if status[0] not in "45":
                    continue
                if (path, status) == ("/health/ready", "503"):  # the probe's own JSON, documented as such
                    assert set(response["content"]) == {"application/json"}
                    continue
                media = response["content"][PROBLEM_MEDIA_TYPE]
                assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
                examples = list(_examples(media))
                assert examples, f"{method.upper()} {path} {status}"
                for example in examples:
                    assert example["status"] == int(status), f"{method.upper()} {path} {status}"
                    assert example["type"].startswith(PROBLEM_TYPE_BASE)
                    assert {"title", "detail"} <= set(example)
                    assert find_personal_data(example) == []
                checked += 1
    assert checked > 100  # every route, not a few


def test_error_examples_name_the_route_they_belong_to(spec: dict[str, Any]) -> None:
    """Shared examples are built per route: discovery's name discovery, the token endpoint's are OAuth errors."""
    for path in ("/v1/exchanges", "/v1/discovery"):
        for status in ("422", "503"):
            media = spec["paths"][path]["post"]["responses"][status]["content"][PROBLEM_MEDIA_TYPE]
            assert {example["instance"] for example in _examples(media)} == {path}
    token = spec["paths"]["/oauth/token"]["post"]["responses"]
    for status in ("400", "401"):
        [example] = _examples(token[status]["content"][PROBLEM_MEDIA_TYPE])
        assert example["type"].startswith(PROBLEM_TYPE_BASE + "oauth-")
        assert {"error", "error_description"} <= set(example)


def test_the_exchange_documents_its_idempotency_conflicts_and_fail_closed_refusals(spec: dict[str, Any]) -> None:
    responses = spec["paths"]["/v1/exchanges"]["post"]["responses"]
    conflicts = responses["409"]["content"][PROBLEM_MEDIA_TYPE]["examples"]
    assert {"key_reused", "in_flight", "answers_not_stored"} <= set(conflicts)
    assert "Retry-After" in responses["409"]["headers"]
    refusals = [e["value"] for e in responses["503"]["content"][PROBLEM_MEDIA_TYPE]["examples"].values()]
    assert any(e.get("outcome") == "denied" for e in refusals)
    key = next(p for p in spec["paths"]["/v1/exchanges"]["post"]["parameters"] if p["name"] == "idempotency-key")
    assert key["description"]


def test_a_replay_and_its_records_no_longer_kept_are_documented_with_examples(spec: dict[str, Any]) -> None:
    """A retry's answer is marked (header) and a replayed target without its records says why, each with an
    example: an empty `records` alone read as "the holder had nothing"."""
    ok = spec["paths"]["/v1/exchanges"]["post"]["responses"]["200"]
    assert ok["headers"]["Idempotent-Replayed"]["description"]
    withheld = spec["components"]["schemas"]["TargetOutcome"]["properties"]["records_withheld"]
    assert {"`expired`", "`unavailable`"} <= set(re.findall(r"`[a-z]+`", withheld["description"]))
    assert withheld["examples"] == ["expired"]
    for path, method in (("/v1/exchanges", "post"), ("/v1/exchanges/{exchange_id}", "get")):
        answers = list(_examples(spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]))
        reasons = {t.get("records_withheld") for answer in answers for t in answer["targets"]}
        assert {None, "expired"} <= reasons, path
        for answer in answers:
            for target in answer["targets"]:
                assert not (target.get("records_withheld") and target["records"]), path
    answers = list(_examples(ok["content"]["application/json"]))
    assert "unavailable" in {t.get("records_withheld") for answer in answers for t in answer["targets"]}


def test_every_route_that_requires_a_token_declares_it_and_no_public_one_does(spec: dict[str, Any]) -> None:
    """Who needs a token is read from the authorisation matrix (tests/security), whose every cell is checked
    against the running app: a route there that answers 401 to every bad or missing token must carry the bearer
    security requirement in the document partner systems generate their clients from, and a public route
    (health, JWKS, metadata, the token endpoint, people's login) must not claim one."""
    from tests.security.test_authorisation_matrix import TABLE, UNAUTH
    from tests.security.world import BAD_TOKENS

    scheme = spec["components"]["securitySchemes"]["HTTPBearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    wrong, public, protected = [], 0, 0
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            route = (method.upper(), path)
            assert route in TABLE, f"{route} is documented but not in the authorisation matrix"
            entry = TABLE[route]
            needs_token = not entry.console and all(entry.expect[caller] == UNAUTH for caller in BAD_TOKENS)
            declared = [name for requirement in operation.get("security", []) for name in requirement]
            if declared != (["HTTPBearer"] if needs_token else []):
                wrong.append(f"{method.upper()} {path}: declares {declared or 'nothing'}")
            protected += needs_token
            public += not needs_token
    assert wrong == [], "\n".join(wrong)
    assert public >= 5  # both kinds were met: the matrix was read, not skipped
    assert protected >= 30


def test_the_audit_routes_that_take_a_pseudonym_in_a_body_have_examples_their_models_accept(
        spec: dict[str, Any]) -> None:
    """The review's search and the contact point's look-up (whose pseudonyms stay out of addresses): every request
    example is a body the route takes (each form of the look-up has one), every answer example an answer."""
    from pydantic import TypeAdapter

    from gateway.auditing.review import EntryPage, EntrySearch, EntryView
    from gateway.enrolment.endpoints import DisclosuresLookup

    routes: dict[str, tuple[Any, Any]] = {
        "/v1/audit/entries/search": (TypeAdapter(EntrySearch), TypeAdapter(EntryPage)),
        "/v1/audit/subjects/disclosures": (TypeAdapter(DisclosuresLookup), TypeAdapter(list[EntryView]))}
    for path, (request_model, answer_model) in routes.items():
        operation = spec["paths"][path]["post"]
        assert operation["description"]
        requests = list(_examples(operation["requestBody"]["content"]["application/json"]))
        assert len(requests) >= 2, path
        taken = [request_model.validate_python(example) for example in requests]
        answers = list(_examples(operation["responses"]["200"]["content"]["application/json"]))
        assert answers, path
        for example in answers:
            answer_model.validate_python(example)
    lookups = [type(body).__name__ for body in taken]
    assert sorted(lookups) == ["PseudonymLookup", "SubjectLookup"]
