"""What msal is given for HTTP: a pooled requests session and a shared `http_cache`.

msal is synchronous and runs in the client's worker threads; both objects here are shared
by all of them, and neither lets one user's request or failure leak into another's (no
cookie jar; token endpoint answers are never cached).
"""

from __future__ import annotations

import http.cookiejar
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import requests  # type: ignore[import-untyped,unused-ignore]

__all__ = ["MsalHttpClient", "SharedHttpCache"]


class MsalHttpClient:
    """The HTTP client msal is given (msal's HttpClient interface: get, post, close).

    One pooled requests session for all worker threads; a timeout on every request
    (requests has none); one retry, for connection errors only (never for a POST that may
    have arrived: a code redeemed twice is a replay); no cookie jar (the token endpoint's
    cookies for one user must not ride along on another's request).

    `verify` (a CA file for a private CA, else True: the certifi bundle) is passed with
    each request, not set on the session: requests lets REQUESTS_CA_BUNDLE and
    CURL_CA_BUNDLE from the environment override `session.verify`, but not a per-request
    value. With no CA file those variables still apply, as ops expect.
    """

    def __init__(self, verify: str | bool, timeout: float, pool_size: int) -> None:
        session = requests.Session()
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=pool_size, max_retries=1
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self._session = session
        self._verify = verify
        self._timeout = timeout

    def get(self, url: str, **kwargs: Any) -> Any:
        return self._session.get(url, **self._defaults(kwargs))

    def post(self, url: str, **kwargs: Any) -> Any:
        return self._session.post(url, **self._defaults(kwargs))

    def close(self) -> None:
        self._session.close()

    def _defaults(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"timeout": self._timeout, "verify": self._verify, **kwargs}


class SharedHttpCache(MutableMapping[str, Any]):
    """msal's http_cache, shared by the applications of many threads.

    msal wraps this mapping in a new ExpiringMapping per application, each with its own
    lock, and keeps an index (a heap and a dict) under one key that it mutates in place.
    Shared as a plain dict, two threads would edit one heap under two different locks.
    Here each reader gets its own copy of the index: a race loses an index update (a cache
    miss) instead of corrupting the heap; entries the index lost are swept out.
    """

    INDEX = "_index_"  # msal's key for its index
    SLACK = 64

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            value = self._data[key]
            if key == self.INDEX:
                sequence, timestamps = value
                return list(sequence), dict(timestamps)
            return value

    def __setitem__(self, key: str, value: Any) -> None:
        if key.startswith("POST "):
            # msal would replay a token endpoint's 5xx (and 400s) to every later request
            # for seconds, under keys that do not tell users apart: one user's transient
            # failure must not fail everyone's sign-in. Only discovery (GET) is shared.
            return
        with self._lock:
            self._data[key] = value
            if key == self.INDEX and len(self._data) > len(value[1]) + self.SLACK:
                indexed = value[1]
                for orphan in [k for k in self._data if k != key and k not in indexed]:
                    del self._data[orphan]

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._data[key]

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)
