"""Decoding OpenAI Chat Completions output, independent of transport: pure, no I/O.

`SSEDecoder` turns bytes cut at arbitrary positions (also inside multi-byte UTF-8 characters)
into complete SSE `data` payloads; `ChunkAssembler` turns `chat.completion.chunk` objects into
StreamEvents (reasoning from `reasoning` or `reasoning_content`, tool-call fragments joined by
index and emitted whole at finish, the last usage seen, exactly one final event); `usage_from`
and `tool_call` read a usage object and one tool call from either a chunk or a whole
`chat.completion`. Any backend that receives OpenAI-style streams can use them (SageMaker's
PayloadParts do). An in-band error before any output that is a context-window refusal
(`openai_errors.context_refusal`) is BackendContextExceeded; other errors are
BackendStreamError, their messages prefixed with `label` (the upstream's kind, e.g. "sagemaker";
the backend's name by default). A payload that is not JSON, or not an object, becomes one
`StreamEvent(malformed=True)` (the stream session skips it and counts it; too many in a row end
the stream). `ChunkAssembler.payloads` decodes the payloads of one read together, so each event
can say whether the next one is already decoded (`StreamEvent.ready_next`).
"""

from __future__ import annotations

import codecs
import secrets
import string
from typing import Any

import orjson

from router.backends.context_errors import window_note
from router.backends.openai_errors import context_refusal, error_object
from router.errors import BackendContextExceeded, BackendStreamError
from router.types import FunctionCall, StreamEvent, ToolCall, Usage

_ID_CHARS = string.ascii_lowercase + string.digits


def tool_call_id() -> str:
    """A generated tool call id: `call_` + 8 random lowercase alphanumerics."""
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(8))


def usage_from(d: Any) -> Usage | None:
    """An OpenAI `usage` object -> Usage (reasoning tokens when reported); None if absent."""
    if not isinstance(d, dict):
        return None
    details = d.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return Usage(int(d.get("prompt_tokens") or 0), int(d.get("completion_tokens") or 0),
                 int(reasoning) if isinstance(reasoning, int) else None)


def tool_call(call_id: Any, name: Any, arguments: Any, backend: str,
              label: str | None = None) -> ToolCall:
    """One whole tool call; the upstream id is kept, a missing one generated."""
    if not isinstance(name, str) or not name:
        raise BackendStreamError(f"{label or backend}: tool call without a function name",
                                 backend=backend)
    fn = FunctionCall.model_validate({"name": name, "arguments": arguments or "{}"})
    return ToolCall(id=call_id if isinstance(call_id, str) and call_id else tool_call_id(),
                    function=fn)


class SSEDecoder:
    """Bytes in arbitrary slices -> complete SSE `data` payloads (UTF-8 decoded incrementally)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._text = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes, *, final: bool = False) -> list[str]:
        self._text += self._decoder.decode(chunk, final=final)
        out: list[str] = []
        lines = self._text.split("\n")
        self._text = lines.pop()
        if final and self._text:
            lines.append(self._text)
            self._text = ""
        for line in lines:
            line = line.rstrip("\r")
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                self._data.append(line[6:] if line.startswith("data: ") else line[5:])
        if final and self._data:
            out.append("\n".join(self._data))
            self._data = []
        return out


class ChunkAssembler:
    """`chat.completion.chunk` objects -> StreamEvents; tool calls joined by index."""

    def __init__(self, backend: str, *, label: str | None = None) -> None:
        self.backend = backend
        self.label = label or backend
        self.finish: str | None = None
        self.usage: Usage | None = None
        self._tools: dict[int, dict[str, Any]] = {}
        self._emitted = False  # output has been produced (an error then is a stream error)

    def payload(self, data: str) -> list[StreamEvent]:
        """One SSE `data` payload -> events; undecodable JSON is one malformed marker."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return [StreamEvent(malformed=True)]
        return self.chunk(obj)

    def payloads(self, batch: list[str]) -> tuple[list[StreamEvent], Exception | None]:
        """The events of payloads decoded together (one read), up to an in-band error (then
        returned, to be raised after the events before it); each marked `ready_next` when a
        well-formed event follows it in the batch."""
        events: list[StreamEvent] = []
        for data in batch:
            try:
                more = self.payload(data)
            except Exception as exc:  # noqa: BLE001 - raised after the events before it
                return events, exc
            for ev in more:
                if events and not ev.malformed:
                    events[-1].ready_next = True
                events.append(ev)
        return events, None

    def chunk(self, obj: Any) -> list[StreamEvent]:
        if not isinstance(obj, dict):
            return [StreamEvent(malformed=True)]
        if obj.get("error") is not None:
            text = f"{self.label}: in-band error: {obj['error']}"[:500]
            refusal = None if self._emitted else context_refusal(error_object(obj))
            if refusal is not None:
                raise BackendContextExceeded(text + window_note(refusal.window),
                                             backend=self.backend)
            raise BackendStreamError(text, backend=self.backend)
        self.usage = usage_from(obj.get("usage")) or self.usage
        events: list[StreamEvent] = []
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning") or delta.get("reasoning_content") or None
            content = delta.get("content") or None
            if reasoning or content:
                self._emitted = True
                events.append(StreamEvent(content=content, reasoning=reasoning))
            for pos, frag in enumerate(delta.get("tool_calls") or []):
                self._tool_fragment(frag, pos)
            if choice.get("finish_reason") and self.finish is None:
                self.finish = str(choice["finish_reason"])
                if self._tools:
                    events.append(StreamEvent(tool_calls=self._whole_tools()))
        return events

    def _tool_fragment(self, frag: dict[str, Any], pos: int) -> None:
        entry = self._tools.setdefault(int(frag.get("index", pos)), {"id": None, "name": None,
                                                                     "args": []})
        entry["id"] = entry["id"] or frag.get("id")
        fn = frag.get("function") or {}
        entry["name"] = entry["name"] or fn.get("name")
        args = fn.get("arguments")
        if isinstance(args, dict | list):
            entry["args"] = [orjson.dumps(args).decode()]
        elif isinstance(args, str):
            entry["args"].append(args)

    def _whole_tools(self) -> list[ToolCall]:
        return [tool_call(e["id"], e["name"], "".join(e["args"]), self.backend, self.label)
                for _, e in sorted(self._tools.items())]

    def final(self) -> StreamEvent:
        if self.finish is None:
            raise BackendStreamError(
                f"{self.label}: stream ended without finish_reason or [DONE]",
                backend=self.backend)
        return StreamEvent(finish_reason=self.finish, usage=self.usage)
