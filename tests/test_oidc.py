"""OIDC id_token verification against a real IdP: the demo provider over HTTPS, its keys
fetched by the verifier through discovery and JWKS with httpx, trusting a test CA."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from proxy.config import OidcEndpoint, settings_from_data
from proxy.demo.oidc_provider import DemoOpenIdProvider
from proxy.demo.users import DemoUser
from proxy.errors import ConfigError
from proxy.identity.sso import SignIn, SignInRejected
from proxy.identity.sso.jwks import DEFAULT_JWKS_TTL, JwksCache, http_client_for
from proxy.identity.sso.oidc import OidcVerifier

from .fixtures.pages import hidden_fields
from .jose import b64url, claims_of
from .servers import ThreadServer, free_port
from .tls import client_context, https_server, https_url

CLIENT_ID = "demo-app"
CALLBACK = "https://app.example/oidc/callback"
TENANT_ID = "5e7d1a3c-0d6f-4b8a-9c21-7f00de000001"
# Users of these tests' own: the assertions below name them.
ALICE = DemoUser(
    "alice",
    "alice@example.com",
    "Alice Adams",
    ("staff", "calendar-users"),
    TENANT_ID,
    "0a11ce00-0000-4000-8000-000000000001",
)
BOB = DemoUser(
    "bob",
    "bob@example.com",
    "Bob Brown",
    ("staff",),
    TENANT_ID,
    "00000b0b-0000-4000-8000-000000000002",
)
USERS = (ALICE, BOB)
T = TypeVar("T")


@dataclass
class Idp:
    provider: DemoOpenIdProvider
    server: ThreadServer
    ca_file: Path

    @property
    def issuer(self) -> str:
        return self.provider.issuer


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[Idp]:
    port = free_port()
    provider = DemoOpenIdProvider(f"https://127.0.0.1:{port}", USERS, [CALLBACK])
    server, ca_file = https_server(provider.app(), tmp_path, port=port)
    server.start()
    try:
        yield Idp(provider, server, ca_file)
    finally:
        server.stop()


class FakeClock:
    """The JWKS cache's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def endpoint(idp: Idp, **overrides: Any) -> OidcEndpoint:
    fields = {
        "type": "oidc",
        "path": "/oidc/callback",
        "issuer": idp.issuer,
        "audience": CLIENT_ID,
        "ca_file": idp.ca_file,
        "attributes": ["groups"],
        **overrides,
    }
    return OidcEndpoint.model_validate(fields)


def run(
    config: OidcEndpoint,
    work: Callable[[OidcVerifier], Awaitable[T]],
    clock: FakeClock | None = None,
    skew: float = 120.0,
) -> T:
    async def main() -> T:
        async with http_client_for(config) as client:
            keys = JwksCache(config, client, clock=clock or FakeClock())
            return await work(OidcVerifier(config, skew, client, keys=keys))

    return asyncio.run(main())


def verify(
    config: OidcEndpoint, token: str, nonce: str | None = None, skew: float = 120.0
) -> SignIn:
    return run(config, lambda verifier: verifier.verify(token, nonce), skew=skew)


def rejection(
    config: OidcEndpoint, token: str, nonce: str | None = None, skew: float = 120.0
) -> str:
    with pytest.raises(SignInRejected) as caught:
        verify(config, token, nonce, skew)
    return caught.value.description


def segment(value: Any) -> str:
    return b64url(json.dumps(value).encode())


@cache
def stranger_key() -> RSAKey:
    return RSAKey.generate_key(2048, {"use": "sig"})


def stranger_token(provider: DemoOpenIdProvider, kid: str) -> str:
    """A well-formed id_token for `provider`, signed by a key it never published."""
    claims = claims_of(provider.id_token(ALICE, CLIENT_ID))
    return jwt.encode({"alg": "RS256", "kid": kid}, claims, stranger_key())


# --- what a good token says --------------------------------------------------------------


def test_a_good_token_says_who_signed_in(idp: Idp) -> None:
    token = idp.provider.id_token(ALICE, CLIENT_ID, nonce="n-0S6_WzA2Mj")
    claims = claims_of(token)

    sign_in = verify(endpoint(idp), token, nonce="n-0S6_WzA2Mj")

    assert sign_in == SignIn(
        subject="alice",
        email="alice@example.com",
        name="Alice Adams",
        tenant_id=ALICE.tenant_id,
        object_id=ALICE.object_id,
        attributes={"groups": ("staff", "calendar-users")},
        method="oidc",
        issuer=idp.issuer,
        replay_key=claims["jti"],
        replay_until=float(claims["exp"]),
    )


