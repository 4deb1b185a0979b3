"""The Grafana dashboard in examples/grafana/ asks only for metrics (and labels) the proxy
exports: a renamed metric must not leave an empty panel behind."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from proxy.ops import metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "examples" / "grafana" / "consent-proxy.json"
NAME = re.compile(r"\bconsent_proxy_[a-z_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Every sample name the registry exposes, with the labels it carries."""
    found: dict[str, set[str]] = {}
    # prometheus_client has no public way to list collectors with their label names.
    for collector in metrics.REGISTRY._collector_to_names:
        for family in collector.describe():
            labels = set(getattr(collector, "_labelnames", ()))
            for suffix in SUFFIXES.get(family.type, ("",)):
                found[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found


def expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_metric_the_dashboard_names_exists() -> None:
    known = exported()
    named = {name for expr in expressions() for name in NAME.findall(expr)}
    assert named, "the dashboard names no metric"
    assert named <= set(known), sorted(named - set(known))


def test_every_label_the_dashboard_uses_exists() -> None:
    known = exported()
    for expr in expressions():
        names = NAME.findall(expr)
        labels = set(re.findall(r"by \(([a-z_, ]+)\)", expr))
        labels = {part.strip() for group in labels for part in group.split(",")}
        labels |= set(re.findall(r"([a-z_]+)=\"", expr))
        have = set().union(*(known[name] for name in names))
        assert labels <= have, (expr, sorted(labels - have))


def test_the_dashboard_is_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "consent-proxy" and dashboard["panels"]
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
