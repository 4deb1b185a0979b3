"""Linked identities: the sign-ins that became one person by a linking claim.

An endpoint with `link_by` (the admin trusts it to assert that claim) gives its sign-ins
a linking key in place of its own issuer + subject, so the same person coming by SAML and
by OIDC has one session key, one integration, one set of tokens. Each identity seen
under a linking key is remembered here, so `consent-proxy status` can show who is linked
to whom; the list is capped, and nothing in it is a secret.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from typing import Any

from proxy.config import Settings
from proxy.identity.sso import SignIn
from proxy.store import Store, open_store

NAMESPACE = "identity-links"
MAX_LINKED = 20
LIFETIME = 400 * 86400.0


async def remember(store: Store, user_key: str, sign_in: SignIn) -> None:
    """Note that this identity signed in under `user_key` (a linking key)."""
    known = await linked(store, user_key)
    identity = {"method": sign_in.method, "issuer": sign_in.issuer, "subject": sign_in.subject}
    others = [i for i in known if {k: i.get(k) for k in identity} != identity]
    entries = [{**identity, "last_seen": int(time.time())}, *others][:MAX_LINKED]
    await store.put(NAMESPACE, user_key, json.dumps(entries).encode(), ttl=LIFETIME)


async def linked(store: Store, user_key: str) -> list[dict[str, Any]]:
    raw = await store.get(NAMESPACE, user_key)
    try:
        entries = json.loads(raw) if raw is not None else []
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


async def with_linked(
    settings: Settings, records: Awaitable[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """`status` records, each with the identities linked under its user key."""
    found = await records
    store = open_store(settings.store)
    try:
        for record in found:
            key = record.get("user_key")
            if isinstance(key, str) and key.startswith("link."):
                record["linked_identities"] = await linked(store, key)
    finally:
        await store.aclose()
    return found
