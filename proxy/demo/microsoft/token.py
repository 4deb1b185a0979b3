"""`{tenant}/oauth2/v2.0/token`: authorization codes (one use, PKCE checked) and refresh
tokens (rotated: the old one dies when redeemed) turned into access tokens for one
resource, id tokens and refresh tokens, as Entra answers them. Knobs can make it fail
(`fail_token_requests`), refuse a user (MFA, Conditional Access, revoked) or a secret."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.demo.microsoft.clients import authenticate, b64url
from proxy.demo.microsoft.directory import AppRegistration, MicrosoftUser
from proxy.demo.microsoft.pages import read_form
from proxy.demo.microsoft.refusals import NO_STORE, Refusal
from proxy.demo.microsoft.scopes import GRAPH, resource_of
from proxy.demo.microsoft.state import RefreshToken, StandInState


class Token:
    def __init__(self, state: StandInState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        self.state.token_requests += 1
        if self.state.failures.remaining > 0:
            return self.failure(request)
        form = await read_form(request)
        try:
            if form is None:
                raise Refusal(90100)
            segment = request.path_params["tenant"]
            if self.state.tenant_in_path(segment) is None:
                raise Refusal(90002, tenant=segment)
            app = authenticate(self.state, request, form)
            grant = form.get("grant_type")
            if grant == "authorization_code":
                return JSONResponse(self.redeem_code(app, form), headers=NO_STORE)
            if grant == "refresh_token":
                return JSONResponse(self.redeem_refresh(app, form), headers=NO_STORE)
            raise Refusal(70003)
        except Refusal as refusal:
            return refusal.json(request, self.state.clock(), self.state.base)

    def failure(self, request: Request) -> Response:
        failures = self.state.failures
        failures.remaining -= 1
        response = Refusal(90033, failures.status).json(
            request, self.state.clock(), self.state.base
        )
        if failures.retry_after is not None:
            response.headers["Retry-After"] = str(failures.retry_after)
        return response

    def redeem_code(self, app: AppRegistration, form: Mapping[str, str]) -> dict[str, Any]:
        code = self.state.codes.get(form.get("code", ""))
        if code is None or code.client_id != app.client_id:
            raise Refusal(9002313)
        if code.used:
            raise Refusal(54005)
        if self.state.clock() > code.issued + self.state.code_lifetime:
            raise Refusal(70008)
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            raise Refusal(50011, redirect_uri=form.get("redirect_uri", ""), client_id=app.client_id)
        verifier = form.get("code_verifier", "")
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        if not verifier or not secrets.compare_digest(challenge, code.challenge):
            raise Refusal(50148)
        scopes = self.requested(app, form, code.scopes)
        return self.issue(app, code.user, scopes, code.nonce, form)

    def redeem_refresh(self, app: AppRegistration, form: Mapping[str, str]) -> dict[str, Any]:
        token = self.state.refresh_tokens.get(form.get("refresh_token", ""))
        if token is None or token.client_id != app.client_id:
            raise Refusal(9002313)
        email = token.user.email.lower()
        self.state.refresh_redemptions[email] += 1
        if not token.alive:
            raise Refusal(50173)
        if self.state.clock() > token.issued + self.state.refresh_token_lifetime:
            raise Refusal(70008)
        if email in self.state.blocked:
            raise Refusal(53003)
        if email in self.state.mfa_required:
            raise Refusal(50076)
        scopes = self.requested(app, form, token.scopes)
        token.alive = False  # rotation: the old refresh token dies here
        return self.issue(app, token.user, scopes, None, form)

    def requested(
        self, app: AppRegistration, form: Mapping[str, str], default: tuple[str, ...]
    ) -> list[str]:
        scopes = self.state.canonical_all(form.get("scope", "").split(), app) or list(default)
        if len({resource_of(s) for s in scopes} - {None}) > 1:
            raise Refusal(28000)
        return scopes

    def issue(
        self,
        app: AppRegistration,
        user: MicrosoftUser,
        scopes: list[str],
        nonce: str | None,
        form: Mapping[str, str],
    ) -> dict[str, Any]:
        if any(s not in self.state.granted(app.client_id, user) for s in scopes):
            raise Refusal(65001, client_id=app.client_id, app=app.name)
        resource = next((r for r in map(resource_of, scopes) if r), GRAPH)
        permissions = [s.rpartition("/")[2] for s in scopes if resource_of(s)]
        # Graph answers short names, other resources full ones, as Entra does.
        named = [p if resource == GRAPH else f"{resource}/{p}" for p in permissions]
        oidc = [s for s in scopes if s in ("openid", "profile", "email")]
        lifetime = self.state.access_token_lifetime
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(named + oidc),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self.access_token(app, user, resource, permissions, lifetime),
        }
        if "offline_access" in scopes:
            refresh = secrets.token_urlsafe(64)
            self.state.refresh_tokens[refresh] = RefreshToken(
                app.client_id, user, tuple(scopes), self.state.clock()
            )
            answer["refresh_token"] = refresh
        if "openid" in scopes:
            answer["id_token"] = self.state.id_token(
                user,
                app.client_id,
                nonce=nonce,
                now=self.state.clock(),
                extra_claims={"iss": self.issuer(user), "ver": "2.0", "groups": None},
            )
        if form.get("client_info") == "1":
            info = json.dumps({"uid": user.object_id, "utid": user.tenant_id}).encode()
            answer["client_info"] = b64url(info)
        return answer

    def issuer(self, user: MicrosoftUser) -> str:
        return f"{self.state.base}/{user.tenant_id}/v2.0"

    def access_token(
        self,
        app: AppRegistration,
        user: MicrosoftUser,
        resource: str,
        permissions: list[str],
        lifetime: int,
    ) -> str:
        now = int(self.state.clock())
        claims = {
            "aud": resource,
            "iss": self.issuer(user),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "azp": app.client_id,
            "appid": app.client_id,
            "scp": " ".join(permissions),
            "tid": user.tenant_id,
            "oid": user.object_id,
            "sub": user.sub,
            "upn": user.email,
            "name": user.name,
            "ver": "2.0",
            "uti": secrets.token_urlsafe(16),
        }
        return self.state.sign_payload(json.dumps(claims).encode(), {"typ": "JWT"})
