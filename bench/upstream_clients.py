"""The candidates for the upstream leg, measured in one run against the same fixed upstream.

httpx.AsyncClient, aiohttp.ClientSession and proxy.forward.upstream.UpstreamPool each send a fixed
number of `GET /` requests (keep-alive, whole body read) under uvloop, at concurrency 1
and 50; each cell is the best of `--rounds` runs. The upstream is nginx returning a small
fixed body (backend.py when nginx is not installed), in its own process.

Usage: python bench/upstream_clients.py [--requests 10000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from servers import SMALL_BODY, fixed_upstream, have_nginx, start_report

from proxy.config import UpstreamSettings
from proxy.forward.upstream import UpstreamPool

CONCURRENCY = (1, 50)

Get = Callable[[], Awaitable[bytes]]


class Candidate:
    """One client: `open()` it, then `get()` returns the body of `GET /`."""

    name = ""
    module = ""  # what must be installed

    def __init__(self, url: str, connections: int) -> None:
        self.url = url
        self.connections = connections

    async def open(self) -> Get:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Httpx(Candidate):
    name = "httpx.AsyncClient"
    module = "httpx"

    async def open(self) -> Get:
        import httpx

        limits = httpx.Limits(
            max_connections=self.connections, max_keepalive_connections=self.connections
        )
        self.client = httpx.AsyncClient(base_url=self.url, limits=limits)

        async def get() -> bytes:
            response = await self.client.get("/")
            return response.content

        return get

    async def close(self) -> None:
        await self.client.aclose()


class Aiohttp(Candidate):
    name = "aiohttp.ClientSession"
    module = "aiohttp"

    async def open(self) -> Get:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.connections)
        self.session = aiohttp.ClientSession(self.url, connector=connector)

        async def get() -> bytes:
            async with self.session.get("/") as response:
                return await response.read()

        return get

    async def close(self) -> None:
        await self.session.close()


class Pool(Candidate):
    name = "proxy.forward.upstream.UpstreamPool"
    module = "httptools"

    async def open(self) -> Get:
        self.pool = UpstreamPool(UpstreamSettings(url=self.url))
        headers = [(b"host", self.url.removeprefix("http://").encode())]

        async def get() -> bytes:
            exchange = await self.pool.request(b"GET", b"/", headers)
            try:
                await exchange.wait_headers()
                if exchange.complete:
                    return exchange.first_chunk()
                return b"".join([chunk async for chunk in exchange.body()])
            finally:
                await exchange.aclose()

        return get

    async def close(self) -> None:
        await self.pool.aclose()


CANDIDATES: tuple[type[Candidate], ...] = (Httpx, Aiohttp, Pool)


async def run_cell(candidate: Candidate, requests: int, concurrency: int) -> float:
    """Requests per second for `requests` GETs spread over `concurrency` tasks."""
    get = await candidate.open()
    try:
        await asyncio.gather(*(get() for _ in range(concurrency)))  # open the connections
        for _ in range(200):
            await get()  # warm the code paths

        async def worker(n: int) -> None:
            for _ in range(n):
                body = await get()
                if body != SMALL_BODY:
                    raise RuntimeError(f"{candidate.name}: unexpected body {body[:40]!r}")

        share = [requests // concurrency] * concurrency
        share[0] += requests - sum(share)
        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in share))
        return requests / (time.perf_counter() - start)
    finally:
        await candidate.close()


async def measure(
    url: str, candidates: Sequence[type[Candidate]], args: argparse.Namespace
) -> dict[str, dict[int, float]]:
    results: dict[str, dict[int, float]] = {c.name: {} for c in candidates}
    for concurrency in CONCURRENCY:
        for _ in range(args.rounds):  # interleaved, so drift hits every candidate alike
            for kind in candidates:
                rps = await run_cell(kind(url, concurrency), args.requests, concurrency)
                best = results[kind.name].get(concurrency, 0.0)
                results[kind.name][concurrency] = max(best, rps)
    return results


def print_table(results: dict[str, dict[int, float]], args: argparse.Namespace) -> None:
    upstream = "nginx" if have_nginx() else "backend.py"
    print(
        f"\nGET / ({len(SMALL_BODY)}-byte body) from {upstream}, {args.requests:,} requests per "
        f"cell, best of {args.rounds}, uvloop {metadata.version('uvloop')}\n"
    )
    head = "".join(f"{f'c={c} req/s':>14}{'vs best':>9}" for c in CONCURRENCY)
    print(f"{'client':<30}{head}")
    fastest = {c: max(r[c] for r in results.values()) for c in CONCURRENCY}
    for name, cells in results.items():
        line = "".join(f"{cells[c]:>14,.0f}{cells[c] / fastest[c]:>9.2f}" for c in CONCURRENCY)
        print(f"{name:<30}{line}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests per cell")
    parser.add_argument("--rounds", type=int, default=3, help="runs per cell; the best counts")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 requests, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 2_000, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    packages = ["consent-proxy", "httpx", "httpcore", "aiohttp", "httptools"]
    start_report(packages, "upstream-leg HTTP clients")
    candidates = [c for c in CANDIDATES if importlib.util.find_spec(c.module)]
    with fixed_upstream() as upstream:
        results = uvloop.run(measure(upstream.url, candidates, args))
    print_table(results, args)
    for missing in sorted(set(CANDIDATES) - set(candidates), key=CANDIDATES.index):
        print(f"  note: {missing.name} skipped: {missing.module} is not installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
