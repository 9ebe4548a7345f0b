"""Bedrock's failures mapped to the router's `BackendError` types, by exception type and then
`Error.Code`, for `bedrock.py`. The table is in that module's docstring.

Context window: Bedrock has no code for "input too long", only a ValidationException whose
message says so. A ValidationException is BackendContextExceeded when its message matches an
entry of `CONTEXT_PATTERNS` (a small table, each entry citing its source, each tested), or when
the request's estimate is within `CONTEXT_MARGIN` of the window (the estimate's error margin);
any other ValidationException stays BackendRejected (a 400 validation error).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import botocore.exceptions as bce
import urllib3.exceptions
from botocore.eventstream import ParserError

from router.backends.context_errors import ContextPattern, match_context, window_note
from router.errors import (
    BackendAuthError,
    BackendContextExceeded,
    BackendError,
    BackendModelMissing,
    BackendRateLimited,
    BackendRejected,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
)

log = logging.getLogger("router.backends.bedrock")
# botocore's report lines: `Invalid length for parameter messages[0].content[1].text, value: 0,
# valid min length: 1` (the value part may quote request text: only the path is logged).
_PARAM_PATH = re.compile(r"parameter ([\w.\[\]]+)")

DEFAULT_CONTEXT_WINDOW = 128_000  # gpt-oss on Bedrock (docs/protocols.md, Bedrock Converse)
CONTEXT_MARGIN = 0.75  # a ValidationException this close to the window is a context error

# Bedrock ValidationException messages that mean "the prompt does not fit the window". Bedrock
# relays a model's refusal as "The model returned the following errors: <text>", so entries
# match anywhere in the message.
CONTEXT_PATTERNS: tuple[ContextPattern, ...] = (
    # Bedrock's own text (Converse, InvokeModel and their streams, as `validationException`
    # in-stream): aws-samples/bedrock-chat#95, aws-samples/assessment-generator#2,
    # continuedev/continue#6005.
    ContextPattern(re.compile(r"input is too long for requested model", re.I),
                   "bedrock: input is too long for requested model"),
    # A relayed model refusal naming both counts: "prompt is too long: 200049 tokens >
    # 200000 maximum" (daisuke-awaji/moca#254, a Bedrock ValidationException).
    ContextPattern(re.compile(r"prompt is too long: \d+ tokens > (?P<window>\d+) maximum", re.I),
                   "model: prompt is too long"),
    # The OpenAI-style text of an OpenAI-compatible engine (vLLM: "This model's maximum context
    # length is 16384 tokens. However, you requested ...", vllm-project/vllm#20409), for
    # OpenAI models such as gpt-oss when Bedrock relays the engine's words (not seen verbatim
    # from Bedrock itself: kept because it cannot mean anything else).
    ContextPattern(re.compile(r"maximum context length is (?P<window>\d+) tokens", re.I),
                   "model: maximum context length"),
)

_THROTTLING = {"ThrottlingException", "TooManyRequestsException"}
_UNAVAILABLE = {"ModelNotReadyException", "InternalServerException", "ServiceUnavailableException",
                "InternalFailure", "ServiceUnavailable"}
_AUTH = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
         "ExpiredTokenException", "IncompleteSignature", "MissingAuthenticationToken",
         "UnauthorizedException", "InvalidClientTokenId"}
_CREDENTIAL_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(bce, n) for n in ("NoCredentialsError", "PartialCredentialsError",
                              "CredentialRetrievalError", "NoAuthTokenError", "TokenRetrievalError")
    if hasattr(bce, n))


@dataclass(slots=True)
class _Attempt:
    backend: str
    estimate: int  # prompt estimate + max_tokens
    window: int
    emitted: bool = False  # a StreamEvent has been yielded


def _retry_after(response: dict[str, Any]) -> float | None:
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _client_error(exc: bce.ClientError, a: _Attempt) -> BackendError:  # noqa: C901 - flat table
    response: dict[str, Any] = dict(exc.response)
    raw_code = str(response.get("Error", {}).get("Code") or "")
    code = raw_code[:1].upper() + raw_code[1:]
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    msg = f"bedrock {raw_code or status}: {response.get('Error', {}).get('Message', '')}"
    kw: dict[str, Any] = {"backend": a.backend}
    if isinstance(exc, bce.EventStreamError) and a.emitted:
        return BackendStreamError(msg, **kw)
    original = str(response.get("originalStatusCode") or "")
    upstream_transient = not original.isdigit() or int(original) == 429 or int(original) >= 500
    if code in _THROTTLING:
        return BackendRateLimited(msg, retry_after=_retry_after(response), **kw)
    if code == "ServiceQuotaExceededException":
        return BackendRateLimited(msg, retryable=False, **kw)
    if code in _UNAVAILABLE:
        return BackendUnavailable(msg, **kw)
    if code == "ModelTimeoutException":
        return BackendTimeout(msg, **kw)
    if code == "ModelErrorException":
        return BackendUnavailable(msg, retryable=upstream_transient, **kw)
    if code == "ModelStreamErrorException":
        return BackendStreamError(msg, retryable=upstream_transient, **kw)
    if code == "ValidationException":
        refusal = match_context(CONTEXT_PATTERNS, str(response.get("Error", {}).get("Message")
                                                      or ""))
        if refusal is not None:
            return BackendContextExceeded(msg + window_note(refusal.window), **kw)
        if a.estimate > CONTEXT_MARGIN * a.window:
            return BackendContextExceeded(msg, **kw)
        return BackendRejected(msg, **kw)
    if code in _AUTH:
        return BackendAuthError(msg, **kw)
    if code == "ResourceNotFoundException":
        return BackendModelMissing(msg, **kw)
    return _by_status(status, msg, kw)


def _by_status(status: int, msg: str, kw: dict[str, Any]) -> BackendError:
    if status == 429:
        return BackendRateLimited(msg, **kw)
    if status >= 500:
        return BackendUnavailable(msg, **kw)
    if status == 408:
        return BackendTimeout(msg, **kw)
    if status in (401, 403):
        return BackendAuthError(msg, **kw)
    if status == 404:
        return BackendModelMissing(msg, **kw)
    if 400 <= status < 500:
        return BackendRejected(msg, **kw)
    return BackendError(msg, **kw)


def map_error(exc: Exception, a: _Attempt) -> BackendError | None:
    """The BackendError for a boto3/botocore/urllib3 failure, or None for anything else."""
    kw: dict[str, Any] = {"backend": a.backend}
    text = f"bedrock: {type(exc).__name__}: {exc}"
    if isinstance(exc, bce.ClientError):
        return _client_error(exc, a)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | bce.ReadTimeoutError
                  | bce.ConnectTimeoutError):
        return BackendTimeout(text, **kw)
    if isinstance(exc, ParserError | bce.ResponseStreamingError | urllib3.exceptions.ProtocolError):
        return BackendStreamError(text, **kw)
    if isinstance(exc, bce.ParamValidationError):
        return _param_validation(exc, a)
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return BackendAuthError(text, **kw)
    if isinstance(exc, bce.ConnectionError | bce.HTTPClientError | urllib3.exceptions.HTTPError):
        return BackendUnavailable(text, **kw)
    if isinstance(exc, bce.BotoCoreError):
        return BackendError(text, retryable=False, **kw)
    return None


def _param_validation(exc: Exception, a: _Attempt) -> BackendError:
    """botocore's client-side validation names its internal parameter paths and can quote
    values: the client gets a generic message, the log (debug) only the paths."""
    report = str(getattr(exc, "kwargs", {}).get("report") or "")
    paths = sorted(set(_PARAM_PATH.findall(report)))
    log.debug("bedrock: botocore refused the Converse request (%s) at %s", a.backend,
              ", ".join(paths) or "?")
    return BackendRejected(
        "the request could not be translated for Bedrock: a field has a value Bedrock's "
        "Converse API does not accept (for example an empty message, tool name or stop "
        "sequence); check the messages and tools", backend=a.backend)
