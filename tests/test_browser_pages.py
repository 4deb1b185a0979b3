"""Every button and every link of every reserved page, clicked in Chromium, for each demo
user: where the browser lands after each click. Chromium enforces the pages' Content
Security Policy (Playwright is not told to bypass it), so a form whose redirect the policy
blocks stays on its page, and the console reports the violation: both fail here.

Each page is reached afresh before each click (a new browser context, a new sign-in), in
the state the user's journey leaves it: the tests of this module run in order against one
demo process."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .fixtures.chromium import EXTRA

pytest.importorskip("playwright.sync_api", reason=EXTRA)

PREFIX = "/.consent-proxy/"
MICROSOFT = re.compile(r"^https://127\.0\.0\.1:\d+/")
ADMIN_CONSENT_BUTTON = "I'm the admin and I'm consenting on behalf of the company"
ADMIN_LINK = "<the admin link>"
ADMIN_NEEDED = "An administrator needs to approve this app"

Page = object  # a playwright Page (the tests stay untyped against playwright)
Reach = Callable[[Page], None]


class Browser:
    """One Chromium context, its cookies cleared for each fresh start (as a new browser
    would be), its console watched for CSP violations."""

    def __init__(self, chromium: object, base: str) -> None:
        self.base = base
        self.violations: list[str] = []
        self.context = chromium.new_context()  # type: ignore[attr-defined]
        self.tab = self.context.new_page()
        self.tab.on("console", self._console)

    def page(self) -> Page:
        self.context.clear_cookies()
        return self.tab  # type: ignore[no-any-return]

    def _console(self, message: object) -> None:
        text = message.text  # type: ignore[attr-defined]
        if "Content Security Policy" in text or "violates" in text:
            self.violations.append(text)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browser(chromium: object, demo: tuple[str, Path]) -> Iterator[Browser]:
    person = Browser(chromium, demo[0])
    yield person
    person.close()
    assert person.violations == []


# --- moving around ----------------------------------------------------------------------------


def sign_in(page: Page, base: str, user: str) -> None:
    page.goto(base + "/")  # type: ignore[attr-defined]
    page.click("text=Sign in with SSO")  # type: ignore[attr-defined]
    page.click(f"button[value='{user}']")  # type: ignore[attr-defined]
    page.wait_for_load_state("load")  # type: ignore[attr-defined]


def at_microsoft(page: Page) -> bool:
    return bool(MICROSOFT.match(page.url))  # type: ignore[attr-defined]


def press(page: Page, selector: str) -> None:
    page.click(selector)  # type: ignore[attr-defined]
    page.wait_for_load_state("load")  # type: ignore[attr-defined]


def answer_microsoft(page: Page, decision: str, account: str | None = None) -> None:
    """On Microsoft's pages: pick `account` if asked who, then press `decision`."""
    if page.locator("ul.accounts").count():  # type: ignore[attr-defined]
        press(page, f"button[value='{account}']")
    press(page, f"button[value='{decision}']")


def from_sign_in(base: str, user: str, decision: str) -> Reach:
    """Sign in; answer Microsoft's page with `decision` (when the sign-in leads there, else
    start from the connection page's Connect button): ends on the callback's page."""

    def reach(page: Page) -> None:
        sign_in(page, base, user)
        if not at_microsoft(page):
            page.goto(base + PREFIX)  # type: ignore[attr-defined]
            press(page, "button:has-text('Connect Office 365')")
        answer_microsoft(page, decision)

    return reach


def signed_in_at(base: str, user: str, path: str) -> Reach:
    def reach(page: Page) -> None:
        sign_in(page, base, user)  # may leave a consent page unanswered: that is no answer
        page.goto(base + path)  # type: ignore[attr-defined]

    return reach


def signed_out_at(base: str, path: str) -> Reach:
    def reach(page: Page) -> None:
        page.goto(base + path)  # type: ignore[attr-defined]

    return reach


# --- where a click lands ----------------------------------------------------------------------


def controls(page: Page) -> list[str]:
    """The page's buttons and links, by their text (the admin link by a name)."""
    names = []
    for element in page.locator("main a, main button").all():  # type: ignore[attr-defined]
        if element.get_attribute("id") == "admin-link":
            names.append(ADMIN_LINK)
        else:
            names.append(" ".join(element.inner_text().split()))
    return names


def landing(page: Page, base: str) -> str:
    """Where the browser is: "microsoft authorize", "microsoft admin consent", "connection
    page", "admin link page", or "app"."""
    url = page.url  # type: ignore[attr-defined]
    if at_microsoft(page):
        path = urlsplit(url).path
        return (
            "microsoft admin consent" if path.endswith("/adminconsent") else "microsoft authorize"
        )
    assert url.startswith(base), url
    path = urlsplit(url).path
    if path == PREFIX:
        return "connection page"
    if path == PREFIX + "admin-link":
        return "admin link page"
    assert not path.startswith(PREFIX), url
    return "app"


def click_every_control(browser: Browser, reach: Reach, expected: dict[str, str]) -> str:
    """Reach the page once per control, click that control, check where it lands; the
    page's title."""
    page = browser.page()
    reach(page)
    title = page.inner_text("h1")  # type: ignore[attr-defined]
    assert sorted(controls(page)) == sorted(expected), title
    for index, name in enumerate(controls(page)):
        page = browser.page()
        reach(page)
        element = page.locator("main a, main button").nth(index)  # type: ignore[attr-defined]
        element.click()
        page.wait_for_load_state("load")  # type: ignore[attr-defined]
        assert landing(page, browser.base) == expected[name], f"{title}: {name}"
    assert browser.violations == [], title
    return str(title)


# --- the pages --------------------------------------------------------------------------------