@pytest.mark.parametrize(
    ("identity_claim", "extra", "email"),
    [
        ("upn", {"upn": "bob@corp.example"}, "bob@corp.example"),
        ("upn", {}, "bob@example.com"),  # falls back to email
        ("email", {"email": None}, "bob@example.com"),  # then preferred_username
        ("email", {"email": None, "preferred_username": None}, None),
    ],
)
def test_identity_claim_and_its_fallbacks(
    idp: Idp, identity_claim: str, extra: dict[str, Any], email: str | None
) -> None:
    token = idp.provider.id_token(BOB, CLIENT_ID, extra_claims=extra)
    assert verify(endpoint(idp, identity_claim=identity_claim), token).email == email


def test_claims_the_token_lacks_are_empty_and_the_replay_key_is_the_token_hash(idp: Idp) -> None:
    extra = {"jti": None, "tid": None, "oid": None, "groups": "solo", "roles": ["a", 7, None]}
    token = idp.provider.id_token(BOB, CLIENT_ID, extra_claims=extra)

    sign_in = verify(endpoint(idp, attributes=["groups", "roles", "missing"]), token)

    assert (sign_in.tenant_id, sign_in.object_id) == (None, None)
    assert sign_in.attributes == {"groups": ("solo",), "roles": ("a", "7")}  # "missing": absent
    assert sign_in.replay_key == "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_several_audiences_need_an_authorized_party_that_is_us(idp: Idp) -> None:
    provider, config = idp.provider, endpoint(idp)
    both = [CLIENT_ID, "another-app"]

    ours = provider.id_token(ALICE, CLIENT_ID, extra_claims={"aud": both, "azp": CLIENT_ID})
    assert verify(config, ours).subject == "alice"
    no_azp = provider.id_token(ALICE, CLIENT_ID, extra_claims={"aud": both})
    assert "several audiences and no authorized party" in rejection(config, no_azp)
    theirs = provider.id_token(ALICE, CLIENT_ID, extra_claims={"aud": both, "azp": "another-app"})
    assert "authorized party (azp) 'another-app' is not 'demo-app'" in rejection(config, theirs)


def test_clock_skew_is_tolerated_both_ways(idp: Idp) -> None:
    provider, config = idp.provider, endpoint(idp)
    now = time.time()
    early = provider.id_token(ALICE, CLIENT_ID, extra_claims={"nbf": int(now) + 60})
    late = provider.id_token(ALICE, CLIENT_ID, now=now - 3660, lifetime=3600)

    assert verify(config, early).subject == verify(config, late).subject == "alice"
    assert "not valid yet" in rejection(config, early, skew=0)
    assert "expired" in rejection(config, late, skew=0)


# --- what a bad token gets ---------------------------------------------------------------


def _later(provider: DemoOpenIdProvider) -> str:
    return provider.id_token(ALICE, CLIENT_ID, extra_claims={"nbf": int(time.time()) + 3600})


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(
            lambda p: p.id_token(ALICE, CLIENT_ID, extra_claims={"iss": "https://evil.example"}),
            "issuer 'https://evil.example' is not the configured 'https://127.0.0.1:",
            id="wrong-issuer",
        ),
        pytest.param(
            lambda p: p.id_token(ALICE, "another-app"),
            "audience 'another-app' does not include 'demo-app'",
            id="wrong-audience",
        ),
        pytest.param(
            lambda p: p.id_token(ALICE, CLIENT_ID, now=time.time() - 7200),
            "the token expired",
            id="expired",
        ),
        pytest.param(_later, "the token is not valid yet", id="not-yet-valid"),
        pytest.param(
            lambda p: p.id_token(ALICE, CLIENT_ID, now=time.time() + 3600),
            "issued in the future",
            id="issued-in-the-future",
        ),
        pytest.param(
            lambda p: p.id_token(ALICE, CLIENT_ID, extra_claims={"exp": None}),
            "lacks the required claim(s) exp",
            id="no-exp",
        ),
        pytest.param(
            lambda p: p.id_token(ALICE, CLIENT_ID, extra_claims={"sub": ""}),
            "sub claim is invalid",
            id="empty-sub",
        ),
        pytest.param(
            lambda p: p.id_token(ALICE, CLIENT_ID, extra_claims={"exp": "tomorrow"}),
            "exp claim is invalid",
            id="exp-not-a-number",
        ),
    ],
)
def test_claims_that_do_not_hold_are_rejected(
    idp: Idp, make: Callable[[DemoOpenIdProvider], str], reason: str
) -> None:
    assert reason in rejection(endpoint(idp), make(idp.provider))


