"""Discovery and keys, per tenant path: `{tenant}/v2.0/.well-known/openid-configuration`
(Entra's v2 document; `{tenantid}` in the issuer for organizations/common) and
`{tenant}/discovery/v2.0/keys`. `outage` makes both answer 503."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.demo.microsoft.directory import Tenant
from proxy.demo.microsoft.refusals import Refusal
from proxy.demo.microsoft.scopes import OIDC_SCOPES
from proxy.demo.microsoft.state import StandInState

UNAVAILABLE = {"error": "temporarily_unavailable"}


class Discovery:
    def __init__(self, state: StandInState) -> None:
        self.state = state

    def document(self, segment: str) -> dict[str, Any] | None:
        """The discovery document of a tenant path segment; None for an unknown tenant."""
        found = self.state.tenant_in_path(segment)
        if found is None:
            return None
        path = found.id if isinstance(found, Tenant) else found
        issuer_tenant = found.id if isinstance(found, Tenant) else "{tenantid}"
        base = f"{self.state.base}/{path}"
        return {
            "issuer": f"{self.state.base}/{issuer_tenant}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "scopes_supported": list(OIDC_SCOPES),
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic",
            ],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "name",
                "preferred_username", "email", "tid", "oid", "ver",
            ],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }  # fmt: skip

    async def configuration(self, request: Request) -> Response:
        self.state.discovery_fetches += 1
        if self.state.outage:
            return JSONResponse(UNAVAILABLE, status_code=503)
        segment = request.path_params["tenant"]
        document = self.document(segment)
        if document is None:
            refusal = Refusal(90002, tenant=segment)
            return refusal.json(request, self.state.clock(), self.state.base)
        return JSONResponse(document)

    async def keys(self, request: Request) -> Response:
        self.state.jwks_fetches += 1
        if self.state.outage:
            return JSONResponse(UNAVAILABLE, status_code=503)
        return JSONResponse(self.state.jwks())
