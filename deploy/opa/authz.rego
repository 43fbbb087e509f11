# Who may call the OPA server's own API. docker-compose.yml starts OPA with `--authentication token
# --authorization basic`: OPA then asks `data.system.authz.allow` before serving any request, with
#   input.identity  the bearer token of the `Authorization` header (absent without one),
#   input.method    the HTTP method, upper case,
#   input.path      the URL path split at "/" (`/v1/policies/` is ["v1", "policies", ""]),
#   input.headers, input.params, input.body (the latter for POST /v1/data only).
# Without this policy OPA would answer every call with 401 and the gateway would never become ready.
#
# This file lives outside policies/ on purpose: the embedded engine (gateway/policy/engine.py) loads every
# .rego under policies/ and must not get OPA's server authorization; the opa container loads both.
#
# Exactly the calls the gateway's OPA-server engine makes (OpaServerPolicyEngine, opa-python-client) are
# allowed, and only with the shared token; everything else is denied, so a token holder still cannot
# replace or delete policies (PUT/DELETE /v1/policies/...), read other data or run ad-hoc queries.
# The one unauthenticated call is GET /health, for the container's health check.
package system.authz

import rego.v1

# The shared token, from the OPA process's environment: docker-compose gives the opa container the same
# WGS_OPA_TOKEN (from .env) as the gateway, which sends it as `Authorization: Bearer <token>`. Kept in
# one rule so the tests can supply it (`with opa.runtime as ...`) and no secret is written in a file.
expected_token := opa.runtime().env.WGS_OPA_TOKEN

default allow := false

# The container health check (docker-compose.yml), and nothing else, without a token.
allow if {
	input.method == "GET"
	input.path == ["health"]
}

allow if {
	gateway
	some call in gateway_calls
	input.method == call[0]
	input.path == call[1]
}

# The caller holds the shared token. An empty or missing expected token matches nobody (fail closed),
# so an OPA started without WGS_OPA_TOKEN refuses everything but the health check.
gateway if {
	is_string(expected_token)
	expected_token != ""
	input.identity == expected_token
}

# [method, path] of every call the gateway makes.
gateway_calls := {
	# Readiness lists the policies: GET /v1/policies (gateways before wgs-policy-2026.12.4 asked for
	# /v1/policies/, which OPA redirects there, and followed the redirect).
	["GET", ["v1", "policies"]],
	["GET", ["v1", "policies", ""]],
	# The register, pushed once per process as data.register (Data API).
	["PUT", ["v1", "data", "register"]],
} | {["POST", ["v1", "data", "wgs", kind, rule]] |
	# gateway.policy.engine.OPA_PATHS and BATCH_OPA_PATHS: wgs/<kind>/decision and wgs/<kind>/decisions.
	some kind in {"exchange", "discovery"}
	some rule in {"decision", "decisions"}
}
