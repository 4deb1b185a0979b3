"""The whole journey in Chromium against SAML software we did not write: a pysaml2 IdP
(which, like most IdPs, sends no Entra tenant id) and an app whose sign-in is pysaml2's
service provider, behind the proxy; Office 365 is the Microsoft stand-in. Sign-in, the
policy, Microsoft's consent, the token header, and the app showing the user's meetings:

- carol (every_sign_in): declines, is asked again at her next sign-in, accepts;
- alice (first_sign_in): leaves Microsoft's page unanswered and is asked again, declines
  and is not asked again, then connects from the connection page;
- bob (his organization lets only administrators approve apps): Microsoft says an admin
  must approve; he sends the admin link; the administrator approves in their own browser;
  bob's next sign-in connects him without any consent screen.

The tests run in this order against one set of servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from proxy.demo.microsoft import MicrosoftStandIn, demo_app

from .fixtures.chromium import EXTRA
from .fixtures.standin import microsoft_sections
from .servers import ProxyProcess, ThreadServer, free_port, running
from .stored import session_settings
from .thirdparty.saml_idp import DISPLAY_NAME, MAIL, PySamlIdp
from .thirdparty.saml_sp import COOKIE, ENTITY, PySamlSp
from .tls import https_server

pytest.importorskip("playwright.sync_api", reason=EXTRA)

PREFIX = "/.consent-proxy/"
POLICY = """
version: 1
defaults:
  prompt: every_sign_in
  authorization: {type: graph, scopes: [Calendars.Read, Contacts.Read]}
  user_consent: allowed
rules:
  - name: contoso-asks-once
    match: {email_domain: [contoso.example]}
    prompt: first_sign_in
"""
Page = object  # a playwright Page


@dataclass
class World:
    proxy: ProxyProcess
    standin: MicrosoftStandIn

    @property
    def url(self) -> str:
        return self.proxy.url


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("thirdparty-saml")
    proxy = ProxyProcess({}, work)
    standin_port, idp_port = free_port(), free_port()
    standin = MicrosoftStandIn(
        f"https://127.0.0.1:{standin_port}", apps=[demo_app(f"{proxy.url}{PREFIX}callback")]
    )
    standin_server, ca_file = https_server(standin.app(), work, port=standin_port)
    idp = PySamlIdp(f"http://127.0.0.1:{idp_port}", work)
    sp = PySamlSp(proxy.url, work, standin.graph_url, ca_file)
    idp_metadata, sp_metadata = idp.metadata(), sp.metadata()
    idp.trust(sp_metadata)
    sp.trust(idp_metadata)
    (work / "policy.yaml").write_text(POLICY)
    with (
        running(ThreadServer(sp.app())) as upstream,
        running(ThreadServer(idp.app(), port=idp_port)),
        running(standin_server),
    ):
        config = {
            "upstream": {"url": upstream.url},
            "public_url": proxy.url,
            "session": session_settings(COOKIE),
            "store": {"path": str(work / "store.sqlite3")},
            "sso": {
                "endpoints": [
                    {
                        "type": "saml",
                        "path": "/saml/acs",
                        "idp_certificates": [str(idp.cert_file)],
                        "audience": ENTITY,
                        "email_attribute": MAIL,
                        "name_attribute": DISPLAY_NAME,
                    }
                ]
            },
            "policy": str(work / "policy.yaml"),
            **microsoft_sections(standin_server, ca_file),
        }
        proxy.config_path.write_text(json.dumps(config))
        with running(proxy):
            yield World(proxy, standin)


class Browsers:
    """Fresh Chromium contexts, each a person's own browser; CSP is enforced, and what
    the console says about it is kept."""

    def __init__(self, chromium: object) -> None:
        self.chromium = chromium
        self.contexts: list[object] = []
        self.violations: list[str] = []

    def new(self) -> Page:
        context = self.chromium.new_context()  # type: ignore[attr-defined]
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._console)
        return page  # type: ignore[no-any-return]

    def _console(self, message: object) -> None:
        if "Content Security Policy" in message.text:  # type: ignore[attr-defined]
            self.violations.append(message.text)  # type: ignore[attr-defined]

    def close(self) -> None:
        for context in self.contexts:
            context.close()  # type: ignore[attr-defined]


@pytest.fixture
def browsers(chromium: object) -> Iterator[Browsers]:
    people = Browsers(chromium)
    yield people
    people.close()
    assert people.violations == []


def settle(page: Page) -> None:
    page.wait_for_load_state("load")  # type: ignore[attr-defined]


def sign_in(page: Page, world: World, user: str) -> None:
    """At the app: Sign in with SSO, pick `user` at the pysaml2 IdP; the IdP's page posts
    the signed Response to the app's ACS (through the proxy)."""
    page.goto(world.url + "/")  # type: ignore[attr-defined]
    page.click("#sign-in")  # type: ignore[attr-defined]
    page.click(f"button[value='{user}']")  # type: ignore[attr-defined]
    page.wait_for_url(  # type: ignore[attr-defined]
        lambda url: "/sso" not in url and "/saml/acs" not in url
    )
    settle(page)


