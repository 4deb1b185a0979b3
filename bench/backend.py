"""A small Python upstream for the benchmarks. Usage: python bench/backend.py PORT BIG_BYTES

- a request with a body: the body is read whole, then answered with its length in bytes
  (nginx answers a request it does not proxy before reading its body, which would let the
  proxy under test stop sending early; this only answers once the last byte is in);
- `GET /big`: BIG_BYTES zero bytes, written as fast as the reader takes them;
- anything else: the same small fixed body as the nginx upstream.

It is the upload sink, and the upstream when nginx is not installed.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
from servers import SMALL_BODY

CHUNK = b"\0" * (1024 * 1024)


class Backend(asyncio.Protocol):
    def __init__(self, big_bytes: int) -> None:
        self.big_bytes = big_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.received = 0
        self.has_body = False
        self.to_write = 0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._write_big()

    def on_message_begin(self) -> None:
        self.url = b""
        self.received = 0
        self.has_body = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.has_body = True
        self.received += len(body)

    def on_message_complete(self) -> None:
        if self.has_body or self.parser.get_method() in (b"POST", b"PUT"):
            self._respond(b"%d\n" % self.received)
        elif self.url == b"/big":
            self.to_write = self.big_bytes
            self._respond(b"", self.big_bytes)
            self._write_big()
        else:
            self._respond(SMALL_BODY)

    def _respond(self, body: bytes, length: int | None = None) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%b"
            % (len(body) if length is None else length, body)
        )
        if not self.parser.should_keep_alive() and not self.to_write:
            self.transport.close()

    def _write_big(self) -> None:
        assert self.transport is not None
        while self.to_write and not self.paused and not self.transport.is_closing():
            n = min(self.to_write, len(CHUNK))
            self.transport.write(CHUNK[:n] if n < len(CHUNK) else CHUNK)
            self.to_write -= n
        if not self.to_write and not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int, big_bytes: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Backend(big_bytes), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    port, big_bytes = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port, big_bytes))
    else:
        uvloop.run(serve(port, big_bytes))


if __name__ == "__main__":
    main()
