"""Encode router results as Ollama's native JSON and NDJSON lines (orjson, no validation).

Chat answers carry `message: {role, content, thinking, tool_calls}`, generate answers
`response` and `thinking`; tool-call arguments are JSON objects. The last object of an answer
has `done: true`, `done_reason` (`stop` or `length`; a tool call is a `stop`, as in Ollama),
`prompt_eval_count`, `eval_count` and the durations in nanoseconds, measured at the router:
`prompt_eval_duration` is the time to the first event (queueing and prompt processing
included), `eval_duration` the time from there to the end, `load_duration` 0 (a cold load is
inside the first). A broken stream ends with one `{"error": "..."}` line and no `done: true`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from router.types import ChatResult, StreamEvent, ToolCall, Usage

NDJSON = "application/x-ndjson"


def rfc3339_now() -> str:
    """UTC now with nanoseconds, as Ollama writes `created_at`."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + (
        f".{ns % 1_000_000_000:09d}Z")


def done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def _arguments(arguments: str) -> Any:
    try:
        args = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {}
    return args if isinstance(args, dict) else {}


def tool_calls(calls: list[ToolCall], start: int = 0) -> list[dict[str, Any]]:
    return [{"id": tc.id, "function": {"index": start + i, "name": tc.function.name,
                                       "arguments": _arguments(tc.function.arguments)}}
            for i, tc in enumerate(calls)]


@dataclass(slots=True)
class Timing:
    """The answer's clock: started when the request arrived."""

    start_ns: int = field(default_factory=time.monotonic_ns)
    first_ns: int | None = None

    def first(self) -> None:
        if self.first_ns is None:
            self.first_ns = time.monotonic_ns()

    def final(self, usage: Usage | None) -> dict[str, Any]:
        end = time.monotonic_ns()
        first = self.first_ns or end
        out: dict[str, Any] = {"total_duration": end - self.start_ns, "load_duration": 0,
                               "prompt_eval_duration": first - self.start_ns,
                               "eval_duration": end - first}
        if usage is not None:  # unknown counts are left out, never sent as zeros
            out["prompt_eval_count"] = usage.prompt_tokens
            out["eval_count"] = usage.completion_tokens
            if usage.estimated:
                out["usage_estimated"] = True  # the router's estimate
        return out


class Encoder:
    """One answer in Ollama's shape: `chat` (message objects) or generate (`response`)."""

    def __init__(self, model: str, *, chat: bool, show_thinking: bool,
                 timing: Timing | None = None) -> None:
        self.model = model
        self.chat = chat
        self.show_thinking = show_thinking
        self.timing = timing or Timing()
        self._tools = 0

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": rfc3339_now()}

    def _piece(self, content: str = "", thinking: str | None = None,
               calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if self.chat:
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                msg["thinking"] = thinking
            if calls:
                msg["tool_calls"] = calls
            return {"message": msg}
        out: dict[str, Any] = {"response": content}
        if thinking:
            out["thinking"] = thinking
        return out

    def whole(self, result: ChatResult) -> bytes:
        """The `stream: false` answer."""
        self.timing.first()
        thinking = result.reasoning if self.show_thinking else None
        calls = tool_calls(result.tool_calls) if result.tool_calls and self.chat else None
        body = {**self._head(), **self._piece(result.content or "", thinking, calls),
                "done": True, "done_reason": done_reason(result.finish_reason),
                **self.timing.final(result.usage)}
        return orjson.dumps(body)

    def line(self, ev: StreamEvent) -> bytes:
        """NDJSON lines for one stream event (one line per piece, then the final one)."""
        self.timing.first()
        lines = []
        if ev.reasoning and self.show_thinking:
            lines.append({**self._head(), **self._piece("", ev.reasoning), "done": False})
        if ev.content:
            lines.append({**self._head(), **self._piece(ev.content), "done": False})
        if ev.tool_calls and self.chat:
            calls = tool_calls(ev.tool_calls, self._tools)
            self._tools += len(calls)
            lines.append({**self._head(), **self._piece("", None, calls), "done": False})
        if ev.finish_reason is not None:
            lines.append({**self._head(), **self._piece(), "done": True,
                          "done_reason": done_reason(ev.finish_reason),
                          **self.timing.final(ev.usage)})
        return b"".join(orjson.dumps(x) + b"\n" for x in lines)

    def load(self, unload: bool) -> bytes:
        """The answer to Ollama's load / unload call (no prompt, no messages)."""
        return orjson.dumps({**self._head(), **self._piece(), "done": True,
                             "done_reason": "unload" if unload else "load"})


def error_line(message: str) -> bytes:
    return orjson.dumps({"error": message}) + b"\n"
