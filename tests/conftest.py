"""The fixtures every test module may ask for, registered here; each is defined, with the
helpers around it, in a module of tests/fixtures/."""

from __future__ import annotations

from .fixtures.chromium import chromium
from .fixtures.demo import demo
from .fixtures.forwarding import (
    client,
    dead_port,
    host_rewriting_proxy,
    proxies,
    proxy,
    raw_upstream,
    refused_proxy,
    tag,
    trusting_proxy,
    upstream,
    upstream_app,
)
from .fixtures.standin import browser, live, standin
from .fixtures.state import state_dir

__all__ = [
    "browser",
    "chromium",
    "client",
    "dead_port",
    "demo",
    "host_rewriting_proxy",
    "live",
    "proxies",
    "proxy",
    "raw_upstream",
    "refused_proxy",
    "standin",
    "state_dir",
    "tag",
    "trusting_proxy",
    "upstream",
    "upstream_app",
]
