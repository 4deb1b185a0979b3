"""`consent-proxy demo`: a newcomer's three journeys, clicked through over HTTP against the
real demo process (demo app, demo IdP, Microsoft stand-in over HTTPS, proxy)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import httpx

from .fixtures.pages import form
from .servers import free_port, wait_for_port


def follow(http: httpx.Client, response: httpx.Response) -> httpx.Response:
    while response.status_code in (302, 303):
        response = http.get(urljoin(str(response.url), response.headers["location"]))
    return response


def sign_in(http: httpx.Client, base: str, email: str) -> httpx.Response:
    """From the app's start page to wherever the sign-in leads (the app, or Microsoft)."""
    idp_page = follow(http, http.get(f"{base}/login"))
    assert "Choose" in idp_page.text or email in idp_page.text
    action, data = form(idp_page, user=email.split("@")[0])
    autopost = http.post(action, data=data)
    action, data = form(autopost)
    return http.post(action, data=data)


def microsoft(http: httpx.Client, response: httpx.Response, decision: str) -> httpx.Response:
    page = http.get(response.headers["location"])
    while page.status_code == 200:
        action, data = form(page, decision=decision)
        page = http.post(action, data=data)
    return follow(http, page)


def browser(folder: Path) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=folder / "ca.pem"), timeout=20)


def test_alice_consents_and_sees_meetings_and_contacts(demo: tuple[str, Path]) -> None:
    base, folder = demo
    with browser(folder) as http:
        assert "Sign in with SSO" in http.get(base + "/").text
        signed_in = sign_in(http, base, "alice@contoso.example")
        assert (
            signed_in.status_code == 303
            and "oauth2/v2.0/authorize" in signed_in.headers["location"]
        )
        home = microsoft(http, signed_in, "accept")
        assert "Alice Johnson" in home.text
        assert '<strong id="integration">connected</strong>' in home.text
        assert '<ul id="events">' in home.text and "<li>" in home.text
        assert '<ul id="contacts">' in home.text


def test_bob_needs_an_admin(demo: tuple[str, Path]) -> None:
    base, folder = demo
    with browser(folder) as http:
        signed_in = sign_in(http, base, "bob@fabrikam.example")
        page = microsoft(http, signed_in, "back")
        assert "An administrator needs to approve this app" in page.text
        home = follow(http, http.get(base + "/"))
        assert "waiting for an administrator" in home.text


def test_carol_connects_through_ews(demo: tuple[str, Path]) -> None:
    base, folder = demo
    with browser(folder) as http:
        signed_in = sign_in(http, base, "carol@hybrid.example")
        assert "EWS.AccessAsUser.All" in signed_in.headers["location"]
        home = microsoft(http, signed_in, "accept")
        assert "Exchange Web Services" in home.text
        assert "https://mail.hybrid.example/EWS/Exchange.asmx" in home.text


# --- housekeeping ------------------------------------------------------------------------------


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "proxy.cli", "demo", *args]


def test_a_port_in_use_is_one_line_and_no_banner(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            demo_command("--port", str(port), "--ops-port", "0"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""  # no banner promising a demo that does not run
    [line] = result.stderr.splitlines()
    assert line.startswith(f"demo: port {port} is in use (")
    assert line.endswith(f"choose another with --port (e.g. --port {port + 1})")


def test_a_taken_ops_port_names_its_option(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        ops = taken.getsockname()[1]
        result = subprocess.run(
            demo_command("--port", str(free_port()), "--ops-port", str(ops)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().endswith(
        f"choose another with --ops-port (e.g. --ops-port {ops + 1})"
    )


def test_sigterm_removes_the_temporary_folder(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        demo_command("--port", str(port), "--ops-port", "0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        wait_for_port(port, proc=proc)
        [folder] = tmp_path.glob("consent-demo-*")
        assert (folder / "consent-proxy.sqlite3").exists() or any(folder.iterdir())
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.glob("consent-demo-*")) == []


def test_the_demo_serves_the_overview_on_its_ops_listener(demo: tuple[str, Path]) -> None:
    base, folder = demo
    ops = (folder / "ops-url").read_text()
    page = httpx.get(f"{ops}/overview", timeout=10)
    assert page.status_code == 200
    assert "consent-proxy overview" in page.text
    assert httpx.get(f"{ops}/healthz", timeout=10).json() == {"status": "ok"}
    public = httpx.get(f"{base}/overview", timeout=10)  # the public listener: the app's answer
    assert "consent-proxy overview" not in public.text
