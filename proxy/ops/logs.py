"""Logging: readable lines in a terminal, one JSON object per line elsewhere, never a secret.

Every record, whoever logged it (the proxy, uvicorn, httpx, msal), goes through one
handler on the root logger, and that handler's filters make three guarantees:
- no secret reaches the output: `Redact` rewrites the final message, the exception text,
  the stack and every extra field, replacing bearer tokens, JWTs, long opaque tokens,
  `code=` / `state=` / `*_token=` / `*secret=` / `password=` / `SAMLResponse=` values
  and `Authorization` / `Cookie` / `Set-Cookie` header values with `[redacted]`. It works
  on the text, so it holds for log calls nobody reviewed;
- each line of a request carries its `request_id` (`RequestId` below, a pure ASGI
  middleware, sets it; the app composes it outermost);
- the format is JSON when stderr is not a terminal (containers, systemd), text otherwise.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TextIO

from proxy.asgi import App, Headers, Message, Receive, Scope, Send
from proxy.errors import ConsentProxyError

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "OneLineProxyErrors",
    "Redact",
    "RequestId",
    "RequestIdFilter",
    "TextFormatter",
    "current_request_id",
    "make_handler",
    "redact",
    "rfc3339",
    "setup_logging",
    "shown_user",
]

REDACTED = "[redacted]"

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

# --- redaction -------------------------------------------------------------------------------

# Names whose values are secrets, as query/form keys, JSON/dict keys or header names:
# anything ending in token, secret, password or assertion (access_token, x-...-access-token,
# client_secret, client_assertion...), and OAuth's code, state and code_verifier.
_CREDENTIAL_NAME = (
    r"[A-Za-z0-9_-]*(?:token|secret|password|passwd|assertion)"
    r"|code|state|code_verifier|samlresponse"
)
# Headers whose whole value is a credential.
_HEADER_NAME = r"authorization|proxy-authorization|cookie|set-cookie"
_NAME = rf"(?:{_HEADER_NAME}|{_CREDENTIAL_NAME})"
_BEFORE = r"(?<![A-Za-z0-9_-])"
_QUOTED = r"""b?(?P<q>["'])(?:\\.|(?!(?P=q)).)*(?P=q)"""


def _basic(match: re.Match[str]) -> str:
    credentials = match.group(0)[len(match.group("scheme")) :].strip()
    if any(c.isupper() or c.isdigit() or c in "+/=" for c in credentials):
        return f"{match.group('scheme')} {REDACTED}"
    return match.group(0)


_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # "Authorization: Bearer ..." / "Cookie: a=b; c=d" / "X-...-Access-Token: ...": to the
    # end of the line (header names with a secret-ish name; bare code/state are query keys).
    (
        re.compile(
            rf"{_BEFORE}(?P<name>{_HEADER_NAME}|[A-Za-z0-9_-]*(?:token|secret|password|assertion))"
            r"(?P<sep>[ \t]*:[ \t]*)[^\r\n]+",
            re.IGNORECASE | re.MULTILINE,
        ),
        rf"\g<name>\g<sep>{REDACTED}",
    ),
    # {"access_token": "..."}, {'cookie': '...'}, (b'authorization', b'...')
    (
        re.compile(
            rf"""(?P<k>["']){_NAME}(?P=k)\s*[:,=]\s*{_QUOTED}""",
            re.IGNORECASE,
        ),
        lambda m: m.group(0)[: m.start("q") - m.start(0) + 1] + REDACTED + m.group("q"),
    ),
    # ?code=...&state=..., refresh_token=..., password='...' (a repr)
    (
        re.compile(
            rf"{_BEFORE}(?P<name>{_NAME})="
            rf"""(?:{_QUOTED}|(?:(?:bearer|basic)[ \t]+)?[^&\s"'<>;,)\]}}]+)""",
            re.IGNORECASE,
        ),
        rf"\g<name>={REDACTED}",
    ),
    # Bearer tokens wherever they appear; Basic credentials (base64 of user:password),
    # told apart from the English word by their upper case, digits or padding.
    (
        re.compile(r"\b(?P<scheme>bearer)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
        rf"\g<scheme> {REDACTED}",
    ),
    (re.compile(r"\b(?P<scheme>basic)\s+[A-Za-z0-9+/]{4,}={0,2}", re.IGNORECASE), _basic),
    # JWS / JWE compact serialisations: base64url parts joined by dots; the first is a
    # JSON header, so it starts with "eyJ".
    (re.compile(r"\beyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){2,4}"), REDACTED),
)
# Opaque tokens (Microsoft's refresh tokens and codes are not JWTs): a long run of
# base64url characters mixing upper case, lower case and digits. Hashes, UUIDs and user
# keys are lower case; words and paths are shorter.
_OPAQUE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{40,}(?![A-Za-z0-9_-])")


def _opaque(match: re.Match[str]) -> str:
    text = match.group(0)
    mixed = (
        any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() for c in text)
    )
    return REDACTED if mixed else text


# Every rule above needs one of these words (any case) or a run of 40 token characters: a
# text without any is left as it is after a few substring tests instead of seven regex
# substitutions (most log lines and fields: every access line's method and ordinary paths).
# Keep it a superset of the rules' triggers.
_TRIGGERS = (
    "token", "secret", "passw", "assertion", "code", "state", "samlresponse",
    "authorization", "cookie", "bearer", "basic", "eyj",
)  # fmt: skip
_LONG_RUN = re.compile(r"[A-Za-z0-9_-]{40}")


def _may_hold_secret(text: str) -> bool:
    lowered = text.lower()
    for word in _TRIGGERS:
        if word in lowered:
            return True
    return len(text) >= 40 and _LONG_RUN.search(text) is not None


def redact(text: str) -> str:
    """The text with every secret-shaped value replaced by [redacted]."""
    if not _may_hold_secret(text):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return _OPAQUE.sub(_opaque, text)


# Extra fields named like this are redacted whole ("cookies" too: a list of them).
_CREDENTIAL_KEY = re.compile(rf"(?:{_NAME}|[A-Za-z0-9_-]*cookies)", re.IGNORECASE)


@functools.lru_cache(maxsize=512)
def _is_credential_key(key: str) -> bool:
    return _CREDENTIAL_KEY.fullmatch(key) is not None


# Tuples, not `int | float`: a union written in the function is built anew on every call.
_PLAIN = (bool, int, float)
_SEQUENCES = (list, tuple, set, frozenset)


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and _is_credential_key(key):
        return REDACTED
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {str(k): _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, _SEQUENCES):
        return [_redact_value(None, v) for v in value]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return redact(value if isinstance(value, str) else str(value))


class Redact(logging.Filter):
    """Rewrite a record so that nothing secret-shaped reaches any formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken log call: show its template, never its arguments
            message = f"unformattable log message: {record.msg!s}"
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record.__dict__.pop("color_message", None)  # uvicorn's copy of the unredacted text
        for key in [k for k in record.__dict__ if k not in _RESERVED]:
            record.__dict__[key] = _redact_value(key, record.__dict__[key])
        return True


class OneLineProxyErrors(logging.Filter):
    """The server logs 'Exception in ASGI application' with a traceback when a response is
    broken off on purpose (the upstream died mid-stream). Ours are expected: one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConsentProxyError):
            error = record.exc_info[1]
            record.msg = "response broken off: %s"
            record.args = (error.description,)
            record.exc_info = None
            record.exc_text = None
        return True


