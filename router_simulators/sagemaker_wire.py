"""Pure half of the SageMaker simulator: the container's response bodies and error shapes.

`answer` turns a Chat Completions request body into the deterministic `Answer` (`script.py`,
plus the multi-byte `utf8_suffix` and the content_filter fault's empty answer);
`completion_body` renders it as a `chat.completion`, `stream_events` as the SSE
`chat.completion.chunk` bytes (role, reasoning, content, tool-call fragments, the `FINISH`
marker, finish, usage, `[DONE]`). `model_error_fields`, `upstream_error` and
`context_exceeded_error` build ModelError details; `sse_error`, `malformed_part` and
`stream_exception_payload` the midstream fault payloads. `SageMakerFault` adds SageMaker's error
details to a script.py fault; `SageMakerSimConfig` is the simulator's config. No aiohttp
here: `sagemaker.py` owns the HTTP side.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from router_simulators import eventstream
from router_simulators.prefill import scripted_answer
from router_simulators.script import Fault, Script, prompt_token_count
from router_simulators.service_time import AnswerLengths

STATUS_CODES = {400: "ValidationError", 424: "ModelError", 429: "ThrottlingException",
                500: "InternalFailure", 503: "ServiceUnavailable"}
FINISH = b"FINISH"  # marks, in `stream_events`, where the finish chunk and [DONE] begin


@dataclass
class SageMakerSimConfig:
    endpoints: tuple[str, ...] = ("gpt-oss-20b-endpoint",)
    token_delay_s: float = 0.0
    reasoning_field: Literal["reasoning", "reasoning_content"] = "reasoning"
    split_parts: bool = True
    part_sizes: tuple[int, ...] = (7, 1, 13, 2, 700, 5, 3)
    utf8_suffix: str = " – café"
    context_window: int = 131072  # vLLM max_model_len: prompt + max_tokens above it is a 400
    # service time (service_time.py): answer lengths, prefill rate, batched-decode slowdown
    answer_lengths: AnswerLengths = field(default_factory=AnswerLengths)
    prefill_tps: float = 0.0
    batch_slowdown: float = 0.0
    midstream_style: Literal["ModelStreamError", "InternalStreamFailure", "sse"] = (
        "ModelStreamError"
    )
    endpoint_status: str = "InService"
    region: str = "us-west-2"
    account: str = "123456789012"


@dataclass
class SageMakerFault(Fault):
    """A script.py fault plus SageMaker's extra error details."""

    original_status: int | None = None
    error_code: str | None = None


def model_error_fields(endpoint: str, region: str, account: str, orig: int,
                       inner: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A ModelError's `Message` and its extra fields for the container's error `inner`."""
    arn = f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/Endpoints/{endpoint}"
    message = f"Received client error ({orig}) from primary with message \"...\". See {arn}"
    return message, {"OriginalStatusCode": orig, "OriginalMessage": orjson.dumps(inner).decode(),
                     "LogStreamArn": arn}


def upstream_error(orig: int) -> dict[str, Any]:
    """The container's JSON error for an upstream status `orig`."""
    return {"error": {"message": f"upstream {orig}", "type": "BadRequestError"
                      if orig < 500 else "InternalServerError", "code": orig}}


def context_exceeded_error(window: int = 131072, prompt: int | None = None,
                           completion: int = 0) -> dict[str, Any]:
    """The container's JSON error for a prompt over the context length (vLLM's sentence, with
    OpenAI's `context_length_exceeded` code)."""
    message = f"This model's maximum context length is {window} tokens."
    if prompt is not None:
        message += (f" However, you requested {prompt + completion} tokens ({prompt} in the "
                    f"messages, {completion} in the completion). Please reduce the length of "
                    "the messages or completion.")
    return {"error": {"message": message, "type": "BadRequestError", "param": "messages",
                      "code": "context_length_exceeded"}}


def context_overflow(body: dict[str, Any], window: int) -> dict[str, Any] | None:
    """The container's error when the prompt plus `max_tokens` exceeds `window`, else None."""
    prompt = prompt_token_count([m for m in body.get("messages") or [] if isinstance(m, dict)])
    asked = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    asked = asked if isinstance(asked, int) else 0
    if prompt + asked <= window:
        return None
    return context_exceeded_error(window, prompt, asked)


def prefill_rejected_error(message: str) -> dict[str, Any]:
    """The container's 400 for a request ending in an assistant message (fault only)."""
    return {"object": "error", "message": message, "type": "BadRequestError", "param": None,
            "code": 400}


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any] | None,
           finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
           "choices": choices, "usage": usage}
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def usage_body(script: Script, extra_tokens: int) -> dict[str, Any]:
    done = script.completion_tokens + extra_tokens
    return {"prompt_tokens": script.prompt_tokens, "completion_tokens": done,
            "total_tokens": script.prompt_tokens + done,
            "completion_tokens_details": {"reasoning_tokens": len(script.reasoning)}}


