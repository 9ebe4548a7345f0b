"""SageMaker real-time endpoint serving gpt-oss behind an OpenAI-style (vLLM-like) container.

Wire API: sagemaker-runtime `InvokeEndpoint` with a Chat Completions JSON body, and
`InvokeEndpointWithResponseStream` with `stream: true` (+ `stream_options.include_usage`), whose
`PayloadPart` bytes are arbitrary slices of the container's SSE stream (`data: {chunk}` ...
`data: [DONE]`): lines are reassembled across parts with an incremental UTF-8 decoder, tool-call
fragments are joined by index and emitted whole at finish (that decoding, which knows nothing of
boto3, is `openai_stream.py`; the events of one part are decoded together and marked
`StreamEvent.ready_next` when the next is among them). Reasoning is read from `reasoning` or
`reasoning_content` and sent back on assistant turns as `reasoning` (docs/protocols.md,
SageMaker and botocore).
Prefill: `SageMakerConfig.prefill_default` is False (whether a container continues a trailing
assistant message depends on it; a policy sets `prefill: true` for one known to); the message
is sent through unchanged in `messages`.
Auth: the standard AWS credential chain, SigV4 (boto3 via `aws_common`, botocore retries off).
Readiness: control-plane `DescribeEndpoint` (never an inference call); ok when `InService`.
Request building (`prepare`: `build_body`, typed fields as plain JSON) runs before the call; a
bug in it is a RequestBuildError, never an upstream error.

Error mapping (by exception type and error code; the container's message text only for a
context-window refusal from a server that names it in words alone, `openai_errors.py`):

    upstream                                                 router error             retryable
    ValidationError / ValidationException                    BackendRejected          no
    ModelError, container status < 500, OriginalMessage
        JSON code "context_length_exceeded", type
        "exceed_context_size_error", or a message in
        `openai_errors.CONTEXT_PATTERNS` (vLLM, TGI text)    BackendContextExceeded   no (moves)
        "content_filter"                                     BackendContentFiltered   no
    ModelError, OriginalStatusCode 429                       BackendRateLimited       yes
    ModelError, OriginalStatusCode 408                       BackendTimeout           yes
    ModelError, OriginalStatusCode 5xx or missing            BackendUnavailable       yes
    ModelError, other OriginalStatusCode 4xx                 BackendRejected          no
    ModelNotReadyException, InternalFailure,
        ServiceUnavailable, InternalDependencyException      BackendUnavailable       yes
    ThrottlingException (+ Throttling, TooManyRequests...)   BackendRateLimited       yes
    AccessDenied / UnrecognizedClient / signature / token    BackendAuthError         no
    other ClientError: HTTP 429 / 5xx / 4xx                  RateLimited/Unavailable/Rejected
    in-stream ModelStreamError, InternalStreamFailure        BackendStreamError       yes*
    ChecksumMismatch and other event-stream ParserError      BackendStreamError       yes*
    in-band SSE `data: {"error": ...}`, bad UTF-8,
        a chat body that is not a chat.completion            BackendStreamError       yes*
    an SSE payload that is not a JSON object                 a malformed marker (skipped)
    stream ends with neither finish_reason nor [DONE]        BackendStreamError       yes*
    read / connect timeout (botocore, urllib3), asyncio
        timeout of `call.timeout_s` (chat)                   BackendTimeout           yes
    connection refused / closed / reset before the stream    BackendUnavailable       yes
    connection broken mid-stream (urllib3 ProtocolError)     BackendStreamError       yes*
    NoCredentialsError / PartialCredentialsError             BackendAuthError         no
    (* only before the first byte reached the client: the executor decides)

Messages name the code and status (and the container's own error message for ModelError); the
upstream `Message`, which can name the account and log group, stays on the chained `__cause__`.
A stream whose finish_reason chunk arrived but whose `[DONE]` did not is finalised normally.
`Retry-After` response headers become `retry_after`. A cancelled `chat()` cannot interrupt the
boto3 call already running on its pool thread; a stream closed early releases its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, cast

import orjson
import urllib3.exceptions
from botocore import eventstream
from botocore import exceptions as bexc

from router.backends.aws_common import PooledBackend, make_client
from router.backends.base import BackendCall, ProbeResult, build_request, plain
from router.backends.configs import SageMakerConfig
from router.backends.context_errors import window_note
from router.backends.openai_errors import ErrorObject, context_refusal, error_object
from router.backends.openai_stream import ChunkAssembler as _OpenAIChunkAssembler
from router.backends.openai_stream import SSEDecoder as SSEDecoder
from router.backends.openai_stream import tool_call, usage_from
from router.backends.pool import BlockingPool
from router.errors import (
    BackendAuthError,
    BackendContentFiltered,
    BackendContextExceeded,
    BackendError,
    BackendRateLimited,
    BackendRejected,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
)
from router.types import ChatResult, Message, StreamEvent, Usage

_UNAVAILABLE = {"ModelNotReadyException", "InternalFailure", "ServiceUnavailable",
                "InternalDependencyException", "ServiceUnavailableException"}
_THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException",
              "RequestLimitExceeded"}
_AUTH = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
         "InvalidSignatureException", "IncompleteSignature", "MissingAuthenticationToken",
         "InvalidClientTokenId", "ExpiredTokenException", "ExpiredToken"}
_REJECTED = {"ValidationError", "ValidationException"}
_IN_STREAM = {"ModelStreamError", "InternalStreamFailure"}


def _container_error(original_message: Any) -> ErrorObject:
    """The container's own JSON error (`OriginalMessage`), its fields; empty if not JSON."""
    try:
        obj = orjson.loads(original_message) if isinstance(original_message, str) else None
    except orjson.JSONDecodeError:
        return ErrorObject()
    return error_object(obj)