# --- request id ------------------------------------------------------------------------------

REQUEST_ID_HEADER = b"x-request-id"
SCOPE_KEY = "request_id"
MAX_REQUEST_ID = 128
_SANE_ID = re.compile(rb"[A-Za-z0-9._-]{1,%d}" % MAX_REQUEST_ID)

current_request_id: ContextVar[str | None] = ContextVar("consent_proxy_request_id", default=None)


_ID_PREFIX = secrets.token_hex(8)  # per process: ids stay unique across replicas
_id_counter = itertools.count(1)


def new_request_id() -> str:
    # A correlation id, not a secret: a random per-process prefix and a counter are unique
    # and far cheaper than uuid4 on every request.
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


class RequestId:
    """Pure ASGI middleware: one id per request, in the logs, upstream and in the answer.

    A sane inbound `X-Request-ID` (one header, at most 128 of [A-Za-z0-9._-]) from a load
    balancer is kept, so one id follows the request through every hop; anything else is
    replaced by a new one. The id goes into `scope["request_id"]`, into the context that
    the log formatters read (tasks started for the request inherit it), into the request
    headers the upstream receives (the only copy) and into the response headers.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _inbound_id(scope["headers"]) or new_request_id()
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        scope["headers"] = [*(h for h in scope["headers"] if h[0] != REQUEST_ID_HEADER), header]
        scope[SCOPE_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message["headers"] = [*_without_id(message.get("headers", ())), header]
            await send(message)

        token = current_request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)


def _inbound_id(headers: Headers) -> str | None:
    found = [value for name, value in headers if name == REQUEST_ID_HEADER]
    if len(found) == 1 and _SANE_ID.fullmatch(found[0]):
        return found[0].decode("ascii")
    return None


def _without_id(headers: Any) -> Headers:
    return [(n, v) for n, v in headers if n.lower() != REQUEST_ID_HEADER]


class RequestIdFilter(logging.Filter):
    """Put the current request's id on the record as `request_id` (when there is one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


