"""Behind an ingress: the forward-auth endpoint (`<consent.prefix>auth`) that nginx
auth_request, Caddy forward_auth, Traefik forwardAuth and Envoy ext_authz ask."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from proxy.config.values import StrictModel


class ForwardAuthSettings(StrictModel):
    """The ingress carries the bytes; the proxy answers who the user is."""

    enabled: bool = False
    # How long the ingress may reuse an answer (Cache-Control max-age) for a connected user;
    # never longer than the token's expiry minus tokens.refresh_leeway, nor than a quarter
    # of the assertion's lifetime. Also the bound within which a disconnect is noticed.
    max_age: Annotated[float, Field(ge=0, le=300)] = 30.0
    # ...for a browser that is anonymous or not connected: a connection made a moment ago
    # reaches the app at most this late.
    unconnected_max_age: Annotated[float, Field(ge=0, le=60)] = 2.0