def at_microsoft(page: Page, world: World) -> bool:
    return str(page.url).startswith(world.standin.base)  # type: ignore[attr-defined]


def in_app(page: Page, world: World) -> bool:
    url = str(page.url)  # type: ignore[attr-defined]
    return url.rstrip("/") == world.url and page.locator("#user").count() == 1  # type: ignore[attr-defined]


def on_microsoft(page: Page, decision: str, account: str | None = None) -> None:
    if account is not None and page.locator("ul.accounts").count():  # type: ignore[attr-defined]
        page.click(f"button[value='{account}']")  # type: ignore[attr-defined]
        settle(page)
    page.click(f"button[value='{decision}']")  # type: ignore[attr-defined]
    settle(page)


def heading(page: Page) -> str:
    return str(page.inner_text("h1"))  # type: ignore[attr-defined]


def shows_meetings(page: Page) -> bool:
    return (
        page.inner_text("#integration") == "connected"  # type: ignore[attr-defined]
        and page.locator("#events li").count() > 0  # type: ignore[attr-defined]
        and "Graph answered" not in page.inner_text("#events")  # type: ignore[attr-defined]
    )


# --- the journeys -----------------------------------------------------------------------------


def test_every_sign_in_asks_again_after_a_decline_then_accept(
    browsers: Browsers, world: World
) -> None:
    page = browsers.new()
    sign_in(page, world, "carol")
    assert at_microsoft(page, world)
    on_microsoft(page, "cancel")
    assert heading(page) == "Office 365 not connected"
    page.click("text=Continue to the app")  # type: ignore[attr-defined]
    settle(page)
    assert in_app(page, world) and page.inner_text("#integration") == "declined"  # type: ignore[attr-defined]

    page = browsers.new()
    sign_in(page, world, "carol")
    assert at_microsoft(page, world)  # every_sign_in: asked again
    on_microsoft(page, "accept")
    assert in_app(page, world) and shows_meetings(page)


def test_first_sign_in_asks_once_an_answer_came(browsers: Browsers, world: World) -> None:
    page = browsers.new()
    sign_in(page, world, "alice")
    assert at_microsoft(page, world)  # ...and she closes the tab: no answer

    page = browsers.new()
    sign_in(page, world, "alice")
    assert at_microsoft(page, world)  # asked again: leaving the page was no answer
    on_microsoft(page, "cancel")
    assert heading(page) == "Office 365 not connected"

    page = browsers.new()
    sign_in(page, world, "alice")
    assert in_app(page, world)  # first_sign_in: she answered, she is not asked again
    assert page.inner_text("#integration") == "declined"  # type: ignore[attr-defined]

    page.goto(world.url + PREFIX)  # type: ignore[attr-defined]
    assert "read your calendar" in page.inner_text("#permissions")  # type: ignore[attr-defined]
    page.click("button:has-text('Connect Office 365')")  # type: ignore[attr-defined]
    settle(page)
    assert at_microsoft(page, world)
    on_microsoft(page, "accept")
    assert in_app(page, world) and shows_meetings(page)


def test_admin_approval_through_the_admin_link(browsers: Browsers, world: World) -> None:
    bob = browsers.new()
    sign_in(bob, world, "bob")
    assert at_microsoft(bob, world)
    assert heading(bob) == "Need admin approval"
    on_microsoft(bob, "back")
    assert heading(bob) == "An administrator needs to approve this app"
    link = bob.get_attribute("#admin-link", "href")  # type: ignore[attr-defined]

    admin = browsers.new()  # the administrator's own browser: no session here
    admin.goto(link)  # type: ignore[attr-defined]
    assert heading(admin) == "Approve this app for your organization"
    admin.click("text=Approve for the organization at Microsoft")  # type: ignore[attr-defined]
    settle(admin)
    assert at_microsoft(admin, world)
    on_microsoft(admin, "accept", account="admin@fabrikam.example")
    if at_microsoft(admin, world):  # who approved: Microsoft asks which account
        admin.click("button[value='admin@fabrikam.example']")  # type: ignore[attr-defined]
        settle(admin)
    assert heading(admin) == "Approved for your organization"
    logs = world.proxy.logs()
    assert "given by admin@fabrikam.example" in logs

    bob = browsers.new()
    sign_in(bob, world, "bob")
    assert in_app(bob, world) and shows_meetings(bob)  # no consent screen on the way