def test_the_nonce_must_match_when_the_caller_knows_it(idp: Idp) -> None:
    provider, config = idp.provider, endpoint(idp)
    token = provider.id_token(ALICE, CLIENT_ID, nonce="sent-with-the-request")

    assert "nonce does not match" in rejection(config, token, nonce="another-nonce")
    without = provider.id_token(ALICE, CLIENT_ID)
    assert "nonce does not match" in rejection(config, without, nonce="sent-with-the-request")
    assert verify(config, token).subject == "alice"  # the proxy rarely knows the nonce


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_token_is_rejected(idp: Idp, alg: str) -> None:
    claims = claims_of(idp.provider.id_token(ALICE, CLIENT_ID))
    token = f"{segment({'alg': alg, 'kid': idp.provider.signing_kid})}.{segment(claims)}."
    assert "unsigned (alg 'none')" in rejection(endpoint(idp), token)


def test_hmac_signed_with_the_public_key_is_rejected(idp: Idp) -> None:
    """The classic key confusion: the attacker uses the published RSA key as HMAC secret."""
    provider = idp.provider
    published = provider.jwks()["keys"][0]
    pem = RSAKey.import_key(published).as_pem(private=False)
    claims = claims_of(provider.id_token(ALICE, CLIENT_ID))
    claims["sub"] = "mallory"
    signing_input = f"{segment({'alg': 'HS256', 'kid': published['kid']})}.{segment(claims)}"
    signature = b64url(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())

    reason = rejection(endpoint(idp), f"{signing_input}.{signature}")

    assert "algorithm 'HS256' is not allowed (allowed: RS256, ES256, PS256)" in reason


def test_an_empty_allow_list_is_a_config_error(idp: Idp) -> None:
    """joserfc would fall back to its recommended algorithms (HS256 among them): an empty
    list never reaches the verifier."""
    with pytest.raises(ConfigError) as caught:
        settings_from_data(
            {
                "upstream": {"url": "http://127.0.0.1:1"},
                "session": {"secrets": [{"value": "x" * 32}], "upstream_cookie": "s"},
                "sso": {
                    "endpoints": [
                        {
                            "type": "oidc",
                            "path": "/cb",
                            "issuer": "https://i",
                            "audience": "a",
                            "algorithms": [],
                        }
                    ]
                },
            }
        )
    assert caught.value.problems == [
        "sso.endpoints[0].algorithms: must list at least 1 item(s), got []"
    ]


def test_a_token_signed_by_an_unknown_key_is_rejected(idp: Idp) -> None:
    provider, config = idp.provider, endpoint(idp)

    assert "a key the IdP does not publish (kid 'stranger')" in rejection(
        config, stranger_token(provider, "stranger")
    )
    # The IdP's own kid on a token the IdP did not sign.
    impostor = stranger_token(provider, provider.signing_kid)
    assert "signature does not verify" in rejection(config, impostor)


def test_a_token_without_kid_needs_a_single_published_key(idp: Idp) -> None:
    provider = idp.provider
    _, payload, signature = provider.id_token(ALICE, CLIENT_ID).split(".")
    token = f"{segment({'alg': 'RS256'})}.{payload}.{signature}"
    # One key: it is the one; the header changed, so the signature no longer holds.
    assert "signature does not verify" in rejection(endpoint(idp), token)
    provider.rotate_key()
    assert "names no key (kid) and the IdP publishes 2 keys" in rejection(endpoint(idp), token)


