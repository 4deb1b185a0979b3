"""The reserved pages (proxy/consent/pages.py), end to end over the same real servers as
test_consent.py: the connection page, its forms and their checks, and unknown paths."""

from __future__ import annotations

import pytest

from . import test_consent as shared
from .test_consent import ALICE, PREFIX, Env, Person, submit_form, title, user_id

# One running environment for this module, from the fixtures of test_consent.py.
env, fresh, person = shared.env, shared.fresh, shared.person

# What every reserved page answers with: never framed, sniffed, scripted, referred or cached;
# forms post here, and their redirect may lead to the configured Microsoft authority only.
PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "referrer-policy": "no-referrer",
}


def page_headers(env: Env) -> dict[str, str]:
    csp = f"{PAGE_HEADERS['content-security-policy']} {env.standin.origin}"
    return {**PAGE_HEADERS, "content-security-policy": csp}


# --- the manual page -------------------------------------------------------------------------


def test_manual_connect_and_disconnect(person: Person) -> None:
    env = person.env
    assert title(person.get(PREFIX)) == "Sign in to the app first"
    person.sign_in(user_id(ALICE, "mode-never"))
    page = person.get(PREFIX)
    assert "Not connected" in page.text and "Connect Office 365" in page.text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert {k: page.headers[k] for k in PAGE_HEADERS} == page_headers(env)
    refused = person.post(f"{PREFIX}connect", data={"csrf": "forged"})
    assert refused.status_code == 400
    assert {k: refused.headers[k] for k in PAGE_HEADERS} == page_headers(env)
    not_ascii = person.post(
        f"{PREFIX}connect",
        content=b"csrf=%C3%A9",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert not_ascii.status_code == 400
    go = submit_form(person, page, "connect")
    assert person.at_microsoft(go)
    assert go.status_code == 303 and go.headers["cache-control"] == "no-store"
    assert person.get(person.answer(go)).status_code == 303
    page = person.get(PREFIX)
    assert "Connected" in page.text and "Disconnect" in page.text
    assert token_records(env) == 1
    done = submit_form(person, page, "disconnect")
    assert done.status_code == 303  # POST-redirect-GET: a reload does not post again
    assert done.headers["location"] == f"{PREFIX}?done=disconnected&next=%2F"
    done = person.get(done.headers["location"])
    assert done.status_code == 200 and "Disconnected." in done.text
    record = env.integration(ALICE)
    assert record is not None and record["status"] == "none"
    assert token_records(env) == 0


def token_records(env: Env) -> int:
    conn = env.db()
    try:
        count: int = conn.execute("SELECT count(*) FROM kv WHERE namespace = 'tokens'").fetchone()[
            0
        ]
        return count
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["nope", "callback/extra", "%2e%2e/etc/passwd", "CALLBACK"])
def test_unknown_reserved_paths_are_404(person: Person, path: str) -> None:
    assert person.get(PREFIX + path).status_code == 404
    # Nor is a known path asked with another method, HEAD included, or with a trailing slash:
    # the same 404 page, no 405 and no redirect.
    assert person.get(PREFIX + "connect").status_code == 404
    assert person.http.head(person.env.proxy.url + PREFIX).status_code == 404
    assert person.post(PREFIX + "connect/", data={"csrf": "x"}).status_code == 404
    assert person.get(PREFIX + "callback/").status_code == 404


def test_manual_page_next_cannot_leave_the_site(person: Person) -> None:
    person.sign_in(user_id(ALICE, "mode-never"))
    page = person.get(PREFIX, params={"next": "//evil.example"})
    assert "evil.example" not in page.text
    # The prefix without its slash is the same page.
    same = person.get(PREFIX.rstrip("/"), params={"next": "//evil.example"})
    assert same.status_code == 200 and "evil.example" not in same.text


def test_declined_then_connect_by_hand(person: Person) -> None:
    first = person.sign_in(user_id(ALICE, "mode-first_sign_in"))
    person.get(person.answer(first, "cancel"))
    page = person.get(PREFIX)
    assert "you declined" in page.text
    go = submit_form(person, page, "connect")
    assert person.get(person.answer(go)).status_code == 303
    assert person.env.integration(ALICE)["status"] == "connected"  # type: ignore[index]
