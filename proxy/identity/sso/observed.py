"""Whether each `oidc` endpoint can fire, for `consent-proxy check`.

The config cannot say by itself which method reaches the app's callback: a form_post
endpoint (no `silent`) only ever sees a sign-in in a POST, while an app on the code flow
receives `GET ?code&state` there and the watcher never fires. So the watcher notes the
GETs it lets pass at a form_post endpoint (in the store, so every replica's count shows),
and `check` reads them back. Besides that, what the config does tell: a multi-tenant
issuer that accepts every tenant, a silent check with nowhere to learn the IdP's
endpoints from.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from proxy.config import OidcEndpoint, Settings, SqliteStore
from proxy.config.sso import TENANT_PLACEHOLDER
from proxy.store import Store, StoreError, open_store

log = logging.getLogger("consent_proxy.sso")

NAMESPACE = "sso-observed"
KEPT = 30 * 86400.0


async def note_get(store: Store, endpoint: OidcEndpoint, query: bytes) -> None:
    """A GET at a form_post endpoint: counted, and said in the log the first time."""
    code = b"code=" in query
    try:
        raw = await store.get(NAMESPACE, endpoint.path)
        seen = _read(raw)
        if not seen.get("gets"):
            log.warning(
                "GET%s at the oidc form_post endpoint %s: the watcher fires only on a POSTed "
                "id_token; if the app uses the code flow, configure `silent`",
                " with ?code=" if code else "",
                endpoint.path,
            )
        seen = {
            "gets": int(seen.get("gets", 0)) + 1,
            "with_code": int(seen.get("with_code", 0)) + int(code),
            "last": time.time(),
        }
        await store.put(NAMESPACE, endpoint.path, json.dumps(seen).encode(), ttl=KEPT)
    except StoreError as exc:
        log.debug("GET at %s not noted: %s", endpoint.path, exc.description)


def _read(raw: bytes | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def static_warnings(settings: Settings) -> list[str]:
    """What the config alone says about its oidc endpoints."""
    found = []
    for index, endpoint in enumerate(settings.sso.endpoints):
        if not isinstance(endpoint, OidcEndpoint):
            continue
        where = f"sso.endpoints[{index}] ({endpoint.path})"
        if TENANT_PLACEHOLDER in endpoint.issuer and not endpoint.tenants:
            found.append(
                f"{where}: the multi-tenant issuer accepts a sign-in from any Entra tenant; "
                "name yours in `tenants`"
            )
        silent = endpoint.silent
        if silent is not None and endpoint.jwks_url and not endpoint.discovery_url:
            if silent.authorization_url is None or silent.token_url is None:
                found.append(
                    f"{where}: the silent check learns the IdP's authorize and token "
                    "endpoints from discovery at the issuer; give silent.authorization_url "
                    "and silent.token_url if the IdP publishes none"
                )
    return found


async def observed_warnings(settings: Settings) -> list[str]:
    """What the proxy saw at its form_post endpoints: GETs, which never fire them."""
    endpoints = [
        (i, e)
        for i, e in enumerate(settings.sso.endpoints)
        if isinstance(e, OidcEndpoint) and e.silent is None
    ]
    if not endpoints:
        return []
    sqlite = settings.store if isinstance(settings.store, SqliteStore) else None
    if sqlite is not None and (sqlite.path is None or not sqlite.path.exists()):
        return []  # the proxy has not run with this store yet: nothing seen, nothing made
    found = []
    store = open_store(settings.store)
    try:
        for index, endpoint in endpoints:
            seen = _read(await store.get(NAMESPACE, endpoint.path))
            if seen.get("gets"):
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seen.get("last", 0)))
                found.append(
                    f"sso.endpoints[{index}] ({endpoint.path}): expects an id_token POSTed "
                    f"(form_post), but the proxy saw {seen['gets']} GET request(s) there "
                    f"({seen.get('with_code', 0)} with ?code=, last {when}) and so cannot "
                    "fire: an app on the code flow needs `silent` (see README, SSO)"
                )
    except StoreError as exc:
        found.append(f"the store could not be read for what the proxy saw: {exc.description}")
    finally:
        await store.aclose()
    return found
