"""What `consent-proxy check` verifies beyond the file's validity, before a deploy.

A config can be valid and still fail at `run`: the SQLite file's folder not writable, a
key file that is not a key, a redirect URI Microsoft will refuse. Each check here returns
problems as ``path: what is wrong and what to do``, the same shape as the loader's, so
`check` prints them with the file's line and column. Redis is only asked with
``--online``: a check on a build machine must not need the production network.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from proxy.config import (
    CertificateCredential,
    RedisStore,
    SamlEndpoint,
    Settings,
    SqliteStore,
)
from proxy.errors import ConfigError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def preflight(settings: Settings, online: bool = False) -> list[str]:
    """Every problem found; empty when the config can be deployed as far as we can tell."""
    problems = [*_state_problems(settings), *_file_problems(settings), *_url_problems(settings)]
    if online and isinstance(settings.store, RedisStore):
        problems += _redis_problems(settings)
    return problems


# --- the state folder and the SQLite file -------------------------------------------------


def _state_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    if settings.state_dir is not None:
        reason = _not_writable(settings.state_dir)
        if reason:
            problems.append(
                f"state_dir: {str(settings.state_dir)!r} {reason}; choose a writable folder "
                "(state_dir, --state-dir or CONSENT_PROXY_STATE_DIR)"
            )
    store = settings.store
    if isinstance(store, SqliteStore) and store.path is not None:
        if store.path.parent != settings.state_dir or not problems:
            reason = _not_writable(store.path.parent)
            if reason:
                problems.append(
                    f"store.path: the folder of {str(store.path)!r} {reason}; the SQLite "
                    "file and its journal are written there"
                )
        if store.path.exists() and not os.access(store.path, os.R_OK | os.W_OK):
            problems.append(f"store.path: {str(store.path)!r} is not readable and writable")
    return problems


def _not_writable(folder: Path) -> str | None:
    """Why files cannot be made in `folder`, or None when they can. Tried for real (the
    folder is created, as `run` would): permission bits lie to root and on read-only mounts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    return None


# --- key and certificate files -------------------------------------------------------------


def _file_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name, app in settings.microsoft_apps.items():
        where = f"microsoft_apps.{name}"
        if app.certificate is not None:
            problems += _credential_problems(f"{where}.certificate", app.certificate)
        if app.ca_file is not None:
            problems += _ca_problems(f"{where}.ca_file", app.ca_file)
    from proxy.identity.assertion import load_key

    for i, key in enumerate(settings.assertion.signing_keys):
        try:
            load_key(key.reveal(), i)
        except ConfigError as exc:
            problems += exc.problems
    for where, ca_file in _ca_files(settings):
        problems += _ca_problems(where, ca_file)
    for i, endpoint in enumerate(settings.sso.endpoints):
        if isinstance(endpoint, SamlEndpoint):
            problems += _saml_problems(f"sso.endpoints[{i}]", endpoint)
    return problems


def _ca_files(settings: Settings) -> Iterator[tuple[str, Path]]:
    if settings.upstream.ca_file is not None:
        yield "upstream.ca_file", settings.upstream.ca_file
    if isinstance(settings.store, RedisStore) and settings.store.ca_file is not None:
        yield "store.ca_file", settings.store.ca_file
    for i, endpoint in enumerate(settings.sso.endpoints):
        ca_file = getattr(endpoint, "ca_file", None)
        if ca_file is not None:
            yield f"sso.endpoints[{i}].ca_file", ca_file


def _credential_problems(where: str, credential: CertificateCredential) -> list[str]:
    try:
        load_pem_private_key(credential.private_key.reveal().encode(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        return [f"{where}.private_key: not a PEM private key without a passphrase ({exc})"]
    if credential.public_certificate is None:
        return []
    try:
        cert = x509.load_pem_x509_certificate(credential.public_certificate.read_bytes())
    except (ValueError, OSError) as exc:
        return [f"{where}.public_certificate: not a PEM certificate ({exc})"]
    sha1 = hashlib.sha1(cert.public_bytes(Encoding.DER), usedforsecurity=False).hexdigest()
    if sha1.lower() != credential.thumbprint.lower():
        return [
            f"{where}.thumbprint: is not the SHA-1 of public_certificate ({sha1.upper()}); "
            "Microsoft would refuse the client assertion"
        ]
    return []


def _ca_problems(where: str, path: Path) -> list[str]:
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        return [f"{where}: {str(path)!r} is not a readable PEM CA file ({exc})"]
    return []


def _saml_problems(where: str, endpoint: SamlEndpoint) -> list[str]:
    from proxy.identity.sso.saml_signature import load_certificates

    try:
        load_certificates(endpoint)
    except ConfigError as exc:
        return [f"{where}.{problem}" for problem in exc.problems]
    return []


# --- URLs ----------------------------------------------------------------------------------


def _url_problems(settings: Settings) -> list[str]:
    if settings.public_url is None:
        return []
    parts = urlsplit(settings.public_url)
    loopback = parts.hostname in LOOPBACK_HOSTS
    problems: list[str] = []
    if settings.policy is not None and parts.scheme != "https" and not loopback:
        callback = f"{settings.public_url}{settings.consent.prefix}callback"
        problems.append(
            f"public_url: the redirect URI {callback} must be https:// (Microsoft accepts "
            "http:// only for localhost)"
        )
    if settings.session.cookie_secure and parts.scheme != "https" and not loopback:
        problems.append(
            "session.cookie_secure: browsers do not send secure cookies to the http:// "
            f"public_url {settings.public_url}; use https, or cookie_secure: false for a trial"
        )
    domain = settings.session.cookie_domain
    if domain and not _in_domain(parts.hostname or "", domain.lstrip(".")):
        problems.append(
            f"session.cookie_domain: {domain!r} does not cover the public_url's host "
            f"{parts.hostname}; browsers would refuse the cookie"
        )
    for i, endpoint in enumerate(settings.sso.endpoints):
        if isinstance(endpoint, SamlEndpoint) and endpoint.destination:
            expected = f"{settings.public_url}{endpoint.path}"
            if endpoint.destination != expected:
                problems.append(
                    f"sso.endpoints[{i}].destination: {endpoint.destination!r} is not "
                    f"public_url + path ({expected}); the IdP's Destination would not match"
                )
    return problems


def _in_domain(host: str, domain: str) -> bool:
    return host == domain or host.endswith(f".{domain}")


# --- Redis, with --online ------------------------------------------------------------------


def _redis_problems(settings: Settings) -> list[str]:
    from proxy.store import StoreError, open_store

    async def ping() -> None:
        store = open_store(settings.store)
        try:
            await store.ping()
        finally:
            await store.aclose()

    try:
        asyncio.run(ping())
    except StoreError as exc:
        return [f"store.url: Redis does not answer: {exc.description}"]
    return []
