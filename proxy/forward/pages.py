"""The small pages the proxy itself answers with: HTML for browsers, JSON for API clients.

Pages carry a title, one plain explanation and a machine code; never a traceback, never a
secret. They are built from fixed text and escaped values only.
"""

from __future__ import annotations

import html
import json
from collections.abc import MutableMapping
from typing import Any

from proxy.asgi import Send
from proxy.errors import ConsentProxyError

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #f6f7f9; }}
main {{ max-width: 36rem; margin: 12vh auto; padding: 2rem; background: #fff;
        border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }}
h1 {{ font-size: 1.4rem; margin-top: 0; }}
.code {{ color: #5a5a5a; font-size: .85rem; }}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p>{description}</p>
<p class="code">Error code: {code}</p>
</main>
</body>
</html>
"""


def wants_json(scope: MutableMapping[str, Any]) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            accept = value.lower()
            return b"application/json" in accept and b"text/html" not in accept
    return False


def render_error(scope: MutableMapping[str, Any], error: ConsentProxyError) -> tuple[bytes, bytes]:
    """The body and content type for an error, in the form the client asked for."""
    if wants_json(scope):
        body = {"error": error.code, "title": error.title, "description": error.description}
        return json.dumps(body).encode(), b"application/json"
    page = _PAGE.format(
        title=html.escape(error.title),
        description=html.escape(error.description),
        code=html.escape(error.code),
    )
    return page.encode(), b"text/html; charset=utf-8"


async def send_error(scope: MutableMapping[str, Any], send: Send, error: ConsentProxyError) -> None:
    body, content_type = render_error(scope, error)
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send(
        {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
    )
