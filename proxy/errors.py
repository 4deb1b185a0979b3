"""One exception hierarchy: a short machine code, a description for people, an HTTP status.

Foreign exceptions (OSError, asyncio.TimeoutError, pydantic's ValidationError...) are
translated into these at the module boundary that sees them, so callers handle one family.
"""

from __future__ import annotations


class ConsentProxyError(Exception):
    code = "internal_error"
    status = 500
    title = "Something went wrong"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class ConfigError(ConsentProxyError):
    """The configuration cannot be used. `problems` holds one readable line per problem;
    `positions` the (line, column) in `source` of each, where known."""

    code = "invalid_config"
    title = "Invalid configuration"

    def __init__(
        self,
        problems: list[str],
        source: str = "configuration",
        positions: list[tuple[int, int] | None] | None = None,
    ) -> None:
        self.problems = problems
        self.source = source
        self.positions = positions or [None] * len(problems)
        super().__init__(f"{source}: " + "; ".join(problems))

    def lines(self) -> list[str]:
        """`file:line:column: problem` (or `file: problem`), one per problem."""
        return [
            f"{self.source}:{at[0]}:{at[1]}: {problem}" if at else f"{self.source}: {problem}"
            for problem, at in zip(self.problems, self.positions, strict=True)
        ]


class UpstreamError(ConsentProxyError):
    """The app behind the proxy could not answer."""

    code = "upstream_unavailable"
    status = 502
    title = "The application is not reachable"


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"
    status = 504
    title = "The application took too long to answer"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_bad_response"
    title = "The application sent a response the proxy cannot read"


class BadRequest(ConsentProxyError):
    code = "bad_request"
    status = 400
    title = "Bad request"
