"""A tiny Microsoft Graph: `{base}/graph/v1.0/me/events` and `/me/contacts`, three made-up
items each, for a valid access token of the stand-in's whose `scp` allows them; Graph's
error shape (`{"error": {"code", "message"}}`) otherwise."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.demo.microsoft.directory import MicrosoftUser
from proxy.demo.microsoft.scopes import GRAPH
from proxy.demo.microsoft.state import StandInState


class Graph:
    def __init__(self, state: StandInState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        needs = {"events": "Calendars", "contacts": "Contacts"}.get(kind)
        if needs is None:
            return graph_error(404, "ResourceNotFound", "Resource not found for the segment.")
        claims = self.bearer_claims(request.headers.get("authorization", ""))
        if claims is None:
            return graph_error(401, "InvalidAuthenticationToken", "Access token is invalid.")
        if not {f"{needs}.Read", f"{needs}.ReadWrite"} & set(str(claims.get("scp")).split()):
            message = "Access is denied. Check credentials and try again."
            return graph_error(403, "ErrorAccessDenied", message)
        user = next(u for u in self.state.accounts.values() if u.object_id == claims["oid"])
        items = demo_events(user) if kind == "events" else demo_contacts(user)
        context = f"{self.state.graph_url}/$metadata#users('{user.object_id}')/{kind}"
        return JSONResponse({"@odata.context": context, "value": items})

    def bearer_claims(self, authorization: str) -> dict[str, Any] | None:
        """The claims of a valid Graph access token of ours, else None."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        keys = KeySet([RSAKey.import_key(entry) for entry in self.state.jwks()["keys"]])
        try:
            claims = jwt.decode(token.strip(), keys, algorithms=["RS256"]).claims
        except (JoseError, ValueError, TypeError, KeyError):
            return None
        exp = claims.get("exp")
        if claims.get("aud") != GRAPH or not isinstance(exp, int) or exp <= self.state.clock():
            return None
        if not any(u.object_id == claims.get("oid") for u in self.state.accounts.values()):
            return None
        return claims


def graph_error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"www-authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def demo_events(user: MicrosoftUser) -> list[dict[str, Any]]:
    start = dt.datetime.now(dt.UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    plans = (("Weekly team sync", 0, 30), ("Quarterly planning", 1, 90), ("Customer lunch", 2, 60))
    return [
        {
            "id": hashlib.sha256(f"{user.object_id}{subject}".encode()).hexdigest()[:32],
            "subject": subject,
            "start": {"dateTime": (start + dt.timedelta(days=day)).isoformat(), "timeZone": "UTC"},
            "end": {
                "dateTime": (start + dt.timedelta(days=day, minutes=minutes)).isoformat(),
                "timeZone": "UTC",
            },
            "organizer": {"emailAddress": {"name": user.name, "address": user.email}},
            "location": {"displayName": "Room 1" if day % 2 == 0 else "Online"},
        }
        for subject, day, minutes in plans
    ]


def demo_contacts(user: MicrosoftUser) -> list[dict[str, Any]]:
    domain = user.email.partition("@")[2]
    people = (("Dana Whitfield", "dana"), ("Eli Moreau", "eli"), ("Farah Haddad", "farah"))
    return [
        {
            "id": hashlib.sha256(f"{user.object_id}{alias}".encode()).hexdigest()[:32],
            "displayName": name,
            "emailAddresses": [{"name": name, "address": f"{alias}@{domain}"}],
            "businessPhones": [f"+1 555 01{i:02d}"],
        }
        for i, (name, alias) in enumerate(people)
    ]
