"""`MicrosoftStandIn`: the stand-in's state and knobs, served as one Starlette app by its
endpoint families.

It serves, under `{base}/{tenant}/` (a tenant id, a verified domain, `organizations`,
`common`): v2 discovery and keys, `oauth2/v2.0/authorize` (consent page, "Need admin
approval", decline, prompt=none), `oauth2/v2.0/token` (authorization_code with PKCE and a
secret or a certificate assertion, refresh_token with rotation) and `v2.0/adminconsent`;
and a tiny Graph (`{base}/graph/v1.0/me/events`, `/me/contacts`). Errors have Microsoft's
shape: `error`, `error_description` starting "AADSTSnnnn: ", `error_codes`, `timestamp`,
`trace_id`, `correlation_id`.

msal only talks to https authorities: serve it over TLS (tests use a trustme CA). msal's
instance discovery (`/common/discovery/instance`) is not served: it always goes to
login.microsoftonline.com for a host msal does not know, so clients of the stand-in set
`instance_discovery=False` (the proxy always does).

Where it knowingly differs from Microsoft: a refresh token dies when it is redeemed (Entra
keeps the old one valid; killing it makes a double refresh visible), and anyone can pick
any demo user (there are no passwords). Knobs are plain methods and attributes; tests run
the stand-in in-process and change them between requests. Built on `DemoOpenIdProvider`,
whose keys sign every token and are published as the JWKS.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from proxy.demo.microsoft.admin_consent import AdminConsent
from proxy.demo.microsoft.authorize import Authorize
from proxy.demo.microsoft.discovery import Discovery
from proxy.demo.microsoft.graph import Graph
from proxy.demo.microsoft.state import StandInState
from proxy.demo.microsoft.token import Token


class MicrosoftStandIn(StandInState):
    """Entra ID for tests and the demo. State and knobs:

    - `grant_user_consent`, `grant_admin_consent`, `revoke_consent`: consent grants;
      `set_user_consent(tenant, allowed)`: the tenant's user consent setting;
    - `revoke_user(email)`: every refresh token of the user dies (password reset);
      `expire_refresh_tokens(email)`; `require_mfa(email)`; `block(email)` (Conditional
      Access);
    - `fail_token_requests(n, status=503, retry_after=None)`: the next n token calls fail;
    - `expire_secret(client_id)`: its secrets answer AADSTS7000222;
    - `access_token_lifetime`, `code_lifetime`, `refresh_token_lifetime` (seconds);
      `clock` (a `time.time` stand-in, to age codes and tokens); `outage` (discovery and
      keys answer 503); `add_app(app)`;
    - counters: `refresh_redemptions[email]` (refresh-token redemptions attempted),
      `token_requests`, `discovery_fetches`, `jwks_fetches`;
    - `reset()`: back to the state it was created with.
    """

    def app(self) -> Starlette:
        tenant = f"{self.prefix}/{{tenant}}"
        both = ["GET", "POST"]
        discovery = Discovery(self)
        return Starlette(
            routes=[
                Route(f"{tenant}/v2.0/.well-known/openid-configuration", discovery.configuration),
                Route(f"{tenant}/discovery/v2.0/keys", discovery.keys),
                Route(f"{tenant}/oauth2/v2.0/authorize", Authorize(self).handle, methods=both),
                Route(f"{tenant}/oauth2/v2.0/token", Token(self).handle, methods=["POST"]),
                Route(f"{tenant}/v2.0/adminconsent", AdminConsent(self).handle, methods=both),
                Route(f"{self.prefix}/graph/v1.0/me/{{kind:str}}", Graph(self).handle),
            ]
        )
