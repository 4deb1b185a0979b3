"""What one store call costs: get / put / add / pop on SQLite and Redis, side by side.

For each engine and operation: COUNT calls spread over CONCURRENCY tasks in one event loop,
each call timed on its own; the table shows p50 and p99 latency and calls per second
(COUNT / wall time). Values are 256 bytes, about a session record. SQLite uses a file in a
temporary directory; Redis a fresh key prefix, deleted afterwards. An engine that cannot
be reached is reported and skipped.

Usage: python bench/store_latency.py [--count 2000] [--concurrency 1 16]
                                     [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from proxy.config import RedisStore as RedisSettings
from proxy.store import Store, StoreError
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore

VALUE = os.urandom(256)
TTL = 300.0
MAX_COUNT = 100_000  # a bound on one run, whatever is asked
OPERATIONS = ("put", "get", "add", "pop")

Call = Callable[[Store, int], Awaitable[object]]
CALLS: dict[str, Call] = {
    "put": lambda s, i: s.put("bench", f"k{i}", VALUE, ttl=TTL),
    "get": lambda s, i: s.get("bench", f"k{i}"),
    "add": lambda s, i: s.add("bench", f"a{i}", VALUE, ttl=TTL),
    "pop": lambda s, i: s.pop("bench", f"k{i}"),  # takes back what put wrote
}


async def measure(store: Store, call: Call, count: int, concurrency: int) -> tuple[float, ...]:
    latencies: list[float] = []
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:  # shared: each index goes to exactly one worker
            started = time.perf_counter()
            await call(store, i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1000, cuts[98] * 1000, count / wall


async def bench_engine(
    name: str, make: Callable[[], Store], count: int, concurrency: Sequence[int]
) -> list[tuple[str, int, str, tuple[float, ...]]]:
    rows = []
    store = make()
    try:
        await store.ping()
        for c in concurrency:
            for op in OPERATIONS:
                rows.append((name, c, op, await measure(store, CALLS[op], count, c)))
            for key in await store.keys("bench"):
                await store.delete("bench", key)
    except StoreError as exc:
        print(f"{name}: skipped ({exc.description})")
    finally:
        await store.aclose()
    return rows


def table(rows: list[tuple[str, int, str, tuple[float, ...]]]) -> str:
    lines = [
        f"{'engine':<8} {'conc':>4} {'op':<4} {'p50 ms':>8} {'p99 ms':>8} {'ops/s':>9}",
        "-" * 46,
    ]
    for engine, c, op, (p50, p99, rate) in rows:
        lines.append(f"{engine:<8} {c:>4} {op:<4} {p50:>8.3f} {p99:>8.3f} {rate:>9.0f}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    count = min(args.count, MAX_COUNT)
    with tempfile.TemporaryDirectory() as tmp:
        engines: dict[str, Callable[[], Store]] = {
            "sqlite": lambda: SqliteStore(Path(tmp) / "bench.sqlite3"),
            "redis": lambda: RedisStore(
                RedisSettings(
                    type="redis", url=args.redis_url, key_prefix=f"bench:{uuid.uuid4().hex}:"
                )
            ),
        }
        rows = []
        for name, make in engines.items():
            rows += await bench_engine(name, make, count, args.concurrency)
    print(f"{count} calls per row, 256-byte values; Python {platform.python_version()}")
    print(table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    asyncio.run(main(parser.parse_args()))
