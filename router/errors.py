"""The router's error tree; every failure a client can see is one of these.

    RouterError                          status / type / code / param / retryable
    ├── InvalidRequest                   400 invalid_request_error (param names the field)
    │   └── ContextLengthExceeded        400 code=context_length_exceeded
    ├── Unauthorized                     401
    ├── PermissionDenied                 403
    ├── ModelNotFound                    404 code=model_not_found
    ├── PayloadTooLarge                  413
    ├── UnsupportedMediaType             415
    ├── RateLimited                      429 (Retry-After)
    │   └── BudgetExhausted              429 code=budget_exhausted
    ├── NoLocalCapacity                  503 code=no_local_capacity (Retry-After)
    ├── DeadlineExceeded                 504
    ├── InternalError                    500 code=internal_error: the router's own bug; never
    │   │                                 retried, failed over or counted against a breaker
    │   └── RequestBuildError            a backend failed to translate a request to its wire
    │                                     format (raised before anything is sent)
    └── BackendError                     502 unless a subclass says otherwise; carries `backend`
        ├── BackendUnavailable           connection refused/reset, 5xx, busy    retryable
        ├── BackendTimeout               read/connect timeout, no first token   retryable
        ├── BackendRateLimited           429 / throttling (retry_after hint)    retryable
        ├── BackendRejected              400 validation error from upstream     not retryable
        ├── BackendAuthError             upstream auth/permission failure       not retryable
        ├── BackendModelMissing          model not pulled / endpoint not found  not retryable
        ├── BackendContextExceeded       prompt too long for this backend       try a larger window
        ├── BackendContentFiltered       content filter                          not retryable
        ├── BackendStreamError           cut / malformed / in-band error        retryable only
        │                                 before the first byte reached the client
        ├── QueueTimeout                 503 admission waited its whole bound for a local slot
        ├── CircuitOpened                the breaker opened while backing off     fail over
        └── AllBackendsFailed            the last backend error, with every attempt's error

    Not client-visible (configuration and internal signals):
    PolicyError(Exception)               an invalid policy file; `lines`, one per problem
    UnknownBackendType(LookupError)      a backend `type` no one registered
    ToolArgumentsError(ValueError)       an assistant tool call whose arguments are not a
                                          JSON object (Bedrock Converse needs one)

Backends raise BackendError subclasses only (mapped by type or code inside each backend), and
RequestBuildError for an unexpected exception while building a request. An error raised through
the service facade carries `meta` (the request id, route, backend and reason known when it was
raised). Each surface has one error encoder (`api/error_responses.py` for the OpenAI surface)
that turns any of these into its wire body.
"""

from __future__ import annotations

from typing import Any

from router.route_meta import RouteMeta


class RouterError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    retryable: bool = False
    meta: RouteMeta | None = None  # set by the service facade on the way out

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(RouterError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class Unauthorized(RouterError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(RouterError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(RouterError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(RouterError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(RouterError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(RouterError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExhausted(RateLimited):
    code = "budget_exhausted"


class NoLocalCapacity(RouterError):
    status = 503
    type = "api_error"
    code = "no_local_capacity"


class DeadlineExceeded(RouterError):
    status = 504
    type = "api_error"
    code = "deadline_exceeded"


class InternalError(RouterError):
    """A bug in the router. The client gets a generic 500; the detail goes to the log only."""

    status = 500
    type = "api_error"
    code = "internal_error"

    def __init__(self, message: str, *, backend: str = "", where: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        self.where = where  # exception type and code location, for the log (never prompt text)


class RequestBuildError(InternalError):
    """A backend's request builder raised: the router's bug, not an outage of the backend."""

    @classmethod
    def from_exception(cls, exc: BaseException, backend: str) -> RequestBuildError:
        return cls(f"The router could not prepare this request for backend '{backend}' (an "
                   "internal error; it has been logged).", backend=backend,
                   where=describe_exception(exc))


def describe_exception(exc: BaseException) -> str:
    """`TypeError at router/backends/ollama.py:212 in _payload`: the type and the innermost
    frame, without the exception's message (which could quote request content)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    where = last.filename
    marker = where.rfind("/router/")
    if marker >= 0:
        where = where[marker + 1 :]
    return f"{type(exc).__name__} at {where}:{last.lineno} in {last.name}"


class BackendError(RouterError):
    """An upstream failure, mapped inside the backend that saw it."""

    status = 502
    type = "api_error"
    code = "backend_error"

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        retryable: bool | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        status: int | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, code=code, retry_after=retry_after, status=status, param=param)
        self.backend = backend
        if retryable is not None:
            self.retryable = retryable


class BackendUnavailable(BackendError):
    code = "backend_unavailable"
    retryable = True


class BackendTimeout(BackendError):
    status = 504
    code = "backend_timeout"
    retryable = True


class BackendRateLimited(BackendError):
    status = 429
    type = "rate_limit_error"
    code = "backend_rate_limited"
    retryable = True


class BackendRejected(BackendError):
    status = 400
    type = "invalid_request_error"
    code = "backend_rejected"


class BackendAuthError(BackendError):
    code = "backend_auth_error"


class BackendModelMissing(BackendError):
    code = "backend_model_missing"


class BackendContextExceeded(BackendError):
    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"


class BackendContentFiltered(BackendError):
    status = 400
    type = "invalid_request_error"
    code = "content_filter"


class BackendStreamError(BackendError):
    code = "stream_error"
    retryable = True


class QueueTimeout(BackendError):
    """Admission waited its whole bound for a local slot."""

    status = 503
    code = "queue_timeout"
    retryable = False


class CircuitOpened(BackendError):
    """The backend's breaker opened while this request was backing off; carries the code of
    the failure that opened it. Not retried: the executor fails over."""

    retryable = False


class AllBackendsFailed(BackendError):
    """Every candidate failed; status and body follow the most telling error."""

    def __init__(self, errors: list[BackendError]) -> None:
        last = errors[-1]
        super().__init__(
            last.message,
            backend=last.backend,
            retryable=False,
            retry_after=last.retry_after,
            code=last.code,
            status=last.status,
            param=last.param,
        )
        self.type = last.type
        self.errors = errors


class PolicyError(Exception):
    """An invalid policy; `lines` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class UnknownBackendType(LookupError):
    """A config whose type no one registered (or a name given to `backend_type`)."""


class ToolArgumentsError(ValueError):
    """An assistant tool call whose arguments are not a JSON object (Converse needs one)."""
