"""Running the proxy under uvicorn, with the settings that keep it transparent and fast."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import uvicorn

from .app import create_app
from .config import CONFIG_ENV, Settings


def uvicorn_options(host: str, port: int, log_level: str) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "log_level": log_level,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools",
        "ws": "websockets-sansio",
        "lifespan": "on",
        # The proxy decides itself whom to believe about X-Forwarded-* (headers.py).
        "proxy_headers": False,
        # The upstream's own Server and Date headers pass through; no second copies.
        "server_header": False,
        "date_header": False,
        "access_log": False,
        "log_config": None,
    }


def serve(settings: Settings, config_path: Path | None, host: str, port: int, workers: int) -> None:
    options = uvicorn_options(host, port, settings.logging.level)
    if workers > 1:
        if config_path is None:
            raise ValueError("several workers need the config as a file")
        # Each worker process loads the (already validated) file itself.
        os.environ[CONFIG_ENV] = str(config_path.resolve())
        uvicorn.run("proxy.app:create_app", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
