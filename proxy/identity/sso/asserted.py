"""Identity the upstream app asserts itself, for any SSO the proxy cannot see into (the
OIDC code flow, say): a response header on the sign-in completion response, or a
"who am I" endpoint the proxy calls with the session cookie the app just issued.

The upstream is the one party the proxy trusts here: the header is read only from the
upstream's response (and removed before the browser sees it; an inbound copy from a
browser is never read), and who-am-I is asked over the proxy's own connection.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from proxy.config import UpstreamIdentityEndpoint
from proxy.identity.sso import SignIn, SignInRejected

MAX_WHOAMI_BYTES = 256 * 1024
# A user name (UPN, email, DOMAIN\\user) never holds these; a header that does is garbage.
NOT_IN_USER_NAMES = frozenset('"<>[]{}(),;:')


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer; None when the path is absent."""
    if pointer == "":
        return document
    current = document
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict):
            current = current.get(token)
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            return None
    return current


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _values(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(t for t in (_text(v) for v in items) if t is not None)


def sign_in_from_document(endpoint: UpstreamIdentityEndpoint, document: Any, method: str) -> SignIn:
    user = _text(resolve_pointer(document, endpoint.user_pointer))
    if user is None:
        raise SignInRejected(f"no user at JSON pointer {endpoint.user_pointer!r}")

    def pointed(pointer: str | None) -> str | None:
        return _text(resolve_pointer(document, pointer)) if pointer is not None else None

    return SignIn(
        subject=user,
        email=user if "@" in user else None,
        name=pointed(endpoint.name_pointer),
        tenant_id=pointed(endpoint.tenant_pointer),
        object_id=pointed(endpoint.object_id_pointer),
        attributes={
            name: _values(resolve_pointer(document, pointer))
            for name, pointer in endpoint.attribute_pointers.items()
        },
        method=method,
        issuer="upstream",
    )


def sign_in_from_header(endpoint: UpstreamIdentityEndpoint, value: bytes) -> SignIn:
    """The header holds the user (an email/UPN), or a JSON object read with the pointers."""
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SignInRejected("identity header is not UTF-8") from None
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise SignInRejected("identity header is not valid JSON") from None
        return sign_in_from_document(endpoint, document, "upstream-header")
    if not text or len(text) > 512 or any(c.isspace() or c in NOT_IN_USER_NAMES for c in text):
        raise SignInRejected("identity header is neither a plain user name nor a JSON object")
    return SignIn(
        subject=text,
        email=text if "@" in text else None,
        method="upstream-header",
        issuer="upstream",
    )


async def sign_in_from_whoami(
    endpoint: UpstreamIdentityEndpoint,
    client: httpx.AsyncClient,
    cookie_name: str,
    cookie_value: str,
    host: str | None,
) -> SignIn:
    assert endpoint.whoami_path is not None
    headers = {"cookie": f"{cookie_name}={cookie_value}", "accept": "application/json"}
    if host:
        headers["host"] = host
    try:
        response = await client.get(endpoint.whoami_path, headers=headers)
    except httpx.HTTPError as exc:
        raise SignInRejected(
            f"who-am-I call to the upstream failed: {type(exc).__name__}"
        ) from None
    if response.status_code != 200:
        raise SignInRejected(f"who-am-I answered {response.status_code}")
    if len(response.content) > MAX_WHOAMI_BYTES:
        raise SignInRejected("who-am-I answer is too large")
    try:
        document = response.json()
    except ValueError:
        raise SignInRejected("who-am-I answer is not JSON") from None
    return sign_in_from_document(endpoint, document, "upstream-whoami")
