"""The stand-in's HTML: the page frame, the pieces of its consent and account pages, its
error page, the redirect back to the app (query or form_post), and the small form reader
its POSTs go through."""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from proxy.demo.html import page as html_page
from proxy.demo.microsoft.refusals import Refusal
from proxy.demo.microsoft.scopes import DESCRIPTIONS
from proxy.demo.users import DemoUser

MAX_FORM_BYTES = 64 * 1024
BUTTONS = (
    '<button type="submit" name="decision" value="cancel">Cancel</button> '
    '<button type="submit" name="decision" value="accept">Accept</button>'
)


async def read_form(request: Request) -> dict[str, str] | None:
    """A small urlencoded form (no python-multipart); None when too large or malformed."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items()}


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    style = "ul.accounts{list-style:none;padding:0}button{font:inherit;padding:.5rem 1rem}"
    return html_page(title, body, status, site="Microsoft identity platform stand-in", style=style)


def error_page(refusal: Refusal) -> HTMLResponse:
    """Entra's error page: shown in the browser, never redirected."""
    return page(
        "Sorry, but we're having trouble signing you in.",
        f'<p role="alert"><code>AADSTS{refusal.code}</code>: {html.escape(refusal.message)}</p>'
        f"<p>Correlation ID: {uuid.uuid4()}</p>",
        400,
    )


def redirect(params: Mapping[str, str], answer: Mapping[str, str]) -> Response:
    """Back to the (already checked) redirect URI, with `state` echoed."""
    fields = {**answer, **({"state": params["state"]} if "state" in params else {})}
    target = params["redirect_uri"]
    if params.get("response_mode") == "form_post":
        return page(
            "Working...",
            f'<form method="post" action="{html.escape(target)}">{hidden(fields, fields)}'
            '<button type="submit">Continue</button></form>'
            "<script>document.forms[0].submit()</script>",
        )
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}{urlencode(fields)}", status_code=302)


def hidden(params: Mapping[str, str], names: Iterable[str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(n)}" value="{html.escape(params[n])}">'
        for n in names
        if params.get(n) is not None
    )


def form_start(
    request: Request, params: Mapping[str, str], fields: Iterable[str], user: DemoUser
) -> str:
    """A form that posts back here, carrying the request's `fields` and the chosen user."""
    return (
        f'<form method="post" action="{html.escape(request.url.path)}">'
        f"{hidden(params, fields)}{hidden({'user': user.email}, ['user'])}"
    )


def signed_in(user: DemoUser) -> str:
    return f"<p>Signed in as <strong>{html.escape(user.email)}</strong></p>"


def permission_list(scopes: Iterable[str]) -> str:
    items = []
    for scope in scopes:
        name = scope.rpartition("/")[2] if "://" in scope else scope
        label = DESCRIPTIONS.get(name, name)
        items.append(f"<li>{html.escape(label)} <small>({html.escape(name)})</small></li>")
    return f'<ul aria-label="Permissions requested">{"".join(items)}</ul>'


def account_picker(
    request: Request, params: Mapping[str, str], fields: Iterable[str], users: Iterable[DemoUser]
) -> Response:
    buttons = "".join(
        f'<li><button type="submit" name="user" value="{html.escape(u.email)}">'
        f"{html.escape(u.name)} <small>({html.escape(u.email)})</small></button></li>"
        for u in users
    )
    body = (
        f'<form method="post" action="{html.escape(request.url.path)}">'
        f"{hidden(params, fields)}<fieldset><legend>Demo accounts (no passwords)</legend>"
        f'<ul class="accounts">{buttons}</ul></fieldset></form>'
    )
    return page("Pick an account", body)
