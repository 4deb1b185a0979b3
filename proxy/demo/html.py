"""The one page frame every demo server draws its pages in."""

from __future__ import annotations

import html
from collections.abc import Iterable

from starlette.responses import HTMLResponse

from proxy.demo.users import DemoUser

BASE_STYLE = (
    "body{font:1rem/1.5 system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}"
)


def page(
    title: str,
    body: str,
    status: int = 200,
    *,
    site: str = "",
    style: str = "",
    no_store: bool = True,
) -> HTMLResponse:
    """A small, self-contained HTML page; `site` follows the title in the tab."""
    tab = f"{title} · {site}" if site else title
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(tab)}</title><style>{BASE_STYLE}{style}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>",
        status_code=status,
        headers={"cache-control": "no-store"} if no_store else None,
    )


def user_choices(users: Iterable[DemoUser]) -> str:
    """One submit button per demo user, `name="user"` carrying the user's id."""
    return "".join(
        f'<li><button type="submit" name="user" value="{html.escape(u.id)}">'
        f"{html.escape(u.name)} <small>({html.escape(u.email)})</small></button></li>"
        for u in users
    )
