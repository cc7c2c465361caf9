"""The few domain errors, and the one table that maps them to protocol answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


class SettingsError(ValueError):
    """A setting has a value that cannot be used (refused at start-up, with a message naming it)."""


class UserMetricsError(Exception):
    """Base of the errors a front-end turns into a protocol answer."""


class InvalidInput(UserMetricsError):
    """The request cannot be decoded or is malformed (not retryable)."""


class BadRows(InvalidInput):
    """Rows of an import that cannot be taken, each named with its row and reason (``problems``,
    the first of them) out of ``count``; nothing of the import is stored."""

    def __init__(self, problems: list[str], count: int) -> None:
        more = f"\n  (and {count - len(problems)} more)" if count > len(problems) else ""
        rows = "row" if count == 1 else "rows"
        super().__init__(f"{count} bad {rows}, nothing imported:\n  " + "\n  ".join(problems) + more)
        self.problems = problems
        self.count = count


class NotFound(UserMetricsError):
    """The thing asked for does not exist (an unknown user)."""


class Unavailable(UserMetricsError):
    """The service cannot take the request now (retryable: store down, shutting down)."""

    retry_after_seconds: int = 1  # what gRPC RetryInfo and HTTP Retry-After tell the client


class Overloaded(Unavailable):
    """The write queue is full: retry after a while (gRPC RetryInfo, HTTP Retry-After)."""

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class DeadlineExceeded(UserMetricsError):
    """A time limit passed before the work was done (a query past ``query_timeout_seconds``)."""


class Unauthenticated(UserMetricsError):
    """No valid bearer token for this endpoint."""


class TooLarge(UserMetricsError):
    """The request is larger than the configured limit."""


class UnsupportedMediaType(UserMetricsError):
    """A content type or content encoding the endpoint does not speak."""


class MethodNotAllowed(UserMetricsError):
    """An HTTP endpoint asked with a method it does not take; ``allow`` names the ones it does."""

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.allow = allow


class LengthRequired(UserMetricsError):
    """An HTTP request body with neither Content-Length nor chunked encoding."""


class RequestTimeout(UserMetricsError):
    """The client took longer than ``receive_timeout_seconds`` to send its whole request."""


# error class -> (gRPC status code name, HTTP status). Looked up by the front-ends, nowhere else.
# Names, not grpc.StatusCode members: the reading CLI imports these errors, and importing grpc
# would cost it more than all else it loads.
PROTOCOL_STATUS: dict[type[UserMetricsError], tuple[str, int]] = {
    InvalidInput: ("INVALID_ARGUMENT", 400),
    NotFound: ("NOT_FOUND", 404),
    Unavailable: ("UNAVAILABLE", 503),
    Unauthenticated: ("UNAUTHENTICATED", 401),
    DeadlineExceeded: ("DEADLINE_EXCEEDED", 504),
    TooLarge: ("RESOURCE_EXHAUSTED", 413),
    UnsupportedMediaType: ("INVALID_ARGUMENT", 415),
    MethodNotAllowed: ("UNIMPLEMENTED", 405),
    LengthRequired: ("INVALID_ARGUMENT", 411),
    RequestTimeout: ("DEADLINE_EXCEEDED", 408),
}


def message(error: Exception) -> str:
    """The error's text, safe to encode as UTF-8 (it may quote hostile input)."""
    return str(error).encode("utf-8", "replace").decode("utf-8")


def grpc_status(error: UserMetricsError) -> grpc.StatusCode:
    """The gRPC status code for a domain error."""
    import grpc

    for cls in type(error).__mro__:
        if cls in PROTOCOL_STATUS:
            return grpc.StatusCode[PROTOCOL_STATUS[cls][0]]
    return grpc.StatusCode.INTERNAL


def http_status(error: UserMetricsError) -> int:
    """The HTTP status for a domain error."""
    for cls in type(error).__mro__:
        if cls in PROTOCOL_STATUS:
            return PROTOCOL_STATUS[cls][1]
    return 500