def test_pages_without_a_session(browser: Browser) -> None:
    base, back = browser.base, {"Continue to the app": "app"}
    assert click_every_control(browser, signed_out_at(base, PREFIX), back) == (
        "Sign in to the app first"
    )
    assert click_every_control(browser, signed_out_at(base, PREFIX + "nope"), back) == (
        "Page not found"
    )
    garbage = signed_out_at(base, PREFIX + "admin-link?t=forged.link")
    assert click_every_control(browser, garbage, back) == "This approval link is not valid"
    notice = signed_out_at(base, PREFIX + "admin-approval?next=/")
    assert click_every_control(browser, notice, back) == ADMIN_NEEDED
    stale = signed_out_at(base, PREFIX + "callback?state=forged&code=x")
    later = {**back, "Connect later": "connection page"}
    assert click_every_control(browser, stale, later) == "This link has expired or was already used"


def test_alice_declined_then_connected(browser: Browser) -> None:
    base = browser.base
    declined = {"Continue to the app": "app", "Connect later": "connection page"}
    reach = from_sign_in(base, "alice", "cancel")
    assert click_every_control(browser, reach, declined) == "Office 365 not connected"
    manage = {"Connect Office 365": "microsoft authorize", "Back to the app": "app"}
    click_every_control(browser, signed_in_at(base, "alice", PREFIX), manage)

    page = browser.page()
    signed_in_at(base, "alice", PREFIX)(page)
    assert "read your calendar" in page.inner_text("#permissions")  # type: ignore[attr-defined]
    press(page, "button:has-text('Connect Office 365')")
    answer_microsoft(page, "accept")
    assert page.inner_text("#integration") == "connected"  # type: ignore[attr-defined]

    connected = {"Disconnect": "connection page", "Back to the app": "app"}
    click_every_control(browser, signed_in_at(base, "alice", PREFIX), connected)


def test_bob_needs_an_administrator(browser: Browser) -> None:
    base = browser.base
    approval = {
        "Continue to the app": "app",
        ADMIN_LINK: "admin link page",
        ADMIN_CONSENT_BUTTON: "microsoft admin consent",
    }
    reach = from_sign_in(base, "bob", "back")
    assert click_every_control(browser, reach, approval) == ADMIN_NEEDED
    notice = signed_in_at(base, "bob", PREFIX + "admin-approval?next=/")
    click_every_control(browser, notice, approval)

    def refused(page: Page) -> None:  # bob presses the admin's button himself
        notice(page)
        press(page, f'button:has-text("{ADMIN_CONSENT_BUTTON}")')
        answer_microsoft(page, "back", account="bob@fabrikam.example")

    refusal = {"Continue to the app": "app", "Connect later": "connection page"}
    title = click_every_control(browser, refused, refusal)
    assert title == "Your organization's approval did not go through"
    manage = {
        "Connect Office 365": "microsoft authorize",
        ADMIN_LINK: "admin link page",
        ADMIN_CONSENT_BUTTON: "microsoft admin consent",
        "Back to the app": "app",
    }
    click_every_control(browser, signed_in_at(base, "bob", PREFIX), manage)

    page = browser.page()
    signed_in_at(base, "bob", PREFIX)(page)
    link = page.get_attribute("#admin-link", "href")  # type: ignore[attr-defined]
    admin_page = {
        "Approve for the organization at Microsoft": "microsoft admin consent",
        "Continue to the app": "app",
    }
    title = click_every_control(browser, lambda page: page.goto(link), admin_page)  # type: ignore[attr-defined]
    assert title == "Approve this app for your organization"
    shown = browser.page()
    shown.goto(link)  # type: ignore[attr-defined]
    assert "read their calendar" in shown.inner_text("main")  # type: ignore[attr-defined]


def test_carol_declines_her_mailbox_then_connects(browser: Browser) -> None:
    base = browser.base
    declined = {"Continue to the app": "app", "Connect later": "connection page"}
    click_every_control(browser, from_sign_in(base, "carol", "cancel"), declined)
    page = browser.page()
    signed_in_at(base, "carol", PREFIX)(page)
    assert "Exchange Web Services" in page.inner_text("#permissions")  # type: ignore[attr-defined]
    manage = {"Connect Office 365": "microsoft authorize", "Back to the app": "app"}
    click_every_control(browser, signed_in_at(base, "carol", PREFIX), manage)


def test_bobs_administrator_approves_through_the_link(
    browser: Browser, demo: tuple[str, Path]
) -> None:
    """The demo table's promise: bob sends the link, the administrator approves in their
    own browser, and bob's next sign-in connects him without a consent screen."""
    base = browser.base
    page = browser.page()
    signed_in_at(base, "bob", PREFIX)(page)
    link = page.get_attribute("#admin-link", "href")  # type: ignore[attr-defined]

    admin = browser.page()  # cookies cleared: the administrator's own browser
    admin.goto(link)  # type: ignore[attr-defined]
    press(admin, "text=Approve for the organization at Microsoft")
    answer_microsoft(admin, "accept", account="admin@fabrikam.example")
    if at_microsoft(admin):  # who approved: Microsoft asks which account
        press(admin, "button[value='admin@fabrikam.example']")
    assert admin.inner_text("h1") == "Approved for your organization"  # type: ignore[attr-defined]
    assert controls(admin) == ["Continue to the app"]
    assert "given by admin@fabrikam.example" in (demo[1] / "demo.log").read_text()
    press(admin, "text=Continue to the app")
    assert landing(admin, base) == "app"

    bob = browser.page()
    sign_in(bob, base, "bob")
    assert bob.inner_text("#integration") == "connected"  # type: ignore[attr-defined]
    assert bob.locator("#events li").count() > 0  # type: ignore[attr-defined]
