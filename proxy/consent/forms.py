"""What the reserved pages read from a request: narrow query strings, small forms, CSRF.

The pages take two or three short fields, so the readers are strict on purpose: a form
body over 16 KiB (the rest is never read), more than ten fields or bytes outside ASCII
refuse the form, and a query key given twice counts as absent, so that a second `state`
or `error` cannot pick the outcome of a callback. Starlette's `Request.form()` would
accept multipart bodies and keep the last of repeated keys, and needs python-multipart,
which the proxy does not ship: the body is read from `Request.stream()` and parsed with
the standard library instead.
"""

from __future__ import annotations

import hashlib
import hmac
from contextlib import aclosing
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request

from proxy.identity.session import Session

MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 10
MAX_QUERY_FIELDS = 20


def query(request: Request) -> dict[str, str]:
    """The query's single-valued fields; none at all when it is not plain ASCII or has
    too many fields."""
    raw: bytes = request.scope.get("query_string", b"")
    try:
        parsed = parse_qs(raw.decode("ascii"), max_num_fields=MAX_QUERY_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items() if len(v) == 1}


async def small_body(request: Request) -> bytes | None:
    """The request body, or None once it grows past MAX_FORM_BYTES or the client left."""
    received = b""
    try:
        async with aclosing(request.stream()) as chunks:
            async for chunk in chunks:
                received += chunk
                if len(received) > MAX_FORM_BYTES:
                    return None
    except ClientDisconnect:
        return None
    return received


async def small_form(request: Request) -> dict[str, str] | None:
    """A small, well-formed url-encoded form's fields (the first of repeated ones), or None."""
    body = await small_body(request)
    if body is None:
        return None
    try:
        parsed = parse_qs(body.decode("ascii"), max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in parsed.items()}


class Csrf:
    """Form tokens bound to the proxy session: an HMAC of the session id under a key derived
    from the first token encryption key, so every replica accepts every other's forms."""

    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(b"csrf\0" + key.encode()).digest()

    def token(self, session: Session) -> str:
        return hmac.new(self._key, session.id.encode(), "sha256").hexdigest()

    async def form(self, request: Request, session: Session | None) -> dict[str, str] | None:
        """The posted fields, when the form is small, well formed and carries the token of
        this browser's session; None otherwise."""
        fields = await small_form(request)
        if fields is None or session is None:
            return None
        # As bytes: a percent-escaped non-ASCII token must be refused, not raise.
        presented = fields.get("csrf", "").encode()
        if not hmac.compare_digest(presented, self.token(session).encode()):
            return None
        return fields


__all__ = ["MAX_FORM_BYTES", "Csrf", "query", "small_body", "small_form"]
