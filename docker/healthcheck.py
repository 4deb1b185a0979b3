"""The image's HEALTHCHECK: GET /healthz on the ops listener that the config names.

It reads the `ops` section of the config file in $CONSENT_PROXY_CONFIG with the proxy's own
model and defaults, so the check follows `ops.port` and `ops.host` wherever they are set.
Exit status 0: healthy; 1: unhealthy, with the reason on stdout (`docker inspect` shows it).
"""

from __future__ import annotations

import os
import sys
import urllib.request

from proxy.config import CONFIG_ENV, OpsSettings, read_yaml_file, validate_model
from proxy.errors import ConfigError

TIMEOUT = 3.0
# A listener on every address is asked on the loopback address of its family.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # noqa: S104


def health_url(config_path: str) -> str:
    """The ops listener's /healthz; ConfigError when the config names none."""
    data = read_yaml_file(config_path)
    section = data.get("ops") if isinstance(data, dict) else None
    ops = validate_model(OpsSettings, section or {}, config_path)
    if ops.port == 0:
        raise ConfigError(["ops.port is 0: there is no ops listener to ask"], config_path)
    host = LOOPBACK.get(ops.host, ops.host)
    netloc = f"[{host}]:{ops.port}" if ":" in host else f"{host}:{ops.port}"
    return f"http://{netloc}/healthz"


def main() -> int:
    config_path = os.environ.get(CONFIG_ENV)
    if not config_path:
        print(f"unhealthy: {CONFIG_ENV} is not set, so the ops listener is unknown")
        return 1
    try:
        url = health_url(config_path)
    except ConfigError as exc:
        print(f"unhealthy: {exc.description}")
        return 1
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 (http://)
            print(f"healthy: {url} answered {response.status}")
            return 0
    except OSError as exc:  # refused, timed out, or an HTTP error status
        print(f"unhealthy: {url}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