def _retry_after(resp: dict[str, Any]) -> float | None:
    headers = (resp.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    try:
        return float(headers["retry-after"]) if "retry-after" in headers else None
    except ValueError:
        return None


def _map_model_error(resp: dict[str, Any], msg: str, backend: str) -> BackendError:
    err = _container_error(resp.get("OriginalMessage"))
    orig = resp.get("OriginalStatusCode")
    detail = err.message[:300]
    msg = f"{msg}, container status {orig}" + (f": {detail}" if detail else "")
    refusal = context_refusal(err) if not isinstance(orig, int) or orig < 500 else None
    if refusal is not None:
        return BackendContextExceeded(msg + window_note(refusal.window), backend=backend)
    if err.code == "content_filter":
        return BackendContentFiltered(msg, backend=backend)
    if not isinstance(orig, int) or orig >= 500:
        return BackendUnavailable(msg, backend=backend)
    if orig == 429:
        return BackendRateLimited(msg, backend=backend, retry_after=_retry_after(resp))
    return (BackendTimeout if orig == 408 else BackendRejected)(msg, backend=backend)


def _map_client_error(exc: bexc.ClientError, backend: str) -> BackendError:
    """By error code first, then HTTP status. The upstream `Message` (it can name the account
    and log group) stays on the chained cause, out of the client-facing message."""
    resp: dict[str, Any] = dict(exc.response)
    code = str((resp.get("Error") or {}).get("Code") or "")
    status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    msg = f"sagemaker {code or 'error'}" + (f" (HTTP {status})" if status else "")
    after = _retry_after(resp)
    if isinstance(exc, bexc.EventStreamError) or code in _IN_STREAM:
        return BackendStreamError(msg, backend=backend)
    if code == "ModelError":
        return _map_model_error(resp, msg, backend)
    if code in _REJECTED:
        return BackendRejected(msg, backend=backend)
    if code in _UNAVAILABLE:
        return BackendUnavailable(msg, backend=backend, retry_after=after)
    if code in _THROTTLED or status == 429:
        return BackendRateLimited(msg, backend=backend, retry_after=after)
    if code in _AUTH or status in (401, 403):
        return BackendAuthError(msg, backend=backend)
    if isinstance(status, int) and status >= 500:
        return BackendUnavailable(msg, backend=backend, retry_after=after)
    if isinstance(status, int) and status >= 400:
        return BackendRejected(msg, backend=backend)
    return BackendError(msg, backend=backend)


def map_error(exc: BaseException, backend: str, *, in_stream: bool = False) -> BackendError:
    """One upstream exception -> one router error (see the module docstring's table)."""
    name = type(exc).__name__
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, bexc.ClientError):
        return _map_client_error(exc, backend)
    if isinstance(exc, eventstream.ParserError | UnicodeDecodeError | orjson.JSONDecodeError):
        return BackendStreamError(f"sagemaker: malformed stream ({name})", backend=backend)
    if isinstance(exc, bexc.ReadTimeoutError | bexc.ConnectTimeoutError | TimeoutError
                  | urllib3.exceptions.TimeoutError):
        return BackendTimeout(f"sagemaker: timed out ({name})", backend=backend)
    if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
        return BackendAuthError(f"sagemaker: no usable AWS credentials ({name})", backend=backend)
    broken = (urllib3.exceptions.HTTPError, bexc.HTTPClientError, bexc.ConnectionError, OSError)
    if isinstance(exc, broken):
        if in_stream:
            return BackendStreamError(f"sagemaker: stream cut ({name})", backend=backend)
        return BackendUnavailable(f"sagemaker: connection failed ({name})", backend=backend)
    return BackendError(f"sagemaker: {name}", backend=backend)


