"""The stand-in's own sign-in session, as Entra keeps one in its cookies: once a browser
has picked an account here, a later `prompt=none` request without a `login_hint` is
answered for that account with no page at all; with no such session it is refused
`login_required` (AADSTS50058) on the redirect URI, as Entra refuses it. Requests
without `prompt=none` behave as before: the account picker, or the `login_hint`.

The cookie holds the account's address and an HMAC of it under a key of this stand-in's
own, so a browser cannot make itself someone else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from proxy.demo.microsoft.directory import MicrosoftUser
from proxy.demo.microsoft.pages import redirect
from proxy.demo.microsoft.refusals import Refusal
from proxy.demo.microsoft.state import StandInState

COOKIE = "standin_session"
_KEY = secrets.token_bytes(32)


def _mac(email: str) -> str:
    return hmac.new(_KEY, email.encode(), hashlib.sha256).hexdigest()


def remembered(request: Request, state: StandInState) -> MicrosoftUser | None:
    """The account this browser signed in with here before, if any."""
    email, _, mac = request.cookies.get(COOKIE, "").rpartition(".")
    if not email or not hmac.compare_digest(mac, _mac(email)):
        return None
    return state.accounts.get(email)


def remember(response: Response, user: MicrosoftUser) -> Response:
    email = user.email.lower()
    response.set_cookie(
        COOKIE, f"{email}.{_mac(email)}", httponly=True, secure=True, samesite="none"
    )
    return response


def login_required(params: Mapping[str, str]) -> Response:
    return redirect(params, Refusal(50058).fields())