def test_a_tampered_payload_is_rejected(idp: Idp) -> None:
    header, _, signature = idp.provider.id_token(ALICE, CLIENT_ID).split(".")
    claims = claims_of(idp.provider.id_token(ALICE, CLIENT_ID))
    claims["email"] = "mallory@example.com"
    token = f"{header}.{segment(claims)}.{signature}"
    assert "signature does not verify" in rejection(endpoint(idp), token)


GARBAGE = [
    ("", "3 dot-separated parts expected, got 1"),
    ("not-a-token", "3 dot-separated parts expected, got 1"),
    ("a.b", "got 2"),
    ("a.b.c.d", "got 4"),
    ("a.b.c.d.e", "encrypted (JWE)"),
    ("x" * (64 * 1024 + 1), "larger than 64 KiB"),
    ("!!!.e30.c2ln", "header is not base64url"),
    ("eyJ=.e30.c2ln", "header is not base64url"),
    ("é.e30.c2ln", "not ASCII"),
    ("abcde.e30.c2ln", "header is not base64url"),
    (".e30.c2ln", "header is not base64url"),
    (b64url(b"not json") + ".e30.c2ln", "header is not JSON"),
    (b64url(b"\xff\xfe\x00") + ".e30.c2ln", "header is not JSON"),
    (b64url(b"[" * 5000) + ".e30.c2ln", "header is not JSON"),
    (b64url(b'{"alg":"RS256","alg":"none"}') + ".e30.c2ln", "header repeats the member 'alg'"),
    (segment([1, 2]) + ".e30.c2ln", "header is not a JSON object"),
    (segment("alg") + ".e30.c2ln", "header is not a JSON object"),
    (segment({}) + ".e30.c2ln", "names no algorithm"),
    (segment({"alg": ["RS256"]}) + ".e30.c2ln", "names no algorithm"),
    (segment({"alg": "RS256", "kid": 5}) + ".e30.c2ln", "key id (kid) is not a string"),
    (segment({"alg": "RS256", "crit": ["exp"]}) + ".e30.c2ln", "critical header"),
    (segment({"alg": "RS256", "b64": False, "crit": ["b64"]}) + ".e30.c2ln", "critical header"),
    (segment({"alg": "RS256", "pad": "x" * 9000}) + ".e30.c2ln", "header is too large"),
    (segment({"alg": "HS256"}) + ".e30.c2ln", "'HS256' is not allowed"),
    (segment({"alg": "A" * 500}) + ".e30.c2ln", "'AAAAAAAA"),
]


@pytest.mark.parametrize(("token", "reason"), GARBAGE, ids=[str(i) for i in range(len(GARBAGE))])
def test_garbage_gets_a_reason_and_nothing_else(idp: Idp, token: str, reason: str) -> None:
    description = rejection(endpoint(idp), token)
    assert reason in description
    assert len(description) < 300  # echoes of attacker input are cut short


@pytest.mark.parametrize(
    ("payload", "signature", "reason"),
    [
        (b"[1, 2]", None, "payload is not a valid JSON object"),
        (b"not json", None, "payload is not a valid JSON object"),
        (b'{"sub": "alice", "sub": "mallory"}', None, "payload repeats the member 'sub'"),
        (b'{"sub": "alice", "exp": NaN}', None, "payload is not a valid JSON object"),
        (b"[" * 20000 + b"]" * 20000, None, "malformed (RecursionError)"),
        (b"{}", "!!!", "signature does not verify"),
        (b"{}", "", "signature does not verify"),
    ],
)
def test_signed_garbage_gets_a_reason_too(
    idp: Idp, payload: bytes, signature: str | None, reason: str
) -> None:
    token = idp.provider.sign_payload(payload)
    if signature is not None:
        token = token.rsplit(".", 1)[0] + "." + signature
    assert reason in rejection(endpoint(idp), token)


# --- keys: discovery, caching, rotation, outages -----------------------------------------


