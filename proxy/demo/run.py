"""`consent-proxy demo`: the whole journey on one machine, offline.

Four servers in one process: the demo app (a SAML service provider that lists meetings
and contacts), the demo SAML IdP, the Microsoft identity platform stand-in (HTTPS, with a
CA made at start-up) and the proxy in front of the app, with SQLite in a temporary folder
(removed on Ctrl-C and on SIGTERM alike), and the proxy's ops listener with the admins'
overview page.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from proxy.app import ConsentProxy, create_app
from proxy.config import settings_from_data
from proxy.demo.idp import (
    DEMO_USERS,
    EMAIL_ATTRIBUTE,
    GROUPS_ATTRIBUTE,
    NAME_ATTRIBUTE,
    OBJECT_ID_ATTRIBUTE,
    TENANT_ATTRIBUTE,
    DemoIdentityProvider,
)
from proxy.demo.microsoft import DEMO_APP_ID, DEMO_APP_SECRET, MicrosoftStandIn, demo_app
from proxy.demo.tls import make_certificates
from proxy.demo.upstream import DemoApp, DemoAppSettings
from proxy.server import public_options, uvicorn_options
from proxy.store.vault import new_key

IDP_ENTITY = "https://idp.demo.example/metadata"
APP_ENTITY = "https://app.demo.example/saml/metadata"
POLICY = Path(__file__).with_name("policy.yaml")
DEFAULT_OPS_PORT = 9090
USER_NOTES = {
    "alice": "consents on Microsoft's page and sees her meetings and contacts",
    "bob": "his tenant lets only admins approve apps: shows 'Need admin approval'",
    "carol": "hybrid Exchange: connected through EWS (fixed permission)",
}


class _QuietServer(uvicorn.Server):
    """A server that leaves signal handling to the proxy's server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Demo:
    public_url: str
    proxy: ConsentProxy
    servers: list[tuple[str, Any, int, dict[str, Any]]]  # name, app, port, extra options
    standin: MicrosoftStandIn


def build_demo(folder: Path, port: int) -> Demo:
    """Everything the demo runs, configured; nothing started yet."""
    public = f"http://127.0.0.1:{port}"
    app_port, idp_port, ms_port = free_port(), free_port(), free_port()
    certfile, keyfile, ca_file = make_certificates(folder)
    standin = MicrosoftStandIn(
        f"https://127.0.0.1:{ms_port}", apps=[demo_app(f"{public}/.consent-proxy/callback")]
    )
    idp = DemoIdentityProvider(
        IDP_ENTITY,
        allowed_acs_urls=[f"{public}/saml/acs"],
        key_file=folder / "idp.key",
        certificate_file=folder / "idp.pem",
    )
    idp_cert = idp.write_certificate(folder / "idp.pem")
    demo = DemoApp(
        DemoAppSettings(
            public_url=public,
            idp_sso_url=f"http://127.0.0.1:{idp_port}/sso",
            audience=APP_ENTITY,
            idp_certificate=idp_cert,
            graph_url=standin.graph_url,
            ca_file=ca_file,
        )
    )
    settings = settings_from_data(
        {
            "upstream": {"url": f"http://127.0.0.1:{app_port}"},
            "public_url": public,
            "store": {"path": str(folder / "consent-proxy.sqlite3")},
            "session": {
                "secrets": [{"value": secrets.token_urlsafe(32)}],
                "upstream_cookie": "demo_session",
                "cookie_secure": False,
            },
            "sso": {
                "endpoints": [
                    {
                        "type": "saml",
                        "path": "/saml/acs",
                        "idp_certificates": [str(idp_cert)],
                        "audience": APP_ENTITY,
                        "email_attribute": EMAIL_ATTRIBUTE,
                        "name_attribute": NAME_ATTRIBUTE,
                        "tenant_attribute": TENANT_ATTRIBUTE,
                        "object_id_attribute": OBJECT_ID_ATTRIBUTE,
                        "groups_attribute": GROUPS_ATTRIBUTE,
                    }
                ],
                "logout_paths": ["/logout"],
            },
            "policy": str(POLICY),
            "microsoft_apps": {
                "demo": {
                    "client_id": DEMO_APP_ID,
                    "client_secret": {"value": DEMO_APP_SECRET},
                    "authority_host": f"https://127.0.0.1:{ms_port}",
                    "ca_file": str(ca_file),
                }
            },
            "tokens": {"encryption_keys": [{"value": new_key()}]},
        },
        "demo",
    )
    tls = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)}
    return Demo(
        public_url=public,
        proxy=create_app(settings),
        servers=[
            ("app", demo.app(), app_port, {}),
            ("idp", idp.app(), idp_port, {}),
            ("microsoft", standin.app(), ms_port, tls),
        ],
        standin=standin,
    )


