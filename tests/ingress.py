"""The real ingresses of the forward-auth tests: Debian's nginx and Caddy, started with the
files shipped in examples/ (only addresses and paths replaced), in front of the consent
journey's app, proxy and Microsoft stand-in."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .servers import free_port, terminate, wait_for_port
from .test_consent import Env, Person, consent_env

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# The addresses the shipped examples name, replaced by the tests' own.
APP, PROXY = "127.0.0.1:3000", "127.0.0.1:8080"

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CADDY = shutil.which("caddy") or "/usr/bin/caddy"


def need(binary: str) -> None:
    if not Path(binary).exists():
        pytest.fail(f"{binary} is not installed (.ci/run installs it with apt-get)")


@dataclass
class Ingress:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        terminate(self.proc)


def addresses(text: str, app: str, proxy: str) -> str:
    return text.replace(APP, app).replace(PROXY, proxy)


Edit = Callable[[str], str]


def nginx_config(work: Path, port: int, app: str, proxy: str, edit: Edit | None = None) -> Path:
    """nginx.conf for an unprivileged nginx that includes the shipped file (changed by
    `edit` after the addresses, for the benchmarks' variants)."""
    shipped = (EXAMPLES / "nginx" / "consent-proxy.conf").read_text()
    site = addresses(shipped, app, proxy)
    site = edit(site) if edit is not None else site
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("/var/cache/nginx/consent-proxy", str(work / "auth-cache"))
    (work / "consent-proxy.conf").write_text(site)
    temp = (
        "\n".join(
            f"  {kind}_temp_path {work / kind};" for kind in ("client_body", "proxy", "fastcgi")
        )
        + f"\n  uwsgi_temp_path {work / 'uwsgi'};\n  scgi_temp_path {work / 'scgi'};"
    )
    main = work / "nginx.conf"
    # As root, nginx's workers would switch to `nobody`, who may not write the cache here.
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    main.write_text(
        (f"user {user} {group};\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {work / 'nginx.pid'};\n"
        f"error_log {work / 'error.log'} warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log off;\n{temp}\n  include {work / 'consent-proxy.conf'};\n}}\n"
    )
    return main


def start_nginx(work: Path, port: int, app: str, proxy: str, edit: Edit | None = None) -> Ingress:
    need(NGINX)
    work.mkdir(parents=True, exist_ok=True)
    conf = nginx_config(work, port, app, proxy, edit)
    log = work / "error.log"
    proc = subprocess.Popen(
        [NGINX, "-p", str(work), "-c", str(conf), "-e", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, proc=proc)
    return Ingress(port, proc, log)


def start_caddy(work: Path, port: int, app: str, proxy: str) -> Ingress:
    need(CADDY)
    work.mkdir(parents=True, exist_ok=True)
    shipped = (EXAMPLES / "caddy" / "Caddyfile").read_text()
    site = addresses(shipped, app, proxy).replace("http://:80", f"http://127.0.0.1:{port}")
    (work / "site.caddy").write_text(site)
    conf = work / "Caddyfile"
    conf.write_text(f"{{\n\tadmin off\n\tauto_https off\n}}\n\nimport {work / 'site.caddy'}\n")
    log = work / "caddy.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [CADDY, "run", "--config", str(conf), "--adapter", "caddyfile"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"HOME": str(work), "XDG_DATA_HOME": str(work), "XDG_CONFIG_HOME": str(work)},
        )
    wait_for_port(port, proc=proc)
    return Ingress(port, proc, log)


def upstream_address(env: Env) -> str:
    config: dict[str, Any] = yaml.safe_load(env.proxy.config_path.read_text())
    return str(config["upstream"]["url"]).removeprefix("http://")


@contextlib.contextmanager
def behind(kind: str, work: Path, **extra: Any) -> Iterator[tuple[Env, Ingress]]:
    """The consent journey's servers with `kind` (nginx | caddy) in front, running the
    shipped example; `extra` adds to the proxy's config."""
    port = free_port()
    forward_auth = {"enabled": True, **extra.pop("forward_auth", {})}
    with consent_env(
        work,
        public_url=f"http://127.0.0.1:{port}",
        trusted_proxies=["127.0.0.1/32"],
        forward_auth=forward_auth,
        **extra,
    ) as env:
        app, proxy = upstream_address(env), f"127.0.0.1:{env.proxy.port}"
        start = start_nginx if kind == "nginx" else start_caddy
        ingress = start(work / kind, port, app, proxy)
        try:
            yield env, ingress
        finally:
            ingress.stop()


@contextlib.contextmanager
def fresh_browser(env: Env) -> Iterator[Person]:
    """A new browser, against a wiped store and a reset Microsoft stand-in."""
    env.wipe()
    env.standin.reset()
    person = Person(env)
    try:
        yield person
    finally:
        person.close()
