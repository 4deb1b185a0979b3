"""Which server layer should parse HTTP on the public listener: the candidates side by side.

Each layer (bench/layer_apps.py: uvicorn with httptools, uvicorn with h11, hypercorn,
granian, and consent-proxy's own listener = uvicorn's httptools protocol with limits) is
started with the same limits where it has the option (64 KiB heads, 2 s to send one, 8 at
a time) and probed, on 127.0.0.1:
- head limit: a head of header lines is sent 64 KiB at a time, up to 48 MiB, until the
  server answers; what it answered, after how much, and its RSS growth;
- head timeout: half a head, then silence (up to 6 s): when the server ended it;
- cap: 16 requests at once to a path answering after 0.5 s: how many were served at once,
  refused (503) or queued;
- WebSocket: a message echoed through the layer;
- CPU us/request: wrk at c=50 (12 browser headers) on `GET /` of the probe app, and of
  consent-proxy forwarding to the fixed upstream (nginx, 67 bytes).

Usage: python bench/server_layers.py [--duration 3] [--rounds 2] [--layers a,b]
Needs wrk on PATH; granian and hypercorn rows need those packages (pip install granian
hypercorn); nginx is the upstream when installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from layer_apps import CAP, HEAD_TIMEOUT, LAYERS
from passthrough import BROWSER_HEADERS, RssSampler, cpu_seconds, wrk
from servers import HERE, Server, exit_on_sigterm, fixed_upstream, machine_lines

MiB = 1024 * 1024
CPU_CAP = 1000
NEEDS = {"granian": "granian", "hypercorn": "hypercorn"}


class Layer(Server):
    """One candidate serving one app (layer_apps.py)."""

    def __init__(self, layer: str, app: str, upstream_url: str = "", cap: int = CAP) -> None:
        self.name = layer
        super().__init__()
        self.layer, self.app, self.cap = layer, app, cap
        if upstream_url:
            config = {"upstream": {"url": upstream_url}, "logging": {"level": "warning"}}
            (self.dir / "config.yaml").write_text(json.dumps(config))

    def command(self) -> Sequence[str]:
        os.environ["PYTHONPATH"] = str(HERE)  # granian imports the app by name
        os.environ["CONSENT_PROXY_CONFIG"] = str(self.dir / "config.yaml")
        if self.app != "proxy":
            os.environ.pop("CONSENT_PROXY_CONFIG")
        script = str(HERE / "layer_apps.py")
        return [sys.executable, script, self.layer, self.app, str(self.port), str(self.cap)]

    def processes(self) -> list[int]:
        import psutil

        root = psutil.Process(self.pid)
        return [root.pid] + [c.pid for c in root.children(recursive=True)]


@dataclass
class Row:
    layer: str
    head_limit: str = "-"
    head_timeout: str = "-"
    cap: str = "-"
    websocket: str = "-"
    probe_us: float = 0.0
    proxy_us: float = 0.0
    notes: list[str] = field(default_factory=list)


# --- probes ----------------------------------------------------------------------------------


def _read_until_closed(sock: socket.socket, limit: float) -> bytes:
    sock.settimeout(limit)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def head_limit(server: Layer) -> str:
    line = b"x-filler: " + b"a" * 1000 + b"\r\n"
    chunk, sent, deadline = line * 64, 0, time.monotonic() + 30
    with (
        RssSampler(server.processes()) as rss,
        socket.create_connection(("127.0.0.1", server.port), 10) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nhost: a\r\n")
        with contextlib.suppress(OSError):
            while sent < 48 * MiB and time.monotonic() < deadline:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(chunk)
                sent += len(chunk)
            if sent >= 48 * MiB:
                sock.sendall(b"\r\n")
        answer = _read_until_closed(sock, 5)
    status = answer[9:12].decode() if answer.startswith(b"HTTP/1.") else "reset"
    return f"{status} after {sent / MiB:.1f} MiB, RSS +{rss.growth_mib:.0f} MiB"


def head_timeout(server: Layer) -> str:
    with socket.create_connection(("127.0.0.1", server.port), 10) as sock:
        start = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nhost: a\r\nx-half: ")
        answer = _read_until_closed(sock, HEAD_TIMEOUT + 4)
        elapsed = time.monotonic() - start
    if elapsed >= HEAD_TIMEOUT + 3.9:
        return f"open after {elapsed:.0f} s"
    status = answer[9:12].decode() if answer.startswith(b"HTTP/1.") else "closed"
    return f"{status} at {elapsed:.1f} s"


def cap(server: Layer) -> str:
    results: list[tuple[str, float]] = []
    start = time.monotonic()

    def one() -> None:
        with socket.create_connection(("127.0.0.1", server.port), 10) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            answer = _read_until_closed(sock, 10)
        results.append((answer[9:12].decode() or "none", time.monotonic() - start))

    threads = [threading.Thread(target=one) for _ in range(2 * CAP)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    refused = sum(status == "503" for status, _ in results)
    first = sum(status == "200" and t < 0.9 for status, t in results)
    later = sum(status == "200" and t >= 0.9 for status, t in results)
    return f"{first} at once, {later} queued, {refused} refused"


def websocket(server: Layer) -> str:
    from websockets.sync.client import connect

    try:
        with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5) as ws:
            ws.send("hello")
            return "yes" if ws.recv(timeout=5) == "hello" else "wrong echo"
    except Exception as exc:  # any failure is the answer
        return f"no ({type(exc).__name__})"


def cpu_per_request(server: Layer, duration: int) -> float:
    wrk(server.url, 50, 1, BROWSER_HEADERS)  # warm up
    before = cpu_seconds(server)
    cell = wrk(server.url, 50, duration, BROWSER_HEADERS)
    if cell.problems:
        print(f"  ! {server.layer} {server.app}: {cell.problems}", file=sys.stderr)
    return (cpu_seconds(server) - before) / (cell.rps * duration) * 1e6


# --- the run ---------------------------------------------------------------------------------


def probe_limits(layer: str) -> Row:
    row = Row(layer)
    with Layer(layer, "probe") as server:
        row.head_limit = head_limit(server)
    with Layer(layer, "probe") as server:
        row.head_timeout = head_timeout(server)
        row.cap = cap(server)
        row.websocket = websocket(server)
    print(f"  probed {layer}", file=sys.stderr, flush=True)
    return row


def measure_cpu(row: Row, upstream_url: str, duration: int) -> None:
    """One round: the lowest figure of all rounds is kept (the machine's noise only adds)."""
    # Under load the cap stays out of the way: wrk keeps 50 connections open.
    with Layer(row.layer, "probe", cap=CPU_CAP) as server:
        us = cpu_per_request(server, duration)
        row.probe_us = min(row.probe_us, us) if row.probe_us else us
    with Layer(row.layer, "proxy", upstream_url, cap=CPU_CAP) as server:
        us = cpu_per_request(server, duration)
        row.proxy_us = min(row.proxy_us, us) if row.proxy_us else us
    print(f"  measured {row.layer}", file=sys.stderr, flush=True)


def print_rows(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\nLimits asked of every layer: 64 KiB heads, {HEAD_TIMEOUT:g} s per head, {CAP} at a "
        f"time. CPU: wrk c=50, 12 browser headers, {args.duration} s, server processes only, "
        f"best of {args.rounds} rounds.\n"
    )
    cols = ("layer", "48 MiB head", "half a head", f"{2 * CAP} slow requests", "WS")
    widths = (24, 34, 16, 32, 4)
    print("".join(f"{c:<{w}}" for c, w in zip(cols, widths, strict=True)), end="")
    print(f"{'us/req app':>11}{'us/req proxy':>13}")
    for r in rows:
        cells = (r.layer, r.head_limit, r.head_timeout, r.cap, r.websocket)
        print("".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)), end="")
        print(f"{r.probe_us:>11.1f}{r.proxy_us:>13.1f}")
    print("us/req app: a do-nothing ASGI app; us/req proxy: consent-proxy forwarding to nginx")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk cell")
    parser.add_argument("--rounds", type=int, default=2, help="CPU rounds; the best is kept")
    parser.add_argument("--layers", default=",".join(LAYERS), help="which layers, in order")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    print("server layers for the public listener")
    for line in machine_lines(["uvicorn", "httptools", "h11", "hypercorn", "granian", "uvloop"]):
        print(line)
    rows = []
    for layer in args.layers.split(","):
        if layer in NEEDS and find_spec(NEEDS[layer]) is None:
            print(f"  note: {layer} is not installed: no row", file=sys.stderr)
            continue
        rows.append(probe_limits(layer))
    with fixed_upstream() as upstream:
        for _ in range(args.rounds):  # interleaved, so that drift hits every layer alike
            for row in rows:
                measure_cpu(row, upstream.url, args.duration)
    print_rows(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
