"""When a request that met a stale keep-alive connection may be sent again, and with what body.

A reused idle connection can be closed by the upstream just as a request is written on it
(its keep-alive timer fired first). Nothing was answered, so the request is sent again on a
fresh connection, but only when that cannot apply it twice (RFC 9110 9.2.2: a proxy must not
retry a non-idempotent request on its own): an idempotent method, or a request carrying an
`Idempotency-Key`; and only when the body sent so far can be sent again, that is when it
was small enough to keep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from proxy.asgi import Headers

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# A body this large or smaller is kept while it is sent; a larger one is never sent twice.
REPLAY_LIMIT = 64 * 1024


def may_retry(method: bytes, headers: Headers) -> bool:
    return method in IDEMPOTENT or any(name == b"idempotency-key" for name, _ in headers)


class ReplayableBody:
    """The request body as pulled from the client, kept while it stays under the limit."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self._kept: list[bytes] = []
        self._size = 0
        self.replayable = True

    async def chunks(self) -> AsyncIterator[bytes]:
        """What was kept, then the rest of the client's body (each pass continues it)."""
        for chunk in list(self._kept):
            yield chunk
        async for chunk in self._source:
            self._keep(chunk)
            yield chunk

    def _keep(self, chunk: bytes) -> None:
        if not self.replayable:
            return
        self._size += len(chunk)
        if self._size > REPLAY_LIMIT:
            self.replayable = False
            self._kept.clear()
        else:
            self._kept.append(chunk)
