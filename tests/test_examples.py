"""The ingress examples in examples/: each one is exercised by a test or says why not, and
each one passes on exactly the headers consent-proxy sets (the untested ones included)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import HeaderNames

ROOT = Path(__file__).resolve().parent.parent
INGRESSES = ("nginx", "caddy", "traefik", "envoy", "ingress-nginx")  # one folder each
EXAMPLES = sorted(
    p for name in INGRESSES for p in (ROOT / "examples" / name).rglob("*") if p.is_file()
)
OURS = {name.lower() for name in HeaderNames().model_dump().values()}
TESTS = "\n".join(p.read_text() for p in (ROOT / "tests").glob("*.py"))


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def mentioned(text: str) -> set[str]:
    """Every header name of ours the file mentions, also as nginx `$upstream_http_...`."""
    found = re.findall(r"x[-_]consent[-_]proxy[-_][a-z_-]*[a-z]", text, flags=re.IGNORECASE)
    return {name.lower().replace("_", "-") for name in found}


def test_there_is_an_example_for_each_ingress() -> None:
    names = {relative(p) for p in EXAMPLES}
    assert {
        "examples/nginx/consent-proxy.conf",
        "examples/caddy/Caddyfile",
        "examples/traefik/consent-proxy.yml",
        "examples/envoy/envoy.yaml",
        "examples/ingress-nginx/ingress.yaml",
    } <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=relative)
def test_each_example_is_tested_or_says_why_not(example: Path) -> None:
    text = example.read_text()
    if "UNTESTED here:" in text:
        reason = text.split("UNTESTED here:", 1)[1].split("\n\n", 1)[0]
        assert "not packaged" in reason or "no Kubernetes" in reason
    else:
        tested_by = re.search(r"Exercised by (tests/test_\w+\.py)", text)
        assert tested_by, f"{relative(example)} names neither its test nor why it has none"
        assert (ROOT / tested_by[1]).exists()
        assert example.relative_to(ROOT / "examples").parts[0] in TESTS


@pytest.mark.parametrize("example", EXAMPLES, ids=relative)
def test_each_example_names_exactly_our_headers(example: Path) -> None:
    assert mentioned(example.read_text()) == OURS


def lower(names: Any) -> set[str]:
    return {str(n).lower() for n in names}


def test_traefik_copies_and_strips_our_headers() -> None:
    config = yaml.safe_load((ROOT / "examples/traefik/consent-proxy.yml").read_text())
    middlewares = config["http"]["middlewares"]
    assert lower(middlewares["consent-proxy"]["forwardAuth"]["authResponseHeaders"]) == OURS
    stripped = middlewares["consent-proxy-strip"]["headers"]["customRequestHeaders"]
    original = {"x-original-uri", "x-original-url", "x-original-method"}  # Traefik's word only
    assert lower(stripped) == OURS | original and set(stripped.values()) == {""}
    assert config["http"]["routers"]["app"]["middlewares"] == [
        "consent-proxy-strip",
        "consent-proxy",
    ]


def test_envoy_copies_and_strips_our_headers() -> None:
    config = yaml.safe_load((ROOT / "examples/envoy/envoy.yaml").read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = {f["name"]: f["typed_config"] for f in manager["typed_config"]["http_filters"]}
    removed = filters["envoy.filters.http.header_mutation"]["mutations"]["request_mutations"]
    assert lower(m["remove"] for m in removed) == OURS
    authz = filters["envoy.filters.http.ext_authz"]
    allowed = authz["http_service"]["authorization_response"]["allowed_upstream_headers"]
    assert lower(p["exact"] for p in allowed["patterns"]) == OURS
    assert authz["failure_mode_allow"] is True
    order = list(filters)
    assert order.index("envoy.filters.http.header_mutation") < order.index(
        "envoy.filters.http.ext_authz"
    )


def test_ingress_nginx_copies_our_headers_and_hides_the_auth_endpoint() -> None:
    app, proxy = yaml.safe_load_all((ROOT / "examples/ingress-nginx/ingress.yaml").read_text())
    annotations = app["metadata"]["annotations"]
    copied = annotations["nginx.ingress.kubernetes.io/auth-response-headers"].split(",")
    assert lower(n.strip() for n in copied) == OURS
    assert annotations["nginx.ingress.kubernetes.io/auth-url"].endswith("/.consent-proxy/auth")
    paths = [p["path"] for p in proxy["spec"]["rules"][0]["http"]["paths"]]
    assert all(p["pathType"] == "Exact" for p in proxy["spec"]["rules"][0]["http"]["paths"])
    assert "/.consent-proxy/auth" not in paths
