"""TLS for the HTTPS test servers: one trustme CA per test session, server certificates
for 127.0.0.1 and localhost, and clients that trust only that CA."""

from __future__ import annotations

import ssl
from functools import cache
from pathlib import Path

import trustme

from .servers import ThreadServer


@cache
def certificate_authority() -> trustme.CA:
    return trustme.CA()


def server_cert(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(certfile, keyfile, ca_pem_path) written under `tmp_path`, for uvicorn's
    `ssl_certfile`/`ssl_keyfile` and for clients' trust (`ca_file`)."""
    ca = certificate_authority()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, ca_file = (
        tmp_path / "server.pem",
        tmp_path / "server.key",
        tmp_path / "ca.pem",
    )
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(certfile, append=i > 0)
    cert.private_key_pem.write_to_path(keyfile)
    ca.cert_pem.write_to_path(ca_file)
    return certfile, keyfile, ca_file


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def https_server(app: object, tmp_path: Path, port: int | None = None) -> tuple[ThreadServer, Path]:
    """An (unstarted) ThreadServer serving `app` over HTTPS, and the CA file that trusts it.
    Its address is `https_url(server)`: `server.url` says http."""
    certfile, keyfile, ca_file = server_cert(tmp_path)
    server = ThreadServer(app, port=port, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile))
    return server, ca_file


def https_url(server: ThreadServer) -> str:
    return f"https://127.0.0.1:{server.port}"
