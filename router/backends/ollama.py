"""Ollama backend: the native API, `POST /api/chat` (docs/protocols.md, Ollama).

Wire API: JSON over HTTP; the request body is built in `ollama_wire.py`. Streams are NDJSON,
one object a line, ending with a `done:true` line carrying `done_reason` and token counts; an
`{"error": ...}` line after output has started is an in-band failure.
Probes: `GET /api/version` and `GET /api/ps` (resident models, VRAM share, context length),
plus free GPU memory from NVML when the router runs on the GPU host; `GET /api/tags` (the models
it forwards to ollama.com carry `remote_host`) and `GET /api/status` (whether its cloud features
are disabled, 0.16.2+), both optional (see `ollama_cloud.py`). `serves_locally` says whether a
model id runs on this host: not an Ollama cloud model by its tag, by the last probe, or by a
chat answer that came back with `remote_host`.
Request building (`prepare`) runs before the connection is opened: a bug in it is a
RequestBuildError, never "Ollama unreachable".
Auth: none (Ollama has no authentication; keep it on a trusted network).
Limits: Ollama serves `OLLAMA_NUM_PARALLEL` requests per model at once and queues up to
`OLLAMA_MAX_QUEUE` (503 beyond); loading a model sends nothing until it is resident.

Hot path: one pooled aiohttp session per event loop, orjson both ways, no response validation.
Errors map by exception type and HTTP status, with one exception: Ollama has no error code, so
a context-window refusal (requests set `truncate: false`, so a prompt over the loaded window is
refused instead of cut) is recognised in the error string by `ollama_errors.context_refusal`
(llama-server's JSON error type first, then a small documented text table) and raised as
BackendContextExceeded, which the executor answers by moving to a larger window; and the 503
of a full queue (`OLLAMA_MAX_QUEUE`, `ollama_errors.is_busy`) is BackendRateLimited: load, which
fails over but never counts toward the local breaker (any other 503 still does).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import aiohttp
import orjson

from router.backends.base import BackendCall, LoadedModel, ProbeResult, build_request
from router.backends.configs import OllamaConfig
from router.backends.context_errors import window_note
from router.backends.gpu import read_gpu_memory
from router.backends.gpu import unavailable_reason as nvml_unavailable_reason
from router.backends.ollama_cloud import cloud_status, is_cloud_tag, remote_host, remote_models
from router.backends.ollama_errors import context_refusal, is_busy
from router.backends.ollama_wire import build_payload, tool_calls
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
from router.types import (
    ChatResult,
    StreamEvent,
    Usage,
)

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_FINISH = {"stop": "stop", "length": "length"}
_NOT_CONTEXT = frozenset({401, 403, 404, 408, 429})  # statuses whose meaning is their own


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
        self._remote: dict[str, str] = {}  # model id -> remote host, from probes and answers

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
        self, call: BackendCall, payload: bytes
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self._http().post(self._chat_url, data=payload,
                                 headers=_HEADERS, timeout=self._timeout_for(call))

    def serves_locally(self, model_id: str) -> bool:
        """False for one of Ollama's cloud models (by its tag, or as this host reported it)."""
        return not is_cloud_tag(model_id) and remote_host(model_id, self._remote) is None

    def prepare(self, call: BackendCall, stream: bool) -> bytes:
        """The `/api/chat` body; raises BackendRejected or RequestBuildError, sends nothing."""
        return build_request(self.name, lambda: self._payload(call, stream))

    def _payload(self, call: BackendCall, stream: bool) -> bytes:
        return build_payload(call, self.config, stream)

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
        refusal = context_refusal(msg) if status not in _NOT_CONTEXT else None
        if refusal is not None:
            raise BackendContextExceeded(msg + window_note(refusal.window), backend=self.name)
        if status == 404:
            raise BackendModelMissing(msg, **kw)
        if status == 429 or is_busy(status, msg):
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
        payload = self.prepare(call, stream=False)
        try:
            async with self._post(call, payload) as resp:
                if resp.status != 200:
                    await self._raise_for_status(resp)
                raw = await resp.read()
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            self._raise_for_exc(exc)
        try:
            data = orjson.loads(raw)
            self._note_remote(call.model_id, data)
            return self._result(data)
        except BackendError:
            raise
        except (ValueError, TypeError, AttributeError):  # orjson.JSONDecodeError is a ValueError
            raise BackendStreamError(
                "ollama sent a malformed response", backend=self.name
            ) from None

    def _note_remote(self, model_id: str, data: Any) -> None:
        """An answer that says it came from a remote host marks the model as not local."""
        host = data.get("remote_host") if isinstance(data, dict) else None
        if host and model_id not in self._remote:
            self._remote[model_id] = str(host)

    def _result(self, data: Any) -> ChatResult:
        if "error" in data:
            raise BackendUnavailable(f"ollama error: {data['error']}", backend=self.name)
        if data.get("done") is False:
            raise BackendStreamError("ollama response was not done", backend=self.name)
        msg = data.get("message") or {}
        calls = tool_calls(msg.get("tool_calls"))
        return ChatResult(
            content=msg.get("content") or ("" if not calls else None),
            reasoning=msg.get("thinking") or None,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else _FINISH.get(data.get("done_reason"), "stop"),
            usage=Usage(data.get("prompt_eval_count") or 0, data.get("eval_count") or 0),
        )

    async def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]:
        payload = self.prepare(call, stream=True)
        started = False
        try:
            async with self._post(call, payload) as resp:
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
                    # Every whole line of this read first, so each event can say whether the
                    # next one is already here (`ready_next`); an error line is raised after
                    # the events before it, as when they were decoded one by one.
                    batch, done, error = self._events(lines, saw_tools)
                    for ev in batch:
                        saw_tools = saw_tools or bool(ev.tool_calls)
                        yield ev
                    if error is not None:
                        raise error
                    if done:
                        return
                tail = b"".join(pending)
                if tail.strip():
                    last, done = self._event(tail, saw_tools)
                    if last is not None:
                        yield last
                    if done:
                        return
                raise BackendStreamError("ollama stream ended without done", backend=self.name)
        except Exception as exc:  # noqa: BLE001 - mapped to the error tree
            self._raise_for_exc(exc, started)

    def _events(self, lines: list[bytes], saw_tools: bool,
                ) -> tuple[list[StreamEvent], bool, Exception | None]:
        """The events of whole NDJSON lines, up to a `done` line (True) or an error line (its
        error); each marked `ready_next` when a well-formed event follows it in the batch."""
        batch: list[StreamEvent] = []
        done = False
        error: Exception | None = None
        for line in lines:
            if not line.strip():
                continue
            try:
                ev, done = self._event(line, saw_tools)
            except Exception as exc:  # noqa: BLE001 - raised after the events before it
                error = exc
                break
            if ev is not None:
                saw_tools = saw_tools or bool(ev.tool_calls)
                if batch and not ev.malformed:
                    batch[-1].ready_next = True
                batch.append(ev)
            if done:
                break
        return batch, done, error

    def _event(self, line: bytes, saw_tools: bool) -> tuple[StreamEvent | None, bool]:
        try:
            obj = orjson.loads(line)
            msg = obj.get("message") or {}
            raw_calls = msg.get("tool_calls")
            calls = tool_calls(raw_calls) if raw_calls else None
            content = msg.get("content") or None
            thinking = msg.get("thinking") or None
        except (ValueError, TypeError, AttributeError):  # orjson.JSONDecodeError is a ValueError
            return StreamEvent(malformed=True), False  # the stream session skips and counts it
        if "error" in obj:
            raise BackendStreamError(f"ollama error mid-stream: {obj['error']}", backend=self.name)
        if obj.get("remote_host"):
            self._note_remote(str(obj.get("model") or ""), obj)
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

    async def _optional_json(self, path: str, timeout: aiohttp.ClientTimeout) -> Any:
        """A probe call whose failure (older Ollama, 404) only means "unknown"."""
        try:
            return await self._get_json(path, timeout)
        except Exception:  # noqa: BLE001 - optional facts
            return None

    async def probe(self) -> ProbeResult:
        connect = self.config.timeouts.connect_s
        timeout = aiohttp.ClientTimeout(total=max(2.0, 2 * connect), sock_connect=connect)
        try:
            version, ps, tags, status = await asyncio.gather(
                self._get_json("/api/version", timeout), self._get_json("/api/ps", timeout),
                self._optional_json("/api/tags", timeout),
                self._optional_json("/api/status", timeout),
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
        result.remote_models = remote_models(tags)
        self._remote.update(result.remote_models)
        result.cloud_disabled, result.cloud_source = cloud_status(status)
        if self.config.use_nvml:
            mem = await asyncio.to_thread(read_gpu_memory, self.config.nvml_device)
            if mem is not None:
                result.gpu_free_bytes, result.gpu_total_bytes = mem
            else:  # one line, e.g. "NVML unavailable: install 'hybrid-router[nvml]'"
                result.detail = nvml_unavailable_reason() or "NVML unavailable"
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