async def serve_demo(
    demo: Demo,
    port: int,
    log_level: str = "warning",
    sockets: tuple[socket.socket, socket.socket | None] | None = None,
) -> None:
    """Serve everything until the proxy's server stops (Ctrl-C, SIGTERM). `sockets`, bound
    beforehand, are the proxy's and the ops listener's."""
    from proxy.server import ops_app_for

    proxy_socket, ops_socket = sockets or (_bind(port), None)

    def options(port: int, level: str = log_level) -> dict[str, Any]:
        # A browser's idle connections must not hold the demo open after Ctrl-C or SIGTERM.
        return {**uvicorn_options("127.0.0.1", port, level), "timeout_graceful_shutdown": 2}

    helpers = [
        _QuietServer(uvicorn.Config(app, **options(p), **extra))
        for _, app, p, extra in demo.servers
    ]
    public = public_options("127.0.0.1", port, "info", demo.proxy.settings.server)
    public["timeout_graceful_shutdown"] = 2
    proxy = uvicorn.Server(uvicorn.Config(demo.proxy, **public))
    tasks = [asyncio.ensure_future(server.serve()) for server in helpers]
    if ops_socket is not None:
        ops = ops_app_for(demo.proxy, lambda: proxy.started, demo.proxy.ops_routes())
        ops_options = {**options(ops_socket.getsockname()[1]), "lifespan": "off"}
        helpers.append(_QuietServer(uvicorn.Config(ops, **ops_options)))
        tasks.append(asyncio.ensure_future(helpers[-1].serve(sockets=[ops_socket])))
    try:
        await proxy.serve(sockets=[proxy_socket])
    finally:
        for server in helpers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)


class PortInUse(Exception):
    """A port the demo needs is taken: the message says which option picks another."""


def _bind(port: int, option: str = "--port") -> socket.socket:
    # Bound, not listening: taken ports are found before anything starts, and nobody can
    # connect before the demo's files exist (uvicorn starts listening when it serves).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        return sock
    except OSError as exc:
        sock.close()
        raise PortInUse(
            f"demo: port {port} is in use ({exc.strerror or exc}); choose another with "
            f"{option} (e.g. {option} {port + 1})"
        ) from None


def _terminate_like_interrupt(signum: int, frame: object) -> None:
    # SIGTERM would end the process on the spot, leaving the temporary folder (keys,
    # SQLite) behind; as an exception it unwinds like Ctrl-C, through the cleanup.
    raise KeyboardInterrupt


def run_demo(port: int, folder: Path | None = None, ops_port: int = DEFAULT_OPS_PORT) -> None:
    proxy_socket = _bind(port)  # before any banner: a taken port is one clear line
    ops_socket = _bind(ops_port, "--ops-port") if ops_port else None
    previous = signal.signal(signal.SIGTERM, _terminate_like_interrupt)
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(proxy_socket.close)
            if ops_socket is not None:
                stack.callback(ops_socket.close)
            if folder is None:
                temporary = tempfile.TemporaryDirectory(prefix="consent-demo-")
                folder = Path(stack.enter_context(temporary))
            folder.mkdir(parents=True, exist_ok=True)
            demo = build_demo(folder, port)
            _banner(demo, ops_port)
            asyncio.run(serve_demo(demo, port, sockets=(proxy_socket, ops_socket)))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _banner(demo: Demo, ops_port: int) -> None:
    print(f"consent-proxy demo: open {demo.public_url}/  (Ctrl-C to stop)", flush=True)
    print("Demo users (pick one on the demo IdP's page):", flush=True)
    for user in DEMO_USERS:
        print(f"  {user.email:<24} {USER_NOTES.get(user.id, '')}", flush=True)
    print(f"Connection page: {demo.public_url}/.consent-proxy/", flush=True)
    if ops_port:
        print(f"Admins' overview (ops listener): http://127.0.0.1:{ops_port}/overview", flush=True)