def test_key_rotation_costs_one_refetch_and_made_up_kids_cost_none(idp: Idp) -> None:
    provider, clock = idp.provider, FakeClock()
    first = provider.id_token(ALICE, CLIENT_ID)

    async def work(verifier: OidcVerifier) -> None:
        await verifier.verify(first)
        await verifier.verify(provider.id_token(BOB, CLIENT_ID))
        assert provider.jwks_fetches == 1

        clock.now += 60  # IdPs rotate long after our last fetch
        old = provider.signing_kid
        provider.rotate_key()
        assert (await verifier.verify(provider.id_token(BOB, CLIENT_ID))).subject == "bob"
        assert provider.jwks_fetches == 2
        assert (await verifier.verify(provider.id_token(ALICE, CLIENT_ID, kid=old))).subject
        assert provider.jwks_fetches == 2

        for i in range(5):
            with pytest.raises(SignInRejected, match="does not publish"):
                await verifier.verify(stranger_token(provider, f"made-up-{i}"))
        assert provider.jwks_fetches == 2  # rate-limited: within 30 s of the last fetch

        clock.now += 31
        with pytest.raises(SignInRejected, match="does not publish"):
            await verifier.verify(stranger_token(provider, "made-up-later"))
        assert provider.jwks_fetches == 3
        with pytest.raises(SignInRejected, match="does not publish"):
            await verifier.verify(stranger_token(provider, "made-up-again"))
        assert provider.jwks_fetches == 3
        assert provider.discovery_fetches == 1
        assert verifier.keys.fetches == 3

    run(endpoint(idp), work, clock)


def test_a_retired_key_stops_verifying_when_the_keys_expire(idp: Idp) -> None:
    provider, clock = idp.provider, FakeClock()
    old_token = provider.id_token(ALICE, CLIENT_ID)

    async def work(verifier: OidcVerifier) -> None:
        await verifier.verify(old_token)
        old = provider.signing_kid
        provider.rotate_key()
        provider.remove_key(old)
        await verifier.verify(old_token)  # still cached
        clock.now += DEFAULT_JWKS_TTL
        with pytest.raises(SignInRejected, match="does not publish"):
            await verifier.verify(old_token)
        assert provider.jwks_fetches == 2

    run(endpoint(idp), work, clock)


def test_concurrent_sign_ins_share_one_fetch(idp: Idp) -> None:
    provider = idp.provider
    tokens = [provider.id_token(ALICE, CLIENT_ID) for _ in range(20)]

    async def work(verifier: OidcVerifier) -> list[SignIn]:
        return await asyncio.gather(*(verifier.verify(t) for t in tokens))

    assert {s.subject for s in run(endpoint(idp), work)} == {"alice"}
    assert (provider.discovery_fetches, provider.jwks_fetches) == (1, 1)


def test_an_outage_is_not_cached_and_known_keys_outlive_it(idp: Idp) -> None:
    provider, clock = idp.provider, FakeClock()
    token = provider.id_token(ALICE, CLIENT_ID)
    provider.outage = True

    async def work(verifier: OidcVerifier) -> None:
        with pytest.raises(
            SignInRejected, match=r"the discovery document at https://.* answered 503"
        ):
            await verifier.verify(token)
        with pytest.raises(SignInRejected, match=r"answered 503 \(failed 0 s ago\)"):
            await verifier.verify(token)  # a burst shares the failure
        assert provider.discovery_fetches == 1

        provider.outage = False
        clock.now += 5
        assert (await verifier.verify(token)).subject == "alice"
        assert (provider.discovery_fetches, provider.jwks_fetches) == (2, 1)

        provider.outage = True
        clock.now += DEFAULT_JWKS_TTL
        assert (await verifier.verify(token)).subject == "alice"  # stale keys, still good
        assert provider.jwks_fetches == 2
        with pytest.raises(SignInRejected, match=r"JWKS at .* answered 503 \(failed 0 s ago\)"):
            await verifier.verify(stranger_token(provider, "new-during-outage"))
        assert provider.jwks_fetches == 2

    run(endpoint(idp), work, clock)


def test_the_discovery_document_must_name_our_issuer(idp: Idp) -> None:
    config = endpoint(
        idp,
        issuer=f"{idp.issuer}/other-tenant",
        discovery_url=f"{idp.issuer}/.well-known/openid-configuration",
    )
    reason = rejection(config, idp.provider.id_token(ALICE, CLIENT_ID))
    assert f"names the issuer '{idp.issuer}', not the configured '{idp.issuer}/other-tenant'" in (
        reason
    )
    assert idp.provider.jwks_fetches == 0


