"""The demo side of examples/compose.yaml: `consent-proxy demo` without its proxy.

Serves the demo app, the demo SAML IdP and the Microsoft stand-in exactly as the demo
does, and writes the demo's proxy config, with Redis as the store, to
$DEMO_FOLDER/config.yaml, where the compose file's proxy service reads it. The file is
written once everything listens, so its presence means "ready" (the service's health
check). Its secrets are the demo's own, made at start-up: a demo, not a deployment.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from proxy.config import Secret
from proxy.demo.run import Demo, build_demo
from proxy.ops.logs import setup_logging
from proxy.server import uvicorn_options

FOLDER = Path(os.environ.get("DEMO_FOLDER", "/var/lib/consent-proxy/demo"))
PROXY_PORT = int(os.environ.get("DEMO_PROXY_PORT", "8080"))
REDIS_URL = os.environ.get("DEMO_REDIS_URL", "redis://127.0.0.1:6380/0")


def revealed(value: Any) -> Any:
    """Settings as config data, secrets included (the model's own dump masks them)."""
    if isinstance(value, Secret):
        return {"value": value.reveal()}
    if isinstance(value, BaseModel):
        fields = {name: getattr(value, name) for name in type(value).model_fields}
        return {name: revealed(field) for name, field in fields.items() if field is not None}
    if isinstance(value, dict):
        return {key: revealed(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [revealed(item) for item in value]
    return to_jsonable_python(value)


def proxy_config(demo: Demo) -> dict[str, Any]:
    config: dict[str, Any] = revealed(demo.proxy.settings)
    config["store"] = {"type": "redis", "url": REDIS_URL}
    return config


async def serve(demo: Demo) -> None:
    servers = [
        uvicorn.Server(uvicorn.Config(app, **uvicorn_options("127.0.0.1", port, "info"), **extra))
        for _, app, port, extra in demo.servers
    ]
    running = [asyncio.ensure_future(server.serve()) for server in servers]
    while not all(server.started for server in servers):
        if any(task.done() for task in running):
            await asyncio.gather(*running)  # a server that could not start says why
            raise SystemExit(1)
        await asyncio.sleep(0.05)
    config, partial = FOLDER / "config.yaml", FOLDER / "config.yaml.partial"
    partial.touch(mode=0o600)  # it holds the demo's secrets
    partial.write_text(yaml.safe_dump(proxy_config(demo), sort_keys=False))
    partial.replace(config)  # whole or absent: its presence is the health check
    print(f"demo side ready: the proxy reads {config}; open {demo.public_url}/", flush=True)
    await asyncio.gather(*running)


def main() -> int:
    setup_logging("info", "auto")  # JSON lines in a container, as the proxy's
    FOLDER.mkdir(parents=True, exist_ok=True)
    for stale in ("config.yaml", "config.yaml.partial"):  # not ready until written anew
        (FOLDER / stale).unlink(missing_ok=True)
    asyncio.run(serve(build_demo(FOLDER, PROXY_PORT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
