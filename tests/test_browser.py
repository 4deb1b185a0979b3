"""A person at a browser: Debian's Chromium, driven by Playwright, clicks through the demo —
sign in at the demo IdP, Microsoft's consent page, back in the app with meetings listed;
the decline path; the admin-approval page. A screenshot of each page is saved under
test-output/screenshots/. The `demo` and `chromium` fixtures are in tests/fixtures/."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fixtures.chromium import EXTRA
from .fixtures.demo import ROOT

SHOTS = ROOT / "test-output" / "screenshots"

pytest.importorskip("playwright.sync_api", reason=EXTRA)


def page_for(chromium: object) -> object:
    context = chromium.new_context()  # type: ignore[attr-defined]
    return context.new_page()


def shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def sign_in(page: object, base: str, user: str) -> None:
    page.goto(base + "/")  # type: ignore[attr-defined]
    shot(page, "01-app-signed-out")
    page.click("text=Sign in with SSO")  # type: ignore[attr-defined]
    shot(page, f"02-idp-{user}")
    page.click(f"button[value='{user}']")  # type: ignore[attr-defined]
    page.wait_for_load_state("networkidle")  # type: ignore[attr-defined]


def test_alice_accepts_and_sees_her_calendar(chromium: object, demo: tuple[str, Path]) -> None:
    base, _ = demo
    page = page_for(chromium)
    sign_in(page, base, "alice")
    assert "Permissions requested" in page.content() or "Accept" in page.content()  # type: ignore[attr-defined]
    shot(page, "03-microsoft-consent")
    page.click("button[value='accept']")  # type: ignore[attr-defined]
    page.wait_for_selector("#events li")  # type: ignore[attr-defined]
    shot(page, "04-app-with-meetings")
    assert page.inner_text("#integration") == "connected"  # type: ignore[attr-defined]
    assert page.locator("#contacts li").count() > 0  # type: ignore[attr-defined]


def test_carol_declines_and_can_connect_later(chromium: object, demo: tuple[str, Path]) -> None:
    base, _ = demo
    page = page_for(chromium)
    sign_in(page, base, "carol")
    page.click("button[value='cancel']")  # type: ignore[attr-defined]
    page.wait_for_selector("h1")  # type: ignore[attr-defined]
    shot(page, "05-declined")
    assert page.inner_text("h1") == "Office 365 not connected"  # type: ignore[attr-defined]
    page.click("a:has-text('Connect later')")  # type: ignore[attr-defined]
    page.wait_for_url("**/.consent-proxy/")  # type: ignore[attr-defined]
    shot(page, "06-connection-page")
    assert "Connect Office 365" in page.content()  # type: ignore[attr-defined]


def test_bob_sees_the_admin_approval_page(chromium: object, demo: tuple[str, Path]) -> None:
    base, _ = demo
    page = page_for(chromium)
    sign_in(page, base, "bob")
    shot(page, "07-microsoft-need-admin-approval")
    page.click("button[value='back']")  # type: ignore[attr-defined]
    page.wait_for_selector("h1")  # type: ignore[attr-defined]
    shot(page, "08-admin-approval")
    assert page.inner_text("h1") == "An administrator needs to approve this app"  # type: ignore[attr-defined]
    assert "on behalf of the company" in page.content()  # type: ignore[attr-defined]


def test_the_admins_overview_on_the_ops_listener(chromium: object, demo: tuple[str, Path]) -> None:
    """After the journeys above: Alice connected, Carol declined, Bob's tenant waits for an
    admin. The page renders under its strict CSP (no violation reported) with its chart."""
    _, folder = demo
    page = page_for(chromium)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))  # type: ignore[attr-defined]
    page.goto((folder / "ops-url").read_text() + "/overview")  # type: ignore[attr-defined]
    page.wait_for_selector("#chart")  # type: ignore[attr-defined]
    shot(page, "09-ops-overview")
    assert page.inner_text("#count-connected b") == "1"  # type: ignore[attr-defined]
    assert page.inner_text("#count-declined b") == "1"  # type: ignore[attr-defined]
    assert page.inner_text("#count-admin_approval_required b") == "1"  # type: ignore[attr-defined]
    assert "waits for an admin since" in page.content()  # type: ignore[attr-defined]
    assert "AADSTS65004" in page.content()  # type: ignore[attr-defined]
    assert page.locator("#chart rect").count() == 48  # type: ignore[attr-defined]
    # The style block is allowed by its hash: the cards are laid out as flex boxes.
    display = page.eval_on_selector(".cards", "e => getComputedStyle(e).display")  # type: ignore[attr-defined]
    assert display == "flex"
    assert not [m for m in console if "Content Security Policy" in m], console
