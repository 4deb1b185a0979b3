"""Where to send the user afterwards: a place on this site, never another origin.

The app's own redirect after a sign-in, a form's `next` field and the connection page's
`next` query all pass through `safe_next` before they reach a `Location` header or a link.
"""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_LENGTH = 2048


def safe_next(value: str | None, public_origin: str) -> str:
    """Where to send the user afterwards: a path on this site, or "/".

    Refuses everything that browsers may read as another origin: `//evil`, `/\\evil`,
    `%09//evil`, `https:evil`, `javascript:`, control characters and white space.
    """
    if not value or len(value) > MAX_LENGTH:
        return "/"
    if "\\" in value or any(ord(c) <= 32 or ord(c) == 127 for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        if f"{parts.scheme}://{parts.netloc}".lower() != public_origin.lower():
            return "/"
    path = parts.path
    if not path.startswith("/") or path.startswith("//"):
        return "/"
    return (
        path
        + (f"?{parts.query}" if parts.query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


__all__ = ["safe_next"]
