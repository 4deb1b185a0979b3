"""Behind Caddy with the shipped examples/caddy/Caddyfile (forward_auth + copy_headers):
the whole journey and the anti-spoofing over the real servers. Caddy keeps no auth cache:
every request asks the proxy, so sign-out, a new sign-in and a disconnect show at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .ingress import Ingress, behind, fresh_browser
from .jose import claims_of
from .test_consent import ALICE, BOB, PREFIX, Env, Person, submit_form, user_id
from .test_ingress_nginx import (
    app_saw,
    connect,
    forged_copies_never_reach_the_app,
    reaches_the_app_without_the_proxy,
)
from .test_tokens import NAMES


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Ingress]]:
    with behind("caddy", tmp_path_factory.mktemp("caddy")) as running:
        yield running


@pytest.fixture
def person(front: tuple[Env, Ingress]) -> Iterator[Person]:
    with fresh_browser(front[0]) as fresh:
        yield fresh


def test_the_whole_journey_through_caddy(person: Person) -> None:
    connect(person)
    got = app_saw(person)
    assert got[NAMES["user"]] == ALICE.email and got[NAMES["integration"]] == "connected"
    assert claims_of(got[NAMES["token"]])["oid"] == ALICE.object_id
    assert claims_of(got[NAMES["assertion"]])["upn"] == ALICE.email
    assert "x-request-id" not in got  # Caddy carried it straight to the app


@pytest.mark.parametrize("signed_in", [False, True])
def test_client_copies_never_reach_the_app(person: Person, signed_in: bool) -> None:
    forged_copies_never_reach_the_app(person, signed_in)


def test_the_auth_endpoint_is_not_reachable_from_a_browser(person: Person) -> None:
    connect(person)
    answer = person.get(f"{PREFIX}auth")
    assert answer.status_code == 404
    assert not any(k.lower().startswith("x-consent-proxy") for k in answer.headers)


def test_sign_out_new_sign_in_and_disconnect_show_at_once(person: Person) -> None:
    connect(person)
    assert NAMES["token"] in app_saw(person)
    done = submit_form(person, person.get(PREFIX), "disconnect")
    assert done.status_code == 303  # POST-redirect-GET to the connection page
    assert NAMES["token"] not in app_saw(person)
    person.sign_in(user_id(BOB, "mode-never"))
    assert app_saw(person)[NAMES["user"]] == BOB.email
    assert person.get("/logout").status_code == 303
    assert not any(k.startswith("x-consent-proxy") for k in app_saw(person))


def test_the_app_is_reached_while_the_proxy_is_down(tmp_path: Path) -> None:
    reaches_the_app_without_the_proxy("caddy", tmp_path)