@contextlib.contextmanager
def _mapped(backend: str, *, in_stream: bool = False) -> Iterator[None]:
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        raise map_error(exc, backend, in_stream=in_stream) from exc


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [plain(tc) for tc in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.reasoning and m.role == "assistant":
        out["reasoning"] = m.reasoning
    return out


def build_body(call: BackendCall, *, stream: bool) -> dict[str, Any]:
    """The Chat Completions body the container receives."""
    req = call.request
    body: dict[str, Any] = {"model": call.model_id, "messages": [_message(m) for m in req.messages]}
    if req.tools:
        body["tools"] = plain(req.tools)
    optional = {"tool_choice": req.tool_choice, "parallel_tool_calls": req.parallel_tool_calls,
                "max_tokens": req.max_tokens, "temperature": req.temperature, "top_p": req.top_p,
                "stop": req.stop, "seed": req.seed, "response_format": req.response_format,
                "reasoning_effort": req.reasoning_effort}
    body.update({k: plain(v) for k, v in optional.items() if v is not None})
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def parse_result(raw: bytes, backend: str) -> ChatResult:
    """A `chat.completion` body -> ChatResult."""
    with _mapped(backend, in_stream=True):
        obj = orjson.loads(raw)
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendStreamError("sagemaker: response has no choices", backend=backend)
    msg = choices[0].get("message") or {}
    calls = [tool_call(tc.get("id"), (tc.get("function") or {}).get("name"),
                       (tc.get("function") or {}).get("arguments"), backend, "sagemaker")
             for tc in msg.get("tool_calls") or []]
    return ChatResult(
        content=msg.get("content"),
        reasoning=msg.get("reasoning") or msg.get("reasoning_content") or None,
        tool_calls=calls,
        finish_reason=str(choices[0].get("finish_reason") or ("tool_calls" if calls else "stop")),
        usage=usage_from(obj.get("usage")) or Usage(),
    )


class ChunkAssembler(_OpenAIChunkAssembler):
    """`openai_stream.ChunkAssembler` with SageMaker's error label."""

    def __init__(self, backend: str) -> None:
        super().__init__(backend, label="sagemaker")


def _closer(body: Any) -> Callable[[], None]:
    """Close an EventStream even while a pool thread is blocked reading it: `close()` alone
    waits for the reader's lock (until the read timeout); urllib3's `HTTPResponse.shutdown()`
    (2.3+) wakes the blocked read first."""

    def close() -> None:
        shutdown = getattr(getattr(body, "_raw_stream", None), "shutdown", None)
        if callable(shutdown):
            with contextlib.suppress(Exception):
                shutdown()
        body.close()

    return close


def _until_done(batch: list[str]) -> tuple[list[str], bool]:
    """The payloads before `[DONE]`, and whether it was there."""
    for i, data in enumerate(batch):
        if data.strip() == "[DONE]":
            return batch[:i], True
    return batch, False


async def _sse_payloads(body: Any, pool: BlockingPool) -> AsyncIterator[list[str]]:
    """The SSE `data` payloads carried by an EventStream's PayloadParts, up to `[DONE]`: one
    list per part (those decoded together, never empty)."""
    decoder = SSEDecoder()
    parts = cast(AsyncGenerator[Any, None], pool.iterate(body, close=_closer(body)))
    async with contextlib.aclosing(parts):
        async for item in parts:
            part = item.get("PayloadPart") if isinstance(item, dict) else None
            batch = decoder.feed(bytes((part or {}).get("Bytes") or b""))
            if not batch:
                continue
            batch, done = _until_done(batch)
            if batch:
                yield batch
            if done:
                return
    batch, done = _until_done(decoder.feed(b"", final=True))
    if batch:
        yield batch


class SageMakerBackend(PooledBackend):
    """One SageMaker endpoint (optionally one inference component / variant on it)."""

    local = False

    def __init__(
        self, name: str, config: SageMakerConfig, *, control_endpoint_url: str | None = None
    ) -> None:
        self.name = name
        self.config = config
        t = config.timeouts
        self._runtime: Any = make_client(
            "sagemaker-runtime", region=config.region, endpoint_url=config.endpoint_url,
            profile=config.profile, connect_timeout_s=t.connect_s, read_timeout_s=t.read_s)
        self._control_url = control_endpoint_url or config.endpoint_url
        self._control: Any = None  # made on the first probe: the sagemaker model is big
        self._closed = False

    def _control_client(self) -> Any:
        """Control plane: its own URL (a runtime VPC endpoint is not the API endpoint); falls
        back to `endpoint_url`, which is what a simulator serving both planes needs."""
        if self._control is None:
            t = self.config.timeouts
            self._control = make_client(
                "sagemaker", region=self.config.region, endpoint_url=self._control_url,
                profile=self.config.profile, connect_timeout_s=t.connect_s,
                read_timeout_s=min(t.read_s, 10.0))
        return self._control

    def prepare(self, call: BackendCall, *, stream: bool) -> dict[str, Any]:
        """InvokeEndpoint kwargs for one attempt; a bug in building them is a
        RequestBuildError, raised before anything is sent."""
        if self._closed:
            raise BackendUnavailable("sagemaker: backend is closed", backend=self.name)
        return build_request(self.name, lambda: self._kwargs(call, stream=stream))

    def _kwargs(self, call: BackendCall, *, stream: bool) -> dict[str, Any]:
        cfg = self.config
        kw: dict[str, Any] = {
            "EndpointName": cfg.endpoint_name,
            "Body": orjson.dumps(build_body(call, stream=stream)),
            "ContentType": "application/json",
        }
        if not stream:  # a stream's type is the container's (text/event-stream): not forced
            kw["Accept"] = "application/json"
        if cfg.inference_component:
            kw["InferenceComponentName"] = cfg.inference_component
        if cfg.target_variant:
            kw["TargetVariant"] = cfg.target_variant
        if call.request_id and call.request_id.isprintable() and not call.request_id[0].isspace():
            kw["InferenceId"] = call.request_id[:64]
        return kw

    def _invoke(self, kwargs: dict[str, Any]) -> bytes:
        resp = self._runtime.invoke_endpoint(**kwargs)
        body = resp["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    async def chat(self, call: BackendCall) -> ChatResult:
        kwargs = self.prepare(call, stream=False)
        with _mapped(self.name):
            async with asyncio.timeout(call.timeout_s):
                raw = await self.pool.run(self._invoke, kwargs)
        return parse_result(raw, self.name)

    async def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]:
        kwargs = self.prepare(call, stream=True)
        with _mapped(self.name):
            resp = await self.pool.run(self._runtime.invoke_endpoint_with_response_stream, **kwargs)
        asm = ChunkAssembler(self.name)
        with _mapped(self.name, in_stream=True):
            payloads = cast(AsyncGenerator[list[str], None],
                            _sse_payloads(resp["Body"], self.pool))
            async with contextlib.aclosing(payloads):
                async for batch in payloads:
                    # A part's payloads together, so each event says whether the next one is
                    # already decoded (`ready_next`); an in-band error follows those before it.
                    events, error = asm.payloads(batch)
                    for event in events:
                        yield event
                    if error is not None:
                        raise error
        yield asm.final()

    async def probe(self) -> ProbeResult:
        if self._closed:
            return ProbeResult(ok=False, detail="closed")
        try:
            out = await self.pool.run(lambda: self._control_client().describe_endpoint(
                EndpointName=self.config.endpoint_name))
        except Exception as exc:  # noqa: BLE001 - a probe reports, it never raises
            err = map_error(exc, self.name)
            return ProbeResult(ok=False, detail=f"{err.code}: {err.message}"[:300])
        status = str(out.get("EndpointStatus") or "Unknown")
        return ProbeResult(ok=status == "InService", detail=f"EndpointStatus={status}")

    async def warm(self, model_id: str) -> None:
        return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in (self._runtime, self._control):
            if client is not None:
                with contextlib.suppress(Exception):
                    await self.pool.run(client.close)
        self.close_own_pool()
