"""Amazon Bedrock backend for gpt-oss (`openai.gpt-oss-20b-1:0`, `openai.gpt-oss-120b-1:0`).

Wire API: Converse / ConverseStream (docs/protocols.md, Bedrock Converse), not InvokeModel.
Converse returns
reasoning as structured `reasoningContent` blocks and deltas, tool calls as `toolUse` blocks with
ids, and takes `additionalModelRequestFields.reasoning_effort`; its stream events are modelled by
botocore. InvokeModel returns reasoning inline as `<reasoning>…</reasoning>` text in `content` (to
be stripped heuristically), and the chunk format of InvokeModelWithResponseStream for gpt-oss is
unconfirmed. The request/response mapping lives in `bedrock_converse.py` (pure).

Transport: boto3 `bedrock-runtime` from `aws_common.make_client` (botocore retries off: the router
retries; timeouts from `config.timeouts`; region, endpoint_url and profile from config). Every
blocking call and every `next()` on the event stream runs on `aws_common`'s thread pool, so the
event loop never blocks; one stream event per pool hop, so an event is marked
`StreamEvent.ready_next` only when one Converse event yields several (tool calls flushed at
`messageStop`). Credentials: botocore's standard chain (env, profile, SSO, role); a
Bedrock API key in `AWS_BEARER_TOKEN_BEDROCK` is picked up by botocore itself and sent as
`Authorization: Bearer` (HTTPS endpoints only: botocore refuses bearer auth over plain HTTP, so
a loopback simulator is reached with SigV4 and dummy keys) — nothing here reads it. A cancelled
stream shuts its socket down (urllib3 `HTTPResponse.shutdown`) so the pool thread blocked in
`recv` is freed at once; a cancelled `chat` leaves its thread to finish or time out.

Errors (by exception type, then `Error.Code` — case-insensitive, so the in-stream lower-camel
`throttlingException` maps like `ThrottlingException` — then HTTP status; message text only to
tell a context-window ValidationException from another, below):

    ThrottlingException / TooManyRequests    BackendRateLimited   retryable, Retry-After header
    ServiceQuotaExceededException            BackendRateLimited   not retryable (quota, not load)
    ModelNotReadyException                   BackendUnavailable   retryable
    InternalServer / ServiceUnavailable      BackendUnavailable   retryable
    ModelTimeoutException                    BackendTimeout       retryable
    ModelErrorException                      BackendUnavailable   retryable iff originalStatusCode
                                                                  is 429 or 5xx
    ModelStreamErrorException (in stream)    BackendStreamError   retryable (botocore drops the
                                                                  in-stream originalStatusCode)
    ValidationException                      BackendRejected, or BackendContextExceeded (below)
    AccessDenied / UnrecognizedClient /      BackendAuthError     not retryable
      signature/token errors, no credentials
    ResourceNotFoundException                BackendModelMissing  not retryable
    ParamValidationError (client side)       BackendRejected, a generic message (botocore's
                                             parameter paths only in the debug log)
    ReadTimeoutError / ConnectTimeoutError   BackendTimeout       (urllib3's too, raised mid-stream)
    EndpointConnectionError / ConnectionClosedError / other connection errors
                                             BackendUnavailable
    ChecksumMismatch and other event-stream ParserErrors, a cut body (urllib3 ProtocolError,
      ResponseStreamingError), a stream without `messageStop`
                                             BackendStreamError
    stopReason guardrail_intervened / content_filtered: chat raises BackendContentFiltered;
      a stream ends with finish_reason "content_filter".
    stopReason malformed_model_output / malformed_tool_use: BackendUnavailable (chat) or
      BackendStreamError (stream), retryable.

In-stream exception frames before any event was yielded map like the same code before the
stream (Bedrock reports throttling of streams as a `throttlingException` frame, docs/protocols.md,
AWS event-stream encoding);
after output, every in-band error is a BackendStreamError (the executor decides what the client
sees), and an error while draining after the final event is ignored.

Context window: Bedrock reports "input too long" only as a ValidationException message, so
that one case reads the text, through the small documented table `CONTEXT_PATTERNS` in
`bedrock_errors.py` (each entry cites its source and has a test). The signals, in order:
- before sending: the request's estimate (`estimate_tokens` + max_tokens) over
  `config.context_window` (default 128K) raises BackendContextExceeded without a call;
- a ValidationException whose message matches `CONTEXT_PATTERNS` is BackendContextExceeded
  (the window appended to the message when the text names it);
- any other ValidationException on a request whose estimate is within 25% of the window (the
  estimate's error margin) is BackendContextExceeded, otherwise BackendRejected;
- stopReason `model_context_window_exceeded` with no output yet is BackendContextExceeded (the
  simulator's streamed context fault); after output it is finish_reason "length".

Prefill: `BedrockConfig.prefill_default` is False (not confirmed that Converse continues a
trailing assistant turn for gpt-oss); a trailing assistant message is still sent as an
`assistant` turn with its text unchanged (`bedrock_converse.py`) when a policy sets `prefill`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from router.backends.aws_common import PooledBackend, make_client
from router.backends.base import BackendCall, ProbeResult, build_request
from router.backends.bedrock_converse import (
    CONTEXT_STOP,
    MALFORMED_STOPS,
    ToolArgumentsError,
    converse_request,
    estimate_tokens,
    finish_reason,
    parse_converse,
    tool_call,
    usage_of,
)
from router.backends.bedrock_errors import DEFAULT_CONTEXT_WINDOW, _Attempt, map_error
from router.backends.configs import BedrockConfig
from router.errors import (
    BackendContentFiltered,
    BackendContextExceeded,
    BackendError,
    BackendRejected,
    BackendStreamError,
    BackendUnavailable,
)
from router.types import ChatResult, StreamEvent, Usage

log = logging.getLogger("router.backends.bedrock")
@contextlib.contextmanager
def _mapped(a: _Attempt) -> Iterator[None]:
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        mapped = map_error(exc, a)
        if mapped is None:
            raise
        raise mapped from exc


def _abort_stream(stream: Any) -> None:
    """Release an event stream; shut the socket first so a thread blocked in recv wakes up."""
    raw = getattr(stream, "_raw_stream", None)  # botocore EventStream -> urllib3 HTTPResponse
    with contextlib.suppress(Exception):
        raw.shutdown()  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        stream.close()


def _abort_orphan(future: Any) -> None:
    if not future.cancelled() and future.exception() is None:
        _abort_stream(future.result().get("stream"))


@dataclass
class _StreamState:
    """Turns ConverseStream events into StreamEvents; tool input is buffered per block."""

    attempt: _Attempt
    tools: dict[int, list[Any]] = field(default_factory=dict)  # index -> [id, name, parts]
    stop: str | None = None
    usage: Usage | None = None
    saw_tools: bool = False
    finished: bool = False

    def _flush(self, index: int) -> list[StreamEvent]:
        tool_id, name, parts = self.tools.pop(index)
        self.saw_tools = True
        return [StreamEvent(tool_calls=[tool_call(tool_id, name, "".join(parts))])]

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if "contentBlockStart" in event:
            body = event["contentBlockStart"]
            use = (body.get("start") or {}).get("toolUse")
            if use is not None:
                self.tools[body.get("contentBlockIndex", 0)] = [use.get("toolUseId"),
                                                                use.get("name", ""), []]
        elif "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            delta = body.get("delta") or {}
            if delta.get("text"):
                out.append(StreamEvent(content=delta["text"]))
            elif (delta.get("reasoningContent") or {}).get("text"):
                out.append(StreamEvent(reasoning=delta["reasoningContent"]["text"]))
            elif "toolUse" in delta:
                entry = self.tools.setdefault(body.get("contentBlockIndex", 0), [None, "", []])
                entry[2].append(delta["toolUse"].get("input") or "")
        elif "contentBlockStop" in event:
            if event["contentBlockStop"].get("contentBlockIndex", 0) in self.tools:
                out.extend(self._flush(event["contentBlockStop"].get("contentBlockIndex", 0)))
        elif "messageStop" in event:
            for index in sorted(self.tools):
                if out:
                    out[-1].ready_next = True  # several tool calls: decoded together
                out.extend(self._flush(index))
            self.stop = event["messageStop"].get("stopReason") or "end_turn"
        elif "metadata" in event:
            self.usage = usage_of(event["metadata"].get("usage"))
            if self.stop is not None:
                out.append(self.final())
        return out

    def final(self) -> StreamEvent:
        a = self.attempt
        if self.stop == CONTEXT_STOP and not a.emitted and not self.tools:
            raise BackendContextExceeded("bedrock: model_context_window_exceeded",
                                         backend=a.backend)
        if self.stop in MALFORMED_STOPS:
            raise BackendStreamError(f"bedrock: stopReason {self.stop}", backend=a.backend)
        self.finished = True
        return StreamEvent(finish_reason=finish_reason(self.stop, self.saw_tools),
                           usage=self.usage)


class BedrockBackend(PooledBackend):
    """gpt-oss on Amazon Bedrock through Converse / ConverseStream."""

    local = False

    def __init__(self, name: str, config: BedrockConfig) -> None:
        self.name = name
        self.config = config
        self._client: Any = make_client(
            "bedrock-runtime",
            region=config.region,
            endpoint_url=config.endpoint_url,
            profile=config.profile,
            connect_timeout_s=config.timeouts.connect_s,
            read_timeout_s=config.timeouts.read_s,
        )

    def prepare(self, call: BackendCall) -> tuple[dict[str, Any], _Attempt]:
        """Converse kwargs for one attempt; raises BackendContextExceeded, BackendRejected or
        RequestBuildError (a bug in the mapping), and sends nothing."""
        return build_request(self.name, lambda: self._prepare(call))

    def _prepare(self, call: BackendCall) -> tuple[dict[str, Any], _Attempt]:
        request = call.request
        window = self.config.context_window or DEFAULT_CONTEXT_WINDOW
        attempt = _Attempt(self.name, estimate_tokens(request) + (request.max_tokens or 0), window)
        if attempt.estimate > window:
            raise BackendContextExceeded(
                f"bedrock: about {attempt.estimate} tokens requested, window is {window}",
                backend=self.name)
        try:
            return converse_request(request, call.model_id), attempt
        except ToolArgumentsError as exc:
            raise BackendRejected(str(exc), backend=self.name, param="messages") from exc

    async def chat(self, call: BackendCall) -> ChatResult:
        kwargs, attempt = self.prepare(call)
        with _mapped(attempt):
            response = await self.pool.run(self._client.converse, **kwargs)
        result, stop = parse_converse(response)
        if result.finish_reason == "content_filter":
            raise BackendContentFiltered(f"bedrock: stopReason {stop}", backend=self.name)
        if stop == CONTEXT_STOP and not (result.content or result.tool_calls):
            raise BackendContextExceeded(f"bedrock: stopReason {stop}", backend=self.name)
        if stop in MALFORMED_STOPS:
            raise BackendUnavailable(f"bedrock: stopReason {stop}", backend=self.name)
        return result

    async def _open(self, kwargs: dict[str, Any]) -> Any:
        """Start ConverseStream; if we are cancelled meanwhile, release the late response."""
        future = self.pool.submit(partial(self._client.converse_stream, **kwargs))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_abort_orphan)
            raise

    async def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]:
        kwargs, attempt = self.prepare(call)
        state = _StreamState(attempt)
        with _mapped(attempt):
            response = await self._open(kwargs)
        events = response["stream"]
        inner = cast(AsyncGenerator[Any, None],
                     self.pool.iterate(events, close=partial(_abort_stream, events)))
        try:
            with _mapped(attempt):
                async for raw in inner:
                    if state.finished:
                        continue  # drain to the end so the connection can be reused
                    for event in state.feed(raw):
                        attempt.emitted = True
                        yield event
        except BackendError:
            if not state.finished:
                raise  # once the final event is out, a failing drain changes nothing
        finally:
            await inner.aclose()
        if not state.finished:
            if state.stop is None:
                raise BackendStreamError("bedrock: stream ended without messageStop",
                                         backend=self.name)
            yield state.final()

    async def probe(self) -> ProbeResult:
        return ProbeResult(ok=True, detail="cloud: not probed")

    async def warm(self, model_id: str) -> None:
        return None

    async def aclose(self) -> None:
        try:
            await self.pool.run(self._client.close)
        finally:
            self.close_own_pool()