# --- formats ---------------------------------------------------------------------------------


def rfc3339(created: float) -> str:
    """``2026-12-03T12:00:00.123Z``: UTC, milliseconds, what log pipelines parse."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_text:  # set (and redacted) by Redact
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id]: message`, for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        where = f"{record.name} [{request_id}]" if request_id else record.name
        return f"{record.asctime} {record.levelname:<7} {where}: {record.message}"


def make_handler(fmt: str = "auto", stream: TextIO | None = None) -> logging.Handler:
    """The one handler: the format asked for ("auto": JSON unless a terminal), request
    ids, and redaction as the last filter, after anything that may still change a record."""
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(OneLineProxyErrors())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(Redact())
    return handler


def setup_logging(level: str = "info", fmt: str = "auto", users: str = "key") -> None:
    root = logging.getLogger()
    root.handlers[:] = [make_handler(fmt)]
    root.setLevel(level.upper())
    set_user_display(users)
    # uvicorn's loggers write through the same handler (run passes log_config=None).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    server_log = logging.getLogger("uvicorn.error")
    server_log.filters[:] = [f for f in server_log.filters if not isinstance(f, StartUpOnce)]
    server_log.addFilter(StartUpOnce())


class StartUpOnce(logging.Filter):
    """The proxy and its ops listener are two uvicorn servers in one process: each says
    "Started server process", "Waiting for application startup"... Say each of those once."""

    _ONCE = (
        "Started server process",
        "Waiting for application startup",
        "Application startup complete",
        "Waiting for application shutdown",
        "Application shutdown complete",
        "Finished server process",
        "Shutting down",
    )

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        template = str(record.msg)
        if not template.startswith(self._ONCE):
            return True
        if template in self._seen:
            return False
        self._seen.add(template)
        return True


# --- users in logs ---------------------------------------------------------------------------

_user_display = "key"


def set_user_display(mode: str) -> None:
    """`logging.users`: "key" (the opaque user key, the default) or "email"."""
    global _user_display
    _user_display = "email" if mode == "email" else "key"


def shown_user(user_key: str, email: str | None) -> str:
    """How a user appears in log lines: the opaque key unless ops chose emails."""
    return email if _user_display == "email" and email else user_key
