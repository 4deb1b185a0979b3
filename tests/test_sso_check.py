"""`consent-proxy check` on oidc endpoints that cannot fire: a form_post endpoint that the
proxy saw receive GETs (an app on the code flow), and what the config alone tells."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from .servers import ProxyProcess, ThreadServer, running
from .sso_app import SsoApp
from .stored import session_settings

ISSUER = "https://idp.example"


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )


def config_for(work: Path, upstream: str, **endpoint: Any) -> dict[str, Any]:
    return {
        "upstream": {"url": upstream},
        "session": session_settings(),
        "store": {"path": str(work / "store.sqlite3")},
        "sso": {
            "endpoints": [
                {"type": "oidc", "path": "/oidc/callback", "issuer": ISSUER,
                 "audience": "app", **endpoint}
            ]
        },
    }  # fmt: skip


def test_check_warns_when_a_form_post_endpoint_only_receives_gets(tmp_path: Path) -> None:
    with running(ThreadServer(SsoApp().app())) as upstream:
        proxy = ProxyProcess(config_for(tmp_path, upstream.url), tmp_path)
        first = check(proxy.config_path)
        assert first.returncode == 0 and "warning" not in first.stderr
        with running(proxy):
            for _ in range(2):
                httpx.get(f"{proxy.url}/oidc/callback?code=abc&state=xyz")
        assert "the watcher fires only on a POSTed id_token" in proxy.logs()
    result = check(proxy.config_path)
    assert result.returncode == 0  # a warning, not a failure
    assert "expects an id_token POSTed (form_post)" in result.stderr
    assert "saw 2 GET request(s) there (2 with ?code=" in result.stderr
    assert "needs `silent`" in result.stderr


def test_check_warns_about_a_tenant_issuer_open_to_every_tenant(tmp_path: Path) -> None:
    config = config_for(
        tmp_path,
        "http://127.0.0.1:1",
        issuer="https://login.microsoftonline.com/{tenantid}/v2.0",
        discovery_url="https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration",
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = check(path)
    assert result.returncode == 0
    assert "accepts a sign-in from any Entra tenant" in result.stderr
    assert not (tmp_path / "store.sqlite3").exists()  # check makes no store
    config["sso"]["endpoints"][0]["tenants"] = ["0c0ffee0-0000-4000-8000-00000000abcd"]
    path.write_text(yaml.safe_dump(config))
    assert "warning" not in check(path).stderr