def test_jwks_url_skips_discovery(idp: Idp) -> None:
    config = endpoint(idp, jwks_url=f"{idp.issuer}/jwks")
    assert verify(config, idp.provider.id_token(ALICE, CLIENT_ID)).subject == "alice"
    assert (idp.provider.discovery_fetches, idp.provider.jwks_fetches) == (0, 1)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/.well-known/openid-configuration", "has no 'keys' list"),
        ("/authorize", "answered 400"),
    ],
)
def test_a_jwks_url_that_serves_no_keys_is_a_rejection(idp: Idp, path: str, reason: str) -> None:
    config = endpoint(idp, jwks_url=idp.issuer + path)
    assert reason in rejection(config, idp.provider.id_token(ALICE, CLIENT_ID))


def test_a_ca_file_that_is_no_certificate_is_a_config_error(idp: Idp, tmp_path: Path) -> None:
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match="cannot read it as PEM CA certificates"):
        http_client_for(endpoint(idp, ca_file=not_pem))


def test_an_unreachable_idp_is_a_rejection(idp: Idp) -> None:
    config = endpoint(idp, issuer=f"https://127.0.0.1:{free_port()}")
    reason = rejection(config, idp.provider.id_token(ALICE, CLIENT_ID))
    assert "cannot fetch the discovery document from https://127.0.0.1:" in reason
    assert "ConnectError" in reason


def test_an_idp_certificate_we_do_not_trust_is_a_rejection(idp: Idp) -> None:
    reason = rejection(endpoint(idp, ca_file=None), idp.provider.id_token(ALICE, CLIENT_ID))
    assert "cannot fetch the discovery document" in reason
    assert "CERTIFICATE_VERIFY_FAILED" in reason


# --- the demo provider's sign-in pages ---------------------------------------------------

AUTHORIZE = {
    "client_id": CLIENT_ID,
    "redirect_uri": CALLBACK,
    "response_type": "id_token",
    "response_mode": "form_post",
    "scope": "openid email profile",
    "nonce": "nonce-from-the-app",
    "state": "state&<from>the app",
}


@pytest.fixture
def browser(idp: Idp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=https_url(idp.server), verify=client_context(idp.ca_file)) as c:
        yield c


def test_authorize_lists_users_and_posts_a_verifiable_id_token(
    idp: Idp, browser: httpx.Client
) -> None:
    page = browser.get("/authorize", params=AUTHORIZE)
    assert page.status_code == 200
    assert '<html lang="en">' in page.text and "<legend>Demo users</legend>" in page.text
    for user in USERS:
        label = f"{user.name} <small>({user.email})</small>"
        assert f'name="user" value="{user.sub}">{label}' in page.text
    carried = hidden_fields(page.text)
    assert carried["state"] == AUTHORIZE["state"]

    answer = browser.post("/authorize", data={**carried, "user": "bob"})

    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert f'<form method="post" action="{CALLBACK}">' in answer.text
    assert "<script>document.forms[0].submit()</script>" in answer.text
    posted = hidden_fields(answer.text)
    assert set(posted) == {"id_token", "state"}
    assert posted["state"] == AUTHORIZE["state"]
    sign_in = verify(endpoint(idp), posted["id_token"], nonce="nonce-from-the-app")
    assert (sign_in.subject, sign_in.email) == ("bob", "bob@example.com")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"redirect_uri": "https://evil.example/cb"}, "redirect_uri is not registered"),
        ({"response_mode": "query"}, "response_mode=form_post only"),
        ({"response_type": "code"}, "response_type=id_token only"),
        ({"nonce": ""}, "nonce is required"),
        ({"client_id": ""}, "client_id is required"),
    ],
)
def test_authorize_refuses_bad_requests_on_its_own_page(
    browser: httpx.Client, change: dict[str, str], reason: str
) -> None:
    params = {**AUTHORIZE, **change}
    for response in (
        browser.get("/authorize", params=params),
        browser.post("/authorize", data={**params, "user": "alice"}),
    ):
        assert response.status_code == 400
        assert reason in response.text
        assert "evil.example" not in response.text and 'id_token" value' not in response.text


def test_authorize_refuses_an_unknown_user(browser: httpx.Client) -> None:
    response = browser.post("/authorize", data={**AUTHORIZE, "user": "mallory"})
    assert response.status_code == 400
    assert "Choose one of the demo users" in response.text
