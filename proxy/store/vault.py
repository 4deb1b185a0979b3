"""Encryption at rest for what must never sit in the store in the clear: refresh tokens,
msal token caches, PKCE verifiers.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) with a key list: the first key
encrypts, every key decrypts, so keys rotate by putting a new one first and, once
`consent-proxy` has re-sealed what it touches (or the old tokens have expired), dropping
the old one. Each record is bound to its purpose and owner (associated data folded into
the plaintext and checked on the way out), so a sealed value copied from one user's
record to another's does not open there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from proxy.errors import ConsentProxyError


class VaultError(ConsentProxyError):
    code = "sealed_record_unreadable"
    status = 500
    title = "Stored secret unreadable"


def new_key() -> str:
    return Fernet.generate_key().decode()


def valid_key(key: str) -> bool:
    try:
        Fernet(key.encode())
    except (ValueError, TypeError):
        return False
    return True


class Vault:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a vault needs at least one key")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def seal(self, plaintext: bytes, context: str) -> bytes:
        envelope = json.dumps({"c": context, "v": plaintext.decode("latin-1")}).encode()
        return self._fernet.encrypt(envelope)

    def open(self, sealed: bytes, context: str) -> bytes:
        try:
            envelope = json.loads(self._fernet.decrypt(sealed))
        except (InvalidToken, ValueError, TypeError):
            raise VaultError(
                "a sealed record cannot be decrypted with the configured keys"
            ) from None
        if not isinstance(envelope, dict) or envelope.get("c") != context:
            raise VaultError("a sealed record belongs to another owner or purpose")
        return str(envelope["v"]).encode("latin-1")

    def reseal(self, sealed: bytes) -> bytes:
        """The same record under the first (newest) key."""
        try:
            return self._fernet.rotate(sealed)
        except InvalidToken:
            raise VaultError(
                "a sealed record cannot be decrypted with the configured keys"
            ) from None
