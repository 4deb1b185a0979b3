"""The OIDC code flow, end to end in Chromium, with nothing of ours on either side of it:
an OpenID provider built on authlib's server grants (tests/thirdparty/oidc_provider.py)
and an app whose SSO is authlib's Starlette client (tests/thirdparty/oidc_app.py), each
its own process; the proxy (`consent-proxy run`) in front of the app, the Microsoft
stand-in for consent. The browser never shows the proxy an id_token: the proxy learns who
signed in by its own silent request to the same provider."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.demo.microsoft import MicrosoftStandIn, demo_app

from .fixtures.chromium import EXTRA
from .fixtures.demo import ROOT
from .scripted_idp import code_flow_config, silent
from .servers import ProxyProcess, free_port, running, wait_for_port
from .stored import stored
from .tls import https_server, https_url, server_cert

pytest.importorskip("playwright.sync_api", reason=EXTRA)

APP_SECRET = "the-app-client-secret-0123456789"
PROXY_SECRET = "the-proxy-client-secret-012345678"
CALLBACK_PATH = "/.consent-proxy-sso/callback"


class Process:
    """A test server in its own Python process, its output kept in a log file."""

    def __init__(self, module: str, args: list[str], port: int, log: Path) -> None:
        self.command = [sys.executable, "-m", module, *args]
        self.port, self.log = port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class CodeFlow:
    proxy: ProxyProcess
    issuer: str
    ops: str

    def metric(self, outcome: str) -> float:
        text = httpx.get(f"{self.ops}/metrics").text
        found = re.search(
            rf'^consent_proxy_silent_checks_total{{outcome="{outcome}"}} (\S+)$', text, re.M
        )
        return float(found[1]) if found else 0.0

    def sessions(self) -> list[dict[str, Any]]:
        return stored(self.proxy.config_path.parent / "store.sqlite3", "session")


@contextlib.contextmanager
def code_flow(work: Path) -> Iterator[CodeFlow]:
    op_port, app_port, ops_port = free_port(), free_port(), free_port()
    proxy = ProxyProcess({}, work)
    certfile, keyfile, ca_file = server_cert(work)
    issuer = f"https://127.0.0.1:{op_port}"
    clients = [
        {"client_id": "app", "client_secret": APP_SECRET,
         "redirect_uris": [f"{proxy.url}/auth/callback"]},
        {"client_id": "consent-proxy", "client_secret": PROXY_SECRET,
         "redirect_uris": [f"{proxy.url}{CALLBACK_PATH}"]},
    ]  # fmt: skip
    provider = Process(
        "tests.thirdparty.oidc_provider",
        [issuer, str(certfile), str(keyfile), json.dumps(clients)],
        op_port,
        work / "provider.log",
    )
    app = Process(
        "tests.thirdparty.oidc_app",
        [str(app_port), issuer, str(ca_file), "app", APP_SECRET, proxy.url],
        app_port,
        work / "app.log",
    )
    standin_port = free_port()
    standin = MicrosoftStandIn(
        f"https://127.0.0.1:{standin_port}",
        apps=[demo_app(f"{proxy.url}/.consent-proxy/callback")],
    )
    standin_server, standin_ca = https_server(standin.app(), work / "standin", standin_port)
    endpoint = {
        "issuer": issuer,
        "ca_file": str(ca_file),
        "silent": silent("consent-proxy", PROXY_SECRET),
    }
    config = code_flow_config(
        work, f"http://127.0.0.1:{app_port}", proxy.url, endpoint,
        consent=(https_url(standin_server), standin_ca),
    )  # fmt: skip
    config["ops"] = {"port": ops_port}
    proxy.config_path.write_text(json.dumps(config))
    with running(provider), running(app), running(standin_server), running(proxy):
        yield CodeFlow(proxy, issuer, f"http://127.0.0.1:{ops_port}")


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodeFlow]:
    work = tmp_path_factory.mktemp("codeflow")
    (work / "standin").mkdir()
    with code_flow(work) as env:
        yield env


def told(page: Any) -> dict[str, str | None]:
    """The proxy headers the app saw, as its /home page shows them."""
    return dict(json.loads(page.inner_text("#proxy")))


def test_sign_in_is_verified_silently_then_consent_then_headers(
    chromium: Any, flow: CodeFlow
) -> None:
    context = chromium.new_context()
    page = context.new_page()
    hops: list[str] = []
    page.on("request", lambda r: hops.append(r.url) if r.is_navigation_request() else None)
    verified = flow.metric("verified")
    page.goto(f"{flow.proxy.url}/login")
    page.click("#alice-yes")  # the provider's sign-in page: the only page shown
    page.wait_for_url("**/authorize*")  # Microsoft's consent page (the stand-in)
    assert [h for h in hops if CALLBACK_PATH in h], "no silent hop through the proxy"
    assert any("prompt=none" in h and h.startswith(flow.issuer) for h in hops)
    page.click("button[value='accept']")
    page.wait_for_selector("#proxy")
    assert page.inner_text("h1") == "Hello alice@contoso.example"
    headers = told(page)
    assert headers["x-consent-proxy-user"] == "alice@contoso.example"
    assert headers["x-consent-proxy-integration"] == "connected"
    assert headers["x-consent-proxy-access-token"]
    assert page.url == f"{flow.proxy.url}/home?from=sign-in"  # the app's own target
    assert flow.metric("verified") == verified + 1
    context.close()


def test_idp_session_gone_the_user_still_reaches_the_app(chromium: Any, flow: CodeFlow) -> None:
    """The provider signs bob in for the app but keeps no session, so the proxy's silent
    request finds none: login_required; bob is in the app all the same, no headers,
    counted."""
    context = chromium.new_context()
    page = context.new_page()
    refused = flow.metric("login_required")

    page.goto(f"{flow.proxy.url}/login")
    page.click("#bob-no")  # signed in "this once": the provider keeps no session
    page.wait_for_selector("#proxy")
    assert page.inner_text("h1") == "Hello bob@fabrikam.example"
    assert page.url == f"{flow.proxy.url}/home?from=sign-in"
    assert set(told(page).values()) == {None}  # no proxy header at all
    assert flow.metric("login_required") == refused + 1
    assert "the IdP answered 'login_required'" in flow.proxy.logs()
    context.close()
