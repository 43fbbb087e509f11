"""Typed async client of the gateway's exchange API, for partner systems.

* Tokens: OAuth2 client credentials with ``private_key_jwt`` (RFC 7523): a fresh, single-use signed
  assertion per token request; the access token is reused until shortly before it expires.
* Retries: every exchange carries an ``Idempotency-Key`` (generated if the caller gives none), so a
  retry after a timeout or a 502/503 cannot disclose or log twice; a retry that finds the first attempt
  still being answered (409 with ``Retry-After``) waits and asks again; other 4xx answers are never retried.
* Errors: ``GatewayClientError`` with the problem document (RFC 9457) the gateway sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from gateway.client.models import DiscoveryRequest, DiscoveryResult, ExchangeRequest, ExchangeResult
from gateway.client.pseudonyms import PseudonymClient, RecipientKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_RETRY_STATUSES = {502, 503, 504}


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a ``Retry-After`` header in seconds (capped at 30), or None without one."""
    value = response.headers.get("retry-after", "")
    return min(float(value), 30.0) if value.isdigit() else None


class GatewayClientError(Exception):
    """The gateway refused or failed a call; ``problem`` is its problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail') or problem.get('title') or 'error'}")
        self.status = status
        self.problem = problem


class GatewayClient:
    def __init__(self, base_url: str, system_id: str, key: OKPKey | ECKey, *, token_audience: str | None = None,
                 timeout: float = 30.0, retries: int = 2, clock: Any = time.time) -> None:
        self._base = base_url.rstrip("/")
        self.system_id = system_id
        self._key = key
        self._alg = "Ed25519" if isinstance(key, OKPKey) else "ES256"
        self._audience = token_audience
        self._retries = retries
        self._clock = clock
        self._http = httpx.AsyncClient(base_url=self._base, timeout=timeout)
        self._token: tuple[str, float] | None = None
        self._pseudonym_clients: dict[str, PseudonymClient] = {}

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _audience_url(self) -> str:
        if self._audience is None:
            metadata = (await self._http.get("/.well-known/oauth-authorization-server")).json()
            self._audience = str(metadata["token_endpoint"])
        return self._audience

    async def token(self) -> str:
        now = float(self._clock())
        if self._token and self._token[1] - now > 30:
            return self._token[0]
        claims = {"iss": self.system_id, "sub": self.system_id, "aud": await self._audience_url(),
                  "iat": int(now), "exp": int(now) + 60, "jti": str(uuid.uuid4())}
        assertion = jwt.encode({"alg": self._alg, "kid": self._key.kid}, claims, self._key, algorithms=[self._alg])
        response = await self._http.post("/oauth/token", data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion})
        if response.status_code != 200:
            raise GatewayClientError(response.status_code, _problem(response))
        body = response.json()
        self._token = (str(body["access_token"]), now + int(body["expires_in"]))
        return self._token[0]

    async def _send(self, method: str, path: str, *, json: Any = None, idempotency_key: str | None = None,
                    params: dict[str, str] | None = None) -> httpx.Response:
        for attempt in range(self._retries + 1):
            headers = {"Authorization": f"Bearer {await self.token()}"}
            if idempotency_key:
                headers["Idempotency-Key"] = idempotency_key
            try:
                response = await self._http.request(method, path, json=json, headers=headers, params=params)
            except httpx.TransportError:
                if attempt == self._retries or (method == "POST" and not idempotency_key):
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
                continue
            if response.status_code in _RETRY_STATUSES and attempt < self._retries and (
                    method == "GET" or idempotency_key):
                await asyncio.sleep(0.1 * 2**attempt)
                continue
            busy = _retry_after(response) if response.status_code == 409 and idempotency_key else None
            if busy is not None and attempt < self._retries:
                # The first attempt (which timed out here) is still being answered: its answer, not a new
                # exchange, is what the retry will get once it is done.
                await asyncio.sleep(busy)
                continue
            if response.status_code >= 400:
                raise GatewayClientError(response.status_code, _problem(response))
            return response
        raise AssertionError("unreachable")

    async def exchange(self, request: ExchangeRequest, *, idempotency_key: str | None = None) -> ExchangeResult:
        key = idempotency_key or f"{self.system_id}:{uuid.uuid4()}"
        response = await self._send("POST", "/v1/exchanges", json=request.model_dump(mode="json"),
                                    idempotency_key=key)
        return ExchangeResult.model_validate_json(response.content)

    async def discovery(self, request: DiscoveryRequest) -> DiscoveryResult:
        response = await self._send("POST", "/v1/discovery", json=request.model_dump(mode="json"))
        return DiscoveryResult.model_validate_json(response.content)

    async def get_exchange(self, exchange_id: str) -> ExchangeResult:
        response = await self._send("GET", f"/v1/exchanges/{exchange_id}")
        return ExchangeResult.model_validate_json(response.content)

    # -- pseudonyms ---------------------------------------------------------------------------------
    async def pseudonym_client(self, partnership: str) -> PseudonymClient:
        """Makes polymorphic pseudonyms under the gateway's key and opens this partner's own pseudonyms in
        ``partnership`` (the recipient key is fetched once and kept in memory only)."""
        if partnership not in self._pseudonym_clients:
            key = (await self._send("GET", "/v1/pseudonyms/key")).json()["public_key"]
            secret = (await self._send("GET", "/v1/pseudonyms/recipient-key",
                                       params={"partnership": partnership})).json()["recipient_key"]
            self._pseudonym_clients[partnership] = PseudonymClient(key, recipient_key=RecipientKey.decode(secret))
        return self._pseudonym_clients[partnership]

    async def own_pseudonyms(self, partnership: str, identifiers: list[tuple[str, str]]) -> list[str]:
        """This partner's pseudonyms in ``partnership`` for (kind, number) identifiers it knows — what it puts
        in ``subjects`` of a request. The identifiers never leave this process."""
        pseudonyms = await self.pseudonym_client(partnership)
        body = {"partnership": partnership,
                "subjects": [{"type": kind, "polymorphic": pseudonyms.polymorphic(kind, number)}
                             for kind, number in identifiers]}
        encrypted = (await self._send("POST", "/v1/pseudonyms", json=body)).json()["pseudonyms"]
        return [pseudonyms.open(e) for e in encrypted]

    async def enrol(self, partnership: str, subjects: list[tuple[str, str, list[str], list[str]]]) -> list[str]:
        """Enrol subjects held: (kind, number, record types, categories) → own pseudonyms, in order; the
        gateway's hit/no-hit index learns which record types this partner holds on them."""
        pseudonyms = await self.pseudonym_client(partnership)
        body = {"partnership": partnership, "subjects": [
            {"type": kind, "polymorphic": pseudonyms.polymorphic(kind, number), "record_types": types,
             "categories": categories} for kind, number, types, categories in subjects]}
        encrypted = (await self._send("POST", "/v1/enrolments", json=body)).json()["pseudonyms"]
        return [pseudonyms.open(e) for e in encrypted]

    async def rerun(self, request: ExchangeRequest, decision_id: str, *,
                    idempotency_key: str | None = None) -> ExchangeResult:
        """Re-run ``request`` (exactly as first sent) citing an escalation decision that allowed it; only
        the decision's holder is asked, and only in the decided categories."""
        return await self.exchange(request.model_copy(update={"escalation_decision": decision_id}),
                                   idempotency_key=idempotency_key)

    async def escalation_feed(self) -> list[dict[str, Any]]:
        """Cases awaiting this system's organisation; ``awaiting == "rerun"`` items carry the decision id
        (``case["decision"]["id"]``) to pass to ``rerun``."""
        response = await self._send("GET", "/v1/escalations/feed")
        items = response.json()
        return items if isinstance(items, list) else []

    async def object_to(self, exchange_id: str, holder: str, motivation: str) -> dict[str, Any]:
        """Open an escalation case against a denial or narrowing of one target of our exchange."""
        response = await self._send("POST", "/v1/escalations", json={
            "exchange_id": exchange_id, "holder": holder, "motivation": motivation})
        body = response.json()
        return body if isinstance(body, dict) else {}


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"title": "non-JSON error", "status": response.status_code}
    return body if isinstance(body, dict) else {"detail": str(body)}
