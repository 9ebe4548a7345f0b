"""The router's own request and response types: OpenAI Chat Completions shapes.

`ChatRequest` is what every surface normalises to (validated once, at the edge).
`ChatResult` and `StreamEvent` are what every backend returns; `api/openai_wire.py`
turns them back into OpenAI JSON / SSE.  Reasoning travels as `reasoning` everywhere;
`reasoning_content` is accepted from clients as an alias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]
Effort = Literal["low", "medium", "high"]
Privacy = Literal["private", "standard"]


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: str = "{}"

    @field_validator("arguments", mode="before")
    @classmethod
    def _args_to_string(cls, v: Any) -> Any:
        if isinstance(v, dict | list):
            import orjson

            return orjson.dumps(v).decode()
        return "{}" if v is None else v


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = Field(
        default=None, validation_alias=AliasChoices("reasoning", "reasoning_content")
    )

    @field_validator("content", mode="before")
    @classmethod
    def _flatten_parts(cls, v: Any) -> Any:
        """Accept OpenAI content-part arrays; gpt-oss is text-only, so keep the text parts."""
        if isinstance(v, list):
            texts: list[str] = []
            for part in v:
                if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                    raise ValueError("only text content parts are supported by gpt-oss")
                text = part.get("text")
                if not isinstance(text, str):
                    raise ValueError("a text content part needs a string 'text'")
                texts.append(text)
            return "".join(texts)
        return v


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"] = "function"
    function: FunctionDef


class ChatRequest(BaseModel):
    """A validated, normalised Chat Completions request."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    include_usage: bool = False
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: Effort | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    n: int | None = Field(default=None, ge=1, le=1)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        mct = data.pop("max_completion_tokens", None)
        if mct is not None and data.get("max_tokens") is None:
            data["max_tokens"] = mct
        opts = data.pop("stream_options", None)
        if isinstance(opts, dict) and opts.get("include_usage"):
            data["include_usage"] = True
        if isinstance(data.get("stop"), str):
            data["stop"] = [data["stop"]]
        reasoning = data.get("reasoning")
        if data.get("reasoning_effort") is None and isinstance(reasoning, dict):
            data["reasoning_effort"] = reasoning.get("effort")
        if data.get("reasoning_effort") in ("minimal", "none"):
            data["reasoning_effort"] = "low"
        return data


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class ChatResult:
    """A whole (non-streamed) answer from a backend."""

    content: str | None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)


@dataclass(slots=True)
class StreamEvent:
    """One increment of a streamed answer.

    A backend's stream ends with exactly one event whose `finish_reason` is set (it may also
    carry `usage`). A stream that ends without one was cut: the executor reports it as an error.
    Tool calls arrive whole (id, name and full arguments), indexed by order of appearance.
    """

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
