"""Ollama backend: the native API, `POST /api/chat` (protocols.md §1).

Wire API: JSON over HTTP. Requests carry `model`, `messages` (assistant reasoning as
`thinking`, tool-call arguments as JSON objects, tool results with `tool_name` and
`tool_call_id`), `tools`, `think` (gpt-oss effort), `options` (temperature, top_p, seed,
stop, num_predict, num_ctx), `format` and `keep_alive`. Streams are NDJSON, one object a line,
ending with a `done:true` line carrying `done_reason` and token counts; an `{"error": ...}` line
after output has started is an in-band failure.
Probes: `GET /api/version` and `GET /api/ps` (resident models, VRAM share, context length),
plus free GPU memory from NVML when the router runs on the GPU host.
Auth: none (Ollama has no authentication; keep it on a trusted network).
Limits: Ollama serves `OLLAMA_NUM_PARALLEL` requests per model at once and queues up to
`OLLAMA_MAX_QUEUE` (503 beyond); loading a model sends nothing until it is resident.

Hot path: one pooled aiohttp session per event loop, orjson both ways, no response validation.
Errors map by exception type and HTTP status only, never by message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import string
import time
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import aiohttp
import orjson

from router.backends.base import BackendCall, LoadedModel, ProbeResult
from router.backends.configs import OllamaConfig
from router.backends.gpu import read_gpu_memory
from router.errors import (
    BackendAuthError,
    BackendError,
    BackendModelMissing,
    BackendRateLimited,
    BackendRejected,
    BackendStreamError,
    BackendTimeout,
    BackendUnavailable,
)
from router.types import (
    ChatRequest,
    ChatResult,
    FunctionCall,
    Message,
    StreamEvent,
    ToolCall,
    Usage,
)

_ID_CHARS = string.ascii_lowercase + string.digits
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_FINISH = {"stop": "stop", "length": "length"}


def _call_id() -> str:
    return "call_" + "".join(random.choices(_ID_CHARS, k=8))


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _args_object(arguments: str) -> dict[str, Any]:
    try:
        args = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise BackendRejected(
            "tool call arguments must be a JSON object for Ollama", param="messages"
        )
    return args


def _messages(msgs: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in msgs:
        role = m.role
        if role == "assistant":
            d: dict[str, Any] = {"role": "assistant", "content": m.content or ""}
            if m.reasoning:
                d["thinking"] = m.reasoning
            if m.tool_calls:
                calls = []
                for i, tc in enumerate(m.tool_calls):
                    names[tc.id] = tc.function.name
                    fn = {"index": i, "name": tc.function.name,
                          "arguments": _args_object(tc.function.arguments)}
                    calls.append({"id": tc.id, "function": fn})
                d["tool_calls"] = calls
        elif role == "tool":
            d = {"role": "tool", "content": m.content or ""}
            name = names.get(m.tool_call_id or "") or m.name
            if name:
                d["tool_name"] = name
            if m.tool_call_id:
                d["tool_call_id"] = m.tool_call_id
        else:
            d = {"role": "system" if role == "developer" else role, "content": m.content or ""}
        out.append(d)
    return out


def _tool_calls(raw: Any) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for tc in raw or ():
        fn = tc.get("function") or {}
        args = fn.get("arguments")
        if not isinstance(args, str):
            args = orjson.dumps(args if args is not None else {}).decode()
        calls.append(ToolCall.model_construct(
            id=tc.get("id") or _call_id(), type="function",
            function=FunctionCall.model_construct(name=str(fn.get("name") or ""), arguments=args),
        ))
    return calls


class OllamaBackend:
    """One Ollama host."""

    local = True

    def __init__(self, name: str, config: OllamaConfig) -> None:
        self.name = name
        self.config = config
        self._base = config.base_url.rstrip("/")
        self._chat_url = self._base + "/api/chat"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.timeouts.connect_s, sock_read=config.timeouts.read_s
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
            self._loop = loop
        return self._session

    def _timeout_for(self, call: BackendCall) -> aiohttp.ClientTimeout:
        if call.timeout_s is None:
            return self._timeout
        t = self.config.timeouts
        return aiohttp.ClientTimeout(
            total=call.timeout_s, sock_connect=t.connect_s, sock_read=t.read_s
        )

    def _post(
        self, call: BackendCall, stream: bool
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self._http().post(self._chat_url, data=self._payload(call, stream),
                                 headers=_HEADERS, timeout=self._timeout_for(call))

    def _payload(self, call: BackendCall, stream: bool) -> bytes:
        req: ChatRequest = call.request
        body: dict[str, Any] = {"model": call.model_id, "messages": _messages(req.messages),
                                "stream": stream}
        if req.tools and req.tool_choice != "none":
            body["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
        if req.reasoning_effort:
            body["think"] = req.reasoning_effort
        opts: dict[str, Any] = {}
        if req.temperature is not None:
            opts["temperature"] = req.temperature
        if req.top_p is not None:
            opts["top_p"] = req.top_p
        if req.seed is not None:
            opts["seed"] = req.seed
        if req.stop:
            opts["stop"] = req.stop
        if req.max_tokens is not None:
            opts["num_predict"] = req.max_tokens
        if self.config.num_ctx:
            opts["num_ctx"] = self.config.num_ctx
        if opts:
            body["options"] = opts
        rf = req.response_format
        if rf:
            if rf.get("type") == "json_object":
                body["format"] = "json"
            elif rf.get("type") == "json_schema":
                schema = (rf.get("json_schema") or {}).get("schema")
                body["format"] = schema if isinstance(schema, dict) else "json"
        if self.config.keep_alive is not None:
            body["keep_alive"] = self.config.keep_alive
        return orjson.dumps(body)

    def _raise_for_exc(self, exc: BaseException, started: bool = False) -> NoReturn:
        if isinstance(exc, BackendError):
            raise exc
        if isinstance(exc, TimeoutError):
            raise BackendTimeout(f"ollama timed out: {exc!r}", backend=self.name) from exc
        if started:
            raise BackendStreamError(f"ollama stream broke: {exc!r}", backend=self.name) from exc
        if isinstance(exc, aiohttp.ClientPayloadError):
            raise BackendStreamError(f"ollama body broke: {exc!r}", backend=self.name) from exc
        raise BackendUnavailable(f"ollama unreachable: {exc!r}", backend=self.name) from exc

    async def _raise_for_status(self, resp: aiohttp.ClientResponse) -> NoReturn:
        status = resp.status
        try:
            raw = await resp.read()
            err = orjson.loads(raw).get("error")
            msg = str(err) if err else raw[:200].decode(errors="replace")
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError):
            msg = resp.reason or ""
        msg = f"ollama {status}: {msg}"
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        kw: dict[str, Any] = {"backend": self.name, "retry_after": retry_after}
        if status == 404:
            raise BackendModelMissing(msg, **kw)
        if status == 429:
            raise BackendRateLimited(msg, **kw)
        if status in (401, 403):
            raise BackendAuthError(msg, **kw)
        if status == 408:
            raise BackendTimeout(msg, **kw)
        if 400 <= status < 500 and status != 499:
            raise BackendRejected(msg, **kw)
        raise BackendUnavailable(msg, **kw)

    # -- chat -------------------------------------------------------------------------------
    async def chat(self, call: BackendCall) -> ChatResult:
        try:
            async with self._post(call, stream=False) as resp:
                if resp.status != 200:
                    await self._raise_for_status(resp)
                raw = await resp.read()
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            self._raise_for_exc(exc)
        try:
            return self._result(orjson.loads(raw))
        except BackendError:
            raise
        except (ValueError, TypeError, AttributeError):  # orjson.JSONDecodeError is a ValueError
            raise BackendStreamError(
                "ollama sent a malformed response", backend=self.name
            ) from None

    def _result(self, data: Any) -> ChatResult:
        if "error" in data:
            raise BackendUnavailable(f"ollama error: {data['error']}", backend=self.name)
        if data.get("done") is False:
            raise BackendStreamError("ollama response was not done", backend=self.name)
        msg = data.get("message") or {}
        calls = _tool_calls(msg.get("tool_calls"))
        return ChatResult(
            content=msg.get("content") or ("" if not calls else None),
            reasoning=msg.get("thinking") or None,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else _FINISH.get(data.get("done_reason"), "stop"),
            usage=Usage(data.get("prompt_eval_count") or 0, data.get("eval_count") or 0),
        )

    async def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]:
        started = False
        try:
            async with self._post(call, stream=True) as resp:
                if resp.status != 200:
                    await self._raise_for_status(resp)
                started = True
                saw_tools = False
                pending: list[bytes] = []
                async for chunk in resp.content.iter_any():
                    if b"\n" not in chunk:
                        pending.append(chunk)
                        continue
                    if pending:
                        pending.append(chunk)
                        chunk = b"".join(pending)
                        pending.clear()
                    lines = chunk.split(b"\n")
                    rest = lines.pop()
                    if rest:
                        pending.append(rest)
                    for line in lines:
                        if not line.strip():
                            continue
                        ev, done = self._event(line, saw_tools)
                        if ev is not None:
                            saw_tools = saw_tools or bool(ev.tool_calls)
                            yield ev
                        if done:
                            return
                tail = b"".join(pending)
                if tail.strip():
                    ev, done = self._event(tail, saw_tools)
                    if ev is not None:
                        yield ev
                    if done:
                        return
                raise BackendStreamError("ollama stream ended without done", backend=self.name)
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            self._raise_for_exc(exc, started)

    def _event(self, line: bytes, saw_tools: bool) -> tuple[StreamEvent | None, bool]:
        try:
            obj = orjson.loads(line)
            msg = obj.get("message") or {}
            raw_calls = msg.get("tool_calls")
            calls = _tool_calls(raw_calls) if raw_calls else None
            content = msg.get("content") or None
            thinking = msg.get("thinking") or None
        except (ValueError, TypeError, AttributeError):  # orjson.JSONDecodeError is a ValueError
            raise BackendStreamError("ollama sent a malformed stream line",
                                     backend=self.name) from None
        if "error" in obj:
            raise BackendStreamError(f"ollama error mid-stream: {obj['error']}", backend=self.name)
        if obj.get("done"):
            reason = "tool_calls" if saw_tools or calls else _FINISH.get(
                obj.get("done_reason"), "stop")
            usage = Usage(obj.get("prompt_eval_count") or 0, obj.get("eval_count") or 0)
            return StreamEvent(content=content, reasoning=thinking, tool_calls=calls,
                               finish_reason=reason, usage=usage), True
        if content is None and thinking is None and calls is None:
            return None, False
        return StreamEvent(content=content, reasoning=thinking, tool_calls=calls), False

    # -- probes and lifecycle ---------------------------------------------------------------
    async def _get_json(self, path: str, timeout: aiohttp.ClientTimeout) -> Any:
        async with self._http().get(self._base + path, timeout=timeout) as resp:
            if resp.status != 200:
                raise BackendUnavailable(f"{path} returned {resp.status}", backend=self.name)
            return orjson.loads(await resp.read())

    async def probe(self) -> ProbeResult:
        connect = self.config.timeouts.connect_s
        timeout = aiohttp.ClientTimeout(total=max(2.0, 2 * connect), sock_connect=connect)
        try:
            version, ps = await asyncio.gather(
                self._get_json("/api/version", timeout), self._get_json("/api/ps", timeout)
            )
            loaded = [
                LoadedModel(
                    model_id=str(m.get("model") or m.get("name")),
                    size=int(m.get("size") or 0),
                    size_vram=int(m.get("size_vram") or 0),
                    context_length=m.get("context_length") or None,
                )
                for m in ps.get("models") or ()
            ]
            result = ProbeResult(ok=True, version=version.get("version"), loaded=loaded)
        except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
            return ProbeResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
        if self.config.use_nvml:
            mem = await asyncio.to_thread(read_gpu_memory, self.config.nvml_device)
            if mem is not None:
                result.gpu_free_bytes, result.gpu_total_bytes = mem
        return result

    async def warm(self, model_id: str) -> None:
        body: dict[str, Any] = {"model": model_id, "messages": [], "stream": False}
        if self.config.keep_alive is not None:
            body["keep_alive"] = self.config.keep_alive
        if self.config.num_ctx:
            body["options"] = {"num_ctx": self.config.num_ctx}
        with contextlib.suppress(Exception):
            async with self._http().post(self._chat_url, data=orjson.dumps(body),
                                         headers=_HEADERS) as resp:
                await resp.read()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            with contextlib.suppress(Exception):
                await session.close()
