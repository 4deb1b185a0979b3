"""Where consent-proxy spends its time per request: py-spy samples it under wrk load.

Starts the fixed upstream and `consent-proxy run` (1 worker), drives it with wrk at
concurrency 50 (browser-like headers), samples the proxy with py-spy, and prints the
functions with the most samples, by self time and inclusive time. Time in a system call
is counted to the Python function that made it (e.g. a socket write shows up as
`RequestResponseCycle.send`) unless `--native` is given, which unwinds into C as well
(and slows the proxy down more).

Usage: python bench/profile_proxy.py [--seconds 10] [--native] [--stacks FILE]
Needs wrk and py-spy (pip install py-spy); py-spy needs ptrace rights (root, or
kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from passthrough import BROWSER_HEADERS, wrk
from servers import ConsentProxy, fixed_upstream, start_report

_FRAME = re.compile(r"(?P<fn>.*?) \((?P<path>.*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = re.sub(r".*site-packages/", "", match["path"])
    path = re.sub(r".*/lib/python3\.\d+/", "", path)
    path = re.sub(r".*/(?=proxy/)", "", path)
    return f"{match['fn']} ({path})"


def summarise(stacks: Path, top: int) -> None:
    """Print self and inclusive sample shares from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        print("py-spy recorded no samples")
        return
    print(f"\n{total} samples\n\nself time (the function itself, or a system call it made)")
    for frame, n in own.most_common(top):
        print(f"{n / total:7.1%}  {frame}")
    print("\ninclusive time (the function and everything it called)")
    for frame, n in inclusive.most_common(top + 8):
        print(f"{n / total:7.1%}  {frame}")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="how long to sample")
    parser.add_argument("--rate", type=int, default=400, help="samples per second")
    parser.add_argument("--native", action="store_true", help="unwind into C code too")
    parser.add_argument("--top", type=int, default=30, help="how many functions to list")
    parser.add_argument("--stacks", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    start_report(["consent-proxy", "uvicorn", "uvloop", "httptools", "py-spy"])
    spy = py_spy()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        stacks = args.stacks or Path(tmp) / "stacks.txt"
        with fixed_upstream() as upstream, ConsentProxy(upstream.url) as proxy:
            wrk(proxy.url, 50, 2, BROWSER_HEADERS)  # warm up
            load = subprocess.Popen(
                ["wrk", "-t2", "-c50", f"-d{args.seconds + 3}s", proxy.url]
                + [arg for header in BROWSER_HEADERS for arg in ("-H", header)],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                record = [spy, "record", "-p", str(proxy.pid), "-d", str(args.seconds)]
                record += ["-r", str(args.rate), "-f", "raw", "-o", str(stacks)]
                record += ["--native"] if args.native else []
                subprocess.run(record, check=True, capture_output=True, timeout=args.seconds + 60)
            finally:
                out, _ = load.communicate(timeout=args.seconds + 60)
        rate = re.search(r"Requests/sec:\s+(\S+)", out)
        print(f"\nwrk c=50 while sampling: {rate[1] if rate else '?'} requests/s")
        summarise(stacks, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
