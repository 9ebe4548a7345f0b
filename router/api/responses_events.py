"""Encode a router event stream as the Responses API's server-sent events.

Each event is `event: <type>\\ndata: {json}\\n\\n`, numbered by `sequence_number` from 0 in the
order sent. The sequence for one response:

    response.created, response.in_progress
    per output item (reasoning, then message, then each function call), in output order:
      response.output_item.added  (item in_progress, empty)
      response.content_part.added (reasoning_text / output_text part)   -- not for calls
      response.reasoning_text.delta | response.output_text.delta | ...arguments.delta  (n)
      response.reasoning_text.done  | response.output_text.done  | ...arguments.done
      response.content_part.done                                        -- not for calls
      response.output_item.done   (item whole)
    response.completed | response.incomplete (finish reason `length` / `content_filter`)

A stream that breaks after it started ends with `response.failed` (status `failed`, `error`
with `code` and `message`, the output so far marked incomplete), never with a success.
`final` holds the last Response object sent (what a stored response keeps).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from router.api.responses_objects import (
    Status,
    function_call_item,
    message_item,
    reasoning_item,
    response_object,
    status_for,
    usage_object,
)
from router.ids import new_id
from router.types import StreamEvent

__all__ = ["ResponseEvents"]

_REASONING, _MESSAGE = "reasoning", "message"


class ResponseEvents:
    def __init__(self, *, response_id: str, created_at: int, model: str,
                 echo: dict[str, Any], instructions: str | None,
                 previous_response_id: str | None, store: bool) -> None:
        self.response_id = response_id
        self._base: dict[str, Any] = {
            "response_id": response_id, "created_at": created_at, "model": model, "echo": echo,
            "instructions": instructions, "previous_response_id": previous_response_id,
            "store": store}
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._text: list[str] = []
        self._reasoning_text = ""

    # -- framing -----------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _response(self, status: Status, **extra: Any) -> dict[str, Any]:
        return response_object(status=status, output=list(self.output), **self._base, **extra)

    # -- the stream ----------------------------------------------------------------------------

    def start(self) -> bytes:
        snapshot = self._response(Status.IN_PROGRESS)
        return (self._event("response.created", response=snapshot)
                + self._event("response.in_progress", response=snapshot))

    def encode(self, ev: StreamEvent) -> bytes:
        out: list[bytes] = []
        if ev.reasoning:
            out.append(self._delta(_REASONING, ev.reasoning))
        if ev.content:
            out.append(self._delta(_MESSAGE, ev.content))
        for call in ev.tool_calls or ():
            out.append(self._close())
            index = len(self.output)
            item = function_call_item(call)
            self.output.append(item)
            added = {**item, "arguments": "", "status": Status.IN_PROGRESS.value}
            ids = {"item_id": item["id"], "output_index": index}
            out.append(self._event("response.output_item.added", output_index=index,
                                   item=added))
            out.append(self._event("response.function_call_arguments.delta", **ids,
                                   delta=item["arguments"]))
            out.append(self._event("response.function_call_arguments.done", **ids,
                                   name=item["name"], arguments=item["arguments"]))
            out.append(self._event("response.output_item.done", output_index=index,
                                   item=item))
        if ev.finish_reason is not None:
            out.append(self._finish(ev))
        return b"".join(out)

    def fail(self, code: str, message: str) -> bytes:
        """The end of a stream that broke after it started."""
        if self._open is not None:
            self._open["status"] = Status.INCOMPLETE.value
            self._fill(self._open)
            self._open = None
        for item in self.output:
            if item.get("type") != _REASONING:
                item["status"] = Status.INCOMPLETE.value
        self.final = self._response(Status.FAILED, error={"code": code, "message": message})
        return self._event("response.failed", response=self.final)

    # -- items ---------------------------------------------------------------------------------

    def _delta(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open is None or self._open["type"] != kind:
            out += self._close() + self._begin(kind)
        self._text.append(text)
        if kind == _REASONING:
            self._reasoning_text += text
        name = "response.reasoning_text.delta" if kind == _REASONING else (
            "response.output_text.delta")
        extra: dict[str, Any] = {} if kind == _REASONING else {"logprobs": []}
        return out + self._event(name, **self._ids(), content_index=0, delta=text, **extra)

    def _ids(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self.output) - 1}

    def _begin(self, kind: str) -> bytes:
        if kind == _REASONING:
            item = reasoning_item("", new_id("rs"))
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = message_item("", Status.IN_PROGRESS, new_id("msg"))
            item["content"] = []
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self.output.append(item)
        self._open, self._text = item, []
        index = len(self.output) - 1
        return (self._event("response.output_item.added", output_index=index, item=dict(item))
                + self._event("response.content_part.added", **self._ids(), content_index=0,
                              part=part))

    def _fill(self, item: dict[str, Any]) -> dict[str, Any]:
        text = "".join(self._text)
        if item["type"] == _REASONING:
            part: dict[str, Any] = {"type": "reasoning_text", "text": text}
        else:
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item["content"] = [part]
        return part

    def _close(self, status: Status = Status.COMPLETED) -> bytes:
        item = self._open
        if item is None:
            return b""
        ids = self._ids()
        if item["type"] == _MESSAGE:
            item["status"] = status.value
        part = self._fill(item)
        done_name = "response.reasoning_text.done" if item["type"] == _REASONING else (
            "response.output_text.done")
        extra: dict[str, Any] = {} if item["type"] == _REASONING else {"logprobs": []}
        out = (self._event(done_name, **ids, content_index=0, text=part["text"], **extra)
               + self._event("response.content_part.done", **ids, content_index=0, part=part)
               + self._event("response.output_item.done", output_index=ids["output_index"],
                             item=item))
        self._open = None
        return out

    def _finish(self, ev: StreamEvent) -> bytes:
        status, incomplete = status_for(ev.finish_reason)
        closing = self._close(status)
        if not self.output:  # an empty answer is still one (empty) message
            closing += self._begin(_MESSAGE) + self._close(status)
        self.final = self._response(status, usage=usage_object(ev.usage, self._reasoning_text),
                                    incomplete_details=incomplete,
                                    completed_at=int(time.time()))
        name = "response.completed" if status is Status.COMPLETED else "response.incomplete"
        return closing + self._event(name, response=self.final)
