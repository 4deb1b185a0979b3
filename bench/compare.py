"""CPU us/request of consent-proxy from two checkouts, in interleaved rounds.

On a shared machine two runs of passthrough.py cannot be compared, and even rows of one
run drift; rounds that alternate between the two versions let the drift hit both alike.
Each round starts each proxy (1 worker) in front of the fixed upstream, warms it up, and
measures wrk at c=50 (12 browser headers) for `--duration` seconds.

Usage: git archive REV | tar -x -C DIR && python bench/compare.py DIR [--rounds 6]
(DIR is the baseline; this checkout is the other.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from passthrough import BROWSER_HEADERS, cpu_seconds, wrk
from servers import ConsentProxy, exit_on_sigterm, fixed_upstream, machine_lines


def cpu_per_request(upstream_url: str, source: Path | None, duration: int) -> float:
    with ConsentProxy(upstream_url, 1, source) as proxy:
        wrk(proxy.url, 50, 1, BROWSER_HEADERS)
        before = cpu_seconds(proxy)
        cell = wrk(proxy.url, 50, duration, BROWSER_HEADERS)
        return (cpu_seconds(proxy) - before) / (cell.rps * duration) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="the other checkout's folder")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=int, default=3, help="seconds per measurement")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    for line in machine_lines(["consent-proxy", "uvicorn", "uvloop", "httptools"]):
        print(line)
    sources = {"this checkout": None, f"baseline {args.baseline}": args.baseline}
    figures: dict[str, list[float]] = {name: [] for name in sources}
    with fixed_upstream() as upstream:
        for n in range(args.rounds):
            for name, source in sources.items():
                figures[name].append(cpu_per_request(upstream.url, source, args.duration))
                print(f"  round {n + 1}: {name}: {figures[name][-1]:.1f}", file=sys.stderr)
    print(f"\nCPU us/request at c=50, {args.rounds} interleaved rounds\n")
    print(f"{'proxy':<40}{'best':>8}{'median':>8}")
    for name, values in figures.items():
        print(f"{name:<40}{min(values):>8.1f}{statistics.median(values):>8.1f}")
    ours, theirs = figures.values()
    lower = sum(a < b for a, b in zip(ours, theirs, strict=True))
    print(f"this checkout lower in {lower} of {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
