"""A small example app to put behind the proxy: it shows what the proxy forwarded."""

from __future__ import annotations

import html

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route


async def home(request: Request) -> Response:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in request.headers.items()
    )
    user = request.cookies.get("demo_session")
    who = f"Signed in as {html.escape(user)}." if user else "Not signed in."
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Demo app</title></head>"
        f"<body><h1>Demo app</h1><p>{who} "
        "<a href=/login>Sign in</a> · <a href=/logout>Sign out</a></p>"
        f"<h2>Headers this app received</h2><table>{rows}</table></body></html>"
    )


async def login(request: Request) -> Response:
    response = RedirectResponse(str(request.url_for("home")), status_code=303)
    response.set_cookie("demo_session", "demo-user", httponly=True, samesite="lax")
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie("demo_session")
    return response


async def headers(request: Request) -> Response:
    return JSONResponse({k: v for k, v in request.headers.items()})


def create_upstream() -> Starlette:
    return Starlette(
        routes=[
            Route("/", home, name="home"),
            Route("/login", login),
            Route("/logout", logout),
            Route("/headers", headers),
        ]
    )
