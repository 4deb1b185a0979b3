"""What consent-proxy adds on top of the app it fronts: throughput, latency and memory.

One run, side by side, on 127.0.0.1:
- requests/s and p50/p99 latency (wrk) at concurrency 1 and 50 for the upstream direct,
  consent-proxy (1 and 2 workers) and nginx as a reverse proxy, all in front of the same
  fixed upstream (nginx returning a small fixed body);
- a 1 GiB response body and a 1 GiB request body streamed through consent-proxy (and,
  for reference, direct and through nginx): MiB/s and the proxy's peak RSS growth.

Usage: python bench/passthrough.py [--duration 5] [--quick] [--baseline DIR]
Needs wrk on PATH; nginx is used when installed (rows that need it are skipped otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import (
    SMALL_BODY,
    Backend,
    ConsentProxy,
    NginxProxy,
    Server,
    fixed_upstream,
    have_nginx,
    start_report,
)

MiB = 1024 * 1024
CONCURRENCY = (1, 50)
TARGET_THROUGHPUT_RATIO = 0.40  # of nginx's, at c=50
TARGET_ADDED_P50_MS = 0.5  # over direct, at c=1
TARGET_RSS_GROWTH_MIB = 30  # while streaming 1 GiB

# What a browser sends with a page request (wrk adds Host): the proxy's per-request cost
# grows with the number of headers, so a bare `GET /` would flatter it.
BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8",
    "Accept-Encoding: gzip, deflate, br",
    "Accept-Language: en-GB,en;q=0.9",
    "Cookie: app_session=3f2a9c0e7b5d41e8a6f0c2d4b8e1a7f3; consent_proxy=eyJzIjoiYWJjIn0.Zk3x.q9",
    "Referer: https://app.example.com/home",
    'Sec-Ch-Ua: "Chromium";v="124", "Not-A.Brand";v="99"',
    "Sec-Fetch-Dest: document",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-Site: same-origin",
    "Upgrade-Insecure-Requests: 1",
)


# --- wrk -------------------------------------------------------------------------------------


@dataclass
class Cell:
    rps: float
    p50_ms: float
    p99_ms: float
    problems: str = ""
    cpu_us: float = 0.0  # CPU time of the row's own processes per request


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, connections: int, duration: int, headers: Sequence[str] = ()) -> Cell:
    threads = 1 if connections == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    for header in headers:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    # The distribution's lines only: "Req/Sec ... 62.50%" must not pass for a p50.
    p50 = re.search(r"^\s+50%\s+(\S+)$", text, re.M).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)$", text, re.M).group(1)  # type: ignore[union-attr]
    problems = [
        line.strip() for line in text.splitlines() if "Non-2xx" in line or "Socket errors" in line
    ]
    return Cell(rps, _ms(p50), _ms(p99), "; ".join(problems))


def cpu_seconds(server: Server) -> float:
    """User + system CPU of a server's processes (an nginx master and workers, uvicorn's
    supervisor and workers) so far."""
    root = psutil.Process(server.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def measure(name: str, server: Server, args: argparse.Namespace) -> dict[int, Cell]:
    headers = () if args.bare else BROWSER_HEADERS
    wrk(server.url, 50, args.warmup, headers)  # connections, pools, caches
    cells = {}
    for c in CONCURRENCY:
        before = cpu_seconds(server)
        cells[c] = cell = wrk(server.url, c, args.duration, headers)
        cell.cpu_us = (cpu_seconds(server) - before) / (cell.rps * args.duration) * 1e6
    print(f"  measured {name}", file=sys.stderr, flush=True)
    return cells


# --- 1 GiB streams ---------------------------------------------------------------------------


class RssSampler:
    """Peak resident memory of some processes, sampled in a thread, over a `with` block."""

    def __init__(self, pids: Sequence[int], interval: float = 0.01) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.baseline = self.peak = self._rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        return sum(p.memory_info().rss for p in self.processes)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self.baseline = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / MiB


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes, int]:
    """Read one response: its head, the first bytes of its body, and how many body bytes
    there were (Content-Length of them, or up to the end of the connection)."""
    view = memoryview(buf)
    data = b""
    while b"\r\n\r\n" not in data:
        n = sock.recv_into(view)
        if not n:
            raise ConnectionError("connection closed before the response head")
        data += bytes(view[:n])
    head, _, start = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {head.splitlines()[0]!r}")
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    expected = int(length[1]) if length else None
    received = len(start)
    while expected is None or received < expected:
        n = sock.recv_into(view)
        if not n:
            break
        if len(start) < 64:
            start += bytes(view[: min(n, 64)])
        received += n
    return head, start[:64], received


def get_small(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        _read_response(sock, bytearray(64 * 1024))


def download(port: int, size: int) -> float:
    """GET /big; the seconds it took to receive `size` body bytes."""
    buf = bytearray(MiB)
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        _, _, received = _read_response(sock, buf)
    elapsed = time.perf_counter() - start
    if received != size:
        raise RuntimeError(f"downloaded {received} bytes, expected {size}")
    return elapsed


def upload(port: int, size: int) -> float:
    """PUT a body of `size` bytes; the seconds until the upstream said it had them all."""
    chunk = memoryview(bytes(MiB))
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"PUT /upload HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
            b"content-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % size
        )
        left = size
        while left:
            n = min(left, MiB)
            sock.sendall(chunk[:n])
            left -= n
        _, said, _ = _read_response(sock, bytearray(64 * 1024))
    elapsed = time.perf_counter() - start
    said = said.strip()
    if said != str(size).encode():
        raise RuntimeError(f"the upstream received {said!r} bytes, expected {size}")
    return elapsed


@dataclass
class Stream:
    label: str
    mib_s: float
    rss_mib: float | None = None
    baseline_mib: float | None = None


def stream(label: str, port: int, size: int, up: bool, pids: Sequence[int] = ()) -> Stream:
    transfer = upload if up else download
    if up:
        upload(port, MiB)  # warm: connections, code paths
    else:
        get_small(port)
    if not pids:
        return Stream(label, size / MiB / transfer(port, size))
    with RssSampler(pids) as rss:
        seconds = transfer(port, size)
    print(f"  streamed {label}", file=sys.stderr, flush=True)
    return Stream(label, size / MiB / seconds, rss.growth_mib, rss.baseline / MiB)


# --- the run ---------------------------------------------------------------------------------


def request_rows(args: argparse.Namespace) -> tuple[list[tuple[str, dict[int, Cell]]], str]:
    rows: list[tuple[str, dict[int, Cell]]] = []
    with fixed_upstream() as upstream:
        kind = "nginx" if have_nginx() else "backend.py"
        rows.append((f"upstream direct ({kind})", measure("direct", upstream, args)))
        for n in args.workers:
            with ConsentProxy(upstream.url, n) as proxy:
                name = f"consent-proxy, {n} worker{'s' * (n > 1)}"
                rows.append((name, measure(name, proxy, args)))
            if args.baseline is not None:
                with ConsentProxy(upstream.url, n, args.baseline) as proxy:
                    name = f"  baseline, {n} worker{'s' * (n > 1)}"
                    rows.append((name, measure(name, proxy, args)))
        note = ""
        if have_nginx():
            for n in args.workers:
                with NginxProxy([upstream.url], n) as nginx:
                    name = f"nginx proxy, {n} worker{'s' * (n > 1)}"
                    rows.append((name, measure(name, nginx, args)))
        else:
            note = "nginx is not installed: no nginx-proxy rows (apt-get install nginx-light)"
    return rows, note


def stream_rows(size: int) -> list[Stream]:
    out: list[Stream] = []
    with (
        fixed_upstream(size) as upstream,
        Backend() as sink,
        ConsentProxy(upstream.url) as down,
        ConsentProxy(sink.url) as up,
    ):
        out.append(stream("download, consent-proxy", down.port, size, False, down.processes))
        out.append(stream("upload, consent-proxy", up.port, size, True, up.processes))
        out.append(stream("download, direct", upstream.port, size, False))
        out.append(stream("upload, direct (sink)", sink.port, size, True))
        if have_nginx():
            with NginxProxy([upstream.url, sink.url]) as nginx:
                out.append(stream("download, nginx proxy", nginx.ports[0], size, False))
                out.append(stream("upload, nginx proxy", nginx.ports[1], size, True))
    return out


def print_requests(rows: list[tuple[str, dict[int, Cell]]], args: argparse.Namespace) -> None:
    sent = "Host only" if args.bare else f"{len(BROWSER_HEADERS) + 1} browser request headers"
    print(
        f"\nGET / ({sent}; {len(SMALL_BODY)}-byte body), HTTP/1.1 keep-alive, wrk --latency, "
        f"{args.duration} s per cell (after a {args.warmup} s warm-up at c=50)\n"
    )
    head = "".join(f"{f'c={c} req/s':>12}{'p50 ms':>8}{'p99 ms':>8}" for c in CONCURRENCY)
    print(f"{'target':<28}{head}{'CPU us/req':>12}")
    problems = []
    for name, cells in rows:
        line = "".join(
            f"{cells[c].rps:>12,.0f}{cells[c].p50_ms:>8.3f}{cells[c].p99_ms:>8.3f}"
            for c in CONCURRENCY
        )
        print(f"{name:<28}{line}{cells[50].cpu_us:>12.1f}")
        problems += [f"{name} c={c}: {cells[c].problems}" for c in CONCURRENCY if cells[c].problems]
    print("CPU us/req: user+system CPU time of the row's own processes per request, at c=50")
    for problem in problems:
        print(f"  ! {problem}")


def print_ratios(rows: list[tuple[str, dict[int, Cell]]], args: argparse.Namespace) -> None:
    by_name = dict(rows)
    direct = rows[0][1]
    print(f"\n{'ratio':<58}{'measured':>10}   target")
    for n in args.workers:
        suffix = f"{n} worker{'s' * (n > 1)}"
        proxy = by_name[f"consent-proxy, {suffix}"]
        nginx = by_name.get(f"nginx proxy, {suffix}")
        if nginx is not None:
            ratio = proxy[50].rps / nginx[50].rps
            label = f"consent-proxy / nginx proxy req/s at c=50 ({suffix})"
            print(f"{label:<58}{ratio:>9.0%}    >= {TARGET_THROUGHPUT_RATIO:.0%}")
        added = proxy[1].p50_ms - direct[1].p50_ms
        label = f"consent-proxy p50 added over direct at c=1 ({suffix})"
        print(f"{label:<58}{added:>7.3f} ms   <= {TARGET_ADDED_P50_MS} ms")
        if nginx is not None:
            label = f"  (nginx proxy p50 added over direct at c=1, {suffix})"
            print(f"{label:<58}{nginx[1].p50_ms - direct[1].p50_ms:>7.3f} ms")


def print_streams(streams: list[Stream], size: int) -> None:
    print(f"\n{size / MiB:,.0f} MiB bodies, one connection, client reads/writes 1 MiB at a time\n")
    print(f"{'stream':<26}{'MiB/s':>9}{'proxy RSS before':>18}{'peak growth':>13}   target")
    for s in streams:
        if s.rss_mib is None:
            print(f"{s.label:<26}{s.mib_s:>9,.0f}")
        else:
            print(
                f"{s.label:<26}{s.mib_s:>9,.0f}{s.baseline_mib:>14.1f} MiB{s.rss_mib:>9.1f} MiB"
                f"   < {TARGET_RSS_GROWTH_MIB} MiB"
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk cell")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per target")
    parser.add_argument(
        "--workers", default="1,2", help="consent-proxy/nginx worker counts (default: 1,2)"
    )
    parser.add_argument(
        "--bare", action="store_true", help="send wrk's bare GET / (Host only), not a browser's"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git archive REV | tar -x -C DIR`): its rows follow ours",
    )
    parser.add_argument("--stream-mib", type=int, default=1024, help="size of the big bodies")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 s cells, 1 worker, 64 MiB streams"
    )
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.quick:
        args.duration, args.warmup, args.workers, args.stream_mib = 1, 1, [1], 64
    if 1 not in args.workers:
        parser.error("--workers must include 1 (the ratios compare the 1-worker rows)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    packages = ["consent-proxy", "uvicorn", "uvloop", "httptools", "psutil"]
    start_report(packages, "consent-proxy passthrough benchmark")
    if shutil.which("wrk") is None:
        print("\n  note: wrk is not installed (apt-get install wrk): no request rows")
    else:
        rows, note = request_rows(args)
        print_requests(rows, args)
        if note:
            print(f"  note: {note}")
        print_ratios(rows, args)
    size = args.stream_mib * MiB
    print_streams(stream_rows(size), size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
