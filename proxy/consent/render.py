"""How the reserved pages answer: Jinja2 templates under strict headers, and 303 redirects.

Every page forbids framing, content sniffing, scripts and referrers, and nothing is
cached: pages carry a per-session CSRF token and the user's connection state. Forms post
to this site only; `content_security_policy` widens `form-action` by exactly the
configured Microsoft authority hosts, because browsers (Chromium, Edge) apply
`form-action` to the redirect that answers a form too, and "Connect Office 365" answers
with a 303 to Microsoft. The texts that more than one page shows live here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": CSP,
    "referrer-policy": "no-referrer",
}
ADMIN_NEEDED = "An administrator needs to approve this app"
ADMIN_NEEDED_TEXT = (
    "Your organization allows only administrators to approve apps that read calendars and "
    "contacts. You can keep using the app; its calendar and contact features will work once an "
    "administrator has approved it."
)


# What a permission lets the app do, in the words the pages use.
PERMISSION_WORDS = {
    "calendars.read": "read your calendar",
    "calendars.readwrite": "read and change your calendar",
    "contacts.read": "read your contacts",
    "contacts.readwrite": "read and change your contacts",
    "mail.read": "read your mail",
    "user.read": "see your name and email address",
    "ews.accessasuser.all": "read and change your mailbox through Exchange Web Services "
    "(Microsoft grants Exchange Web Services only as access to the whole mailbox)",
}
RESERVED = frozenset({"openid", "profile", "offline_access", "email"})


def in_words(scopes: Iterable[str], whose: str = "your") -> list[str]:
    """What the permissions let the app do, in plain words (an unknown one by its name);
    `whose="their"` for a page that speaks to an administrator about the users."""
    names = (scope.rsplit("/", 1)[-1] for scope in scopes)
    words = [PERMISSION_WORDS.get(n.lower(), n) for n in names if n.lower() not in RESERVED]
    return list(dict.fromkeys(w.replace("your ", f"{whose} ") for w in words))


def content_security_policy(form_targets: Iterable[str]) -> str:
    """The pages' policy, with the origins a form's redirect may lead to (Microsoft's)."""
    extra = " ".join(sorted(set(form_targets)))
    return f"{CSP} {extra}" if extra else CSP


def render(request: Request, status: int, template: str, context: dict[str, Any]) -> Response:
    return TEMPLATES.TemplateResponse(
        request, template, context, status_code=status, headers=PAGE_HEADERS
    )


def page(
    request: Request, status: int, title: str, paragraphs: list[str], next_url: str, **extra: Any
) -> Response:
    """A message page: a title, a few paragraphs, and a way back to the app."""
    context = {
        "title": title,
        "paragraphs": paragraphs,
        "next": next_url,
        "admin_options": False,
        "manual_link": False,
        "csrf": None,
        "prefix": "/",
        "code": None,
        "correlation_id": None,
        "permissions": None,
        "approve_link": None,
        "admin_link": None,
    }
    context.update(extra)
    return render(request, status, "message.html", context)


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers={"cache-control": "no-store"})


def to_microsoft(request: Request, url: str | None, return_to: str) -> Response:
    """The redirect to Microsoft, or a page saying it cannot be reached (`url` is None)."""
    if url is None:
        return page(
            request,
            503,
            "Microsoft cannot be reached right now",
            ["Please try again in a few minutes."],
            next_url=return_to,
        )
    return redirect(url)


def not_found(request: Request) -> Response:
    return page(request, 404, "Page not found", ["There is no such page here."], next_url="/")


def refused(request: Request) -> Response:
    return page(
        request,
        400,
        "This request could not be checked",
        [
            "The form expired or did not come from this site. Go back, reload the page and "
            "try again."
        ],
        next_url="/",
    )


def unavailable(request: Request) -> Response:
    return page(
        request,
        503,
        "Office 365 connection is unavailable right now",
        ["Please try again in a few minutes. The app itself is not affected."],
        next_url="/",
    )


__all__ = [
    "ADMIN_NEEDED",
    "ADMIN_NEEDED_TEXT",
    "CSP",
    "content_security_policy",
    "in_words",
    "not_found",
    "page",
    "redirect",
    "refused",
    "render",
    "to_microsoft",
    "unavailable",
]
