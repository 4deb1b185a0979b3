"""What the client's operations yield: a `TokenResult` built from msal's answer, and the
`AdminConsent` an admin consent callback reports."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msal  # type: ignore[import-untyped]

from proxy.microsoft.errors import ErrorKind, MicrosoftError, from_response

__all__ = [
    "AdminConsent",
    "TokenResult",
    "admin_consent_outcome",
    "binding",
    "cached_id_claims",
    "token_result",
]


@dataclass(frozen=True, slots=True)
class TokenResult:
    """An access token and the per-user msal cache it came from. `token_cache` holds the
    refresh token: store it encrypted. Neither appears in the repr."""

    access_token: str = field(repr=False)
    expires_at: float
    scopes: tuple[str, ...]
    tenant_id: str
    object_id: str
    account_id: str
    token_cache: str = field(repr=False)
    cache_changed: bool = True
    username: str | None = None
    # False when msal answered from the cache, without asking Microsoft.
    refreshed: bool = True


@dataclass(frozen=True, slots=True)
class AdminConsent:
    """An admin's consent for a tenant, as the callback reports it. `tenant` comes from the
    query string and can be forged: trust only the tenant your `state` was bound to."""

    tenant: str
    scopes: tuple[str, ...]


def admin_consent_outcome(query_params: Mapping[str, str]) -> AdminConsent:
    """What the admin consent callback says; raises MicrosoftError for an error answer.
    Check its `state` first, yourself."""
    if "error" in query_params:
        raise MicrosoftError(from_response(query_params))
    tenant = query_params.get("tenant", "")
    if query_params.get("admin_consent", "").lower() != "true" or not tenant:
        raise MicrosoftError.of(ErrorKind.BAD_CALLBACK, "not_an_admin_consent")
    return AdminConsent(tenant, tuple(query_params.get("scope", "").split()))


def binding(claims: Mapping[str, Any]) -> tuple[str, str]:
    tenant_id, object_id = claims.get("tid"), claims.get("oid")
    if not (isinstance(tenant_id, str) and tenant_id and isinstance(object_id, str) and object_id):
        raise MicrosoftError.of(ErrorKind.UNKNOWN, "id_token_without_tid_oid")
    return tenant_id, object_id


def token_result(
    result: Mapping[str, Any],
    cache: Any,
    tenant_id: str,
    object_id: str,
    account_id: str,
    requested: Sequence[str],
) -> TokenResult:
    changed: bool = cache.has_state_changed
    granted = result.get("scope")
    # A cache hit has no `scope`: the cached token covers what was asked for.
    scopes = tuple(granted.split()) if isinstance(granted, str) else tuple(requested)
    claims = result.get("id_token_claims") or {}
    return TokenResult(
        access_token=result["access_token"],
        expires_at=time.time() + int(result.get("expires_in", 0)),
        scopes=scopes,
        tenant_id=tenant_id,
        object_id=object_id,
        account_id=account_id,
        token_cache=cache.serialize(),
        cache_changed=changed,
        username=claims.get("preferred_username"),
        refreshed=result.get("token_source") != "cache",
    )


def cached_id_claims(cache: Any, account_id: str) -> dict[str, Any]:
    """The claims of the id_token msal cached at redemption (not verified: see the reasons
    in `proxy.microsoft.client`)."""
    for entry in cache.search(
        msal.TokenCache.CredentialType.ID_TOKEN, query={"home_account_id": account_id}
    ):
        try:
            payload = entry["secret"].split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError, binascii.Error):
            continue
        if isinstance(claims, dict):
            return claims
    return {}