@dataclass
class Answer:
    """What the container answers to one request."""

    script: Script
    content: list[str]
    finish: str
    call_id: str
    model: str
    tool_args: str = ""
    extra_tokens: int = 0
    cid: str = "chatcmpl-sim"
    created: int = field(default_factory=lambda: int(time.time()))


def answer(body: dict[str, Any], endpoint: str, utf8_suffix: str, fault: Fault | None,
           lengths: AnswerLengths | None = None) -> Answer:
    messages = body.get("messages") or []
    script = scripted_answer(messages, body.get("tools"), body.get("reasoning_effort"),
                             body.get("max_tokens") or body.get("max_completion_tokens"),
                             echo=fault is not None and fault.kind == "echo_prefill",
                             lengths=lengths, model=str(body.get("model") or endpoint))
    content, finish, extra = list(script.content), script.finish_reason, 0
    if content and utf8_suffix and finish == "stop":
        content.append(utf8_suffix)
        extra = 1
    if fault is not None and fault.kind == "content_filter":
        content, finish = [], "content_filter"
    args = orjson.dumps(script.tool_call[1]).decode() if script.tool_call else ""
    digest = hashlib.sha256(orjson.dumps(messages)).hexdigest()[:8]
    return Answer(script, content, finish, f"call_{digest}", str(body.get("model") or endpoint),
                  args, extra)


def completion_body(a: Answer, reasoning_field: str) -> dict[str, Any]:
    """The whole `chat.completion` for a non-stream request."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(a.content) or None,
                               reasoning_field: "".join(a.script.reasoning) or None}
    if a.script.tool_call and a.finish == "tool_calls":
        message["tool_calls"] = [{"id": a.call_id, "type": "function", "function": {
            "name": a.script.tool_call[0], "arguments": a.tool_args}}]
    return {"id": a.cid, "object": "chat.completion", "created": a.created, "model": a.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": a.finish}],
            "usage": usage_body(a.script, a.extra_tokens)}


def stream_events(a: Answer, field_name: str, with_usage: bool) -> Iterator[tuple[bool, bytes]]:
    """(is_token, SSE bytes) for the whole answer, ending with the finish, usage and [DONE]."""
    def ck(delta: dict[str, Any] | None, finish: str | None = None,
           use: dict[str, Any] | None = None) -> bytes:
        return _chunk(a.cid, a.created, a.model, delta, finish, use)

    yield False, ck({"role": "assistant", "content": ""})
    for tok in a.script.reasoning:
        yield True, ck({field_name: tok})
    if a.finish != "content_filter":
        for tok in a.content:
            yield True, ck({"content": tok})
    if a.script.tool_call and a.finish == "tool_calls":
        name = a.script.tool_call[0]
        yield True, ck({"tool_calls": [{"index": 0, "id": a.call_id, "type": "function",
                                        "function": {"name": name, "arguments": ""}}]})
        half = len(a.tool_args) // 2
        for frag in (a.tool_args[:half], a.tool_args[half:]):
            yield False, ck({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]})
    yield False, FINISH
    yield False, ck({}, a.finish)
    if with_usage:
        yield False, ck(None, None, usage_body(a.script, a.extra_tokens))
    yield False, b"data: [DONE]\n\n"


def malformed_part() -> bytes:
    """A PayloadPart frame whose CRC is wrong."""
    return eventstream.frame({":message-type": "event", ":event-type": "PayloadPart",
                              ":content-type": "application/octet-stream"},
                             b'data: {"choices": []}\n\n', corrupt_crc=True)


def sse_error() -> bytes:
    """An in-band SSE error event, as a vLLM-style container sends one."""
    err = {"error": {"message": "simulated container error", "type": "InternalServerError",
                     "code": 500}}
    return b"data: " + orjson.dumps(err) + b"\n\n"


def stream_exception_payload(style: str) -> bytes:
    """The payload of an in-stream `ModelStreamError` / `InternalStreamFailure` frame."""
    payload = {"Message": "simulated stream failure"}
    if style == "ModelStreamError":
        payload["ErrorCode"] = "ModelStreamError"
    return orjson.dumps(payload)
