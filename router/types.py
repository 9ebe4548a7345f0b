"""The router's own request and response types: OpenAI Chat Completions shapes.

`ChatRequest` is what every surface normalises to (validated once, at the edge), so backends
only ever see well-formed requests: scalars are strictly typed (`"stream": "yes"`,
`"temperature": true` and `"max_tokens": "10"` are refused, an int is fine for a float), and
`tool_choice`, `response_format`, `stop`, content parts, tools, tool calls, `metadata` and
`stream_options` are typed models. Backends keep reading plain shapes: `tool_choice` is
`"none" | "auto" | "required"` or `{"type": "function", "function": {"name": ...}}`,
`response_format` the dict of its validated model (unknown keys dropped), `stop` a list of
strings and `Message.content` one string (text parts joined).

Beyond Chat Completions, three Ollama options travel on the request: `top_k` (sampling),
`num_ctx` (the context window the client asks for: a routing input, and what a local Ollama
loads the model with) and `keep_alive` (how long a local Ollama keeps the model loaded: a
duration string such as `"10m"`, or seconds; negative keeps it loaded). Only Ollama backends
honour them; cloud backends ignore them.

`ChatResult` and `StreamEvent` are what every backend returns; `api/openai_wire.py`
turns them back into OpenAI JSON / SSE.  Reasoning travels as `reasoning` everywhere;
`reasoning_content` is accepted from clients as an alias.

Union members carry tags that start with `~` (`~text`, `~named`, ...); error locations drop
them (`api/error_responses.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

Role = Literal["system", "developer", "user", "assistant", "tool"]
Effort = Literal["low", "medium", "high"]
Privacy = Literal["private", "standard"]
ToolChoiceMode = Literal["none", "auto", "required"]

TEXT_PART_TYPES = ("text", "input_text")
MAX_METADATA_KEYS = 16
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MAX = 2**31 - 1
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
KEEP_ALIVE = re.compile(r"-?\d+(\.\d+)?|(-?\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")

_Strict = ConfigDict(extra="ignore")


def _as_is(value: Any) -> Any:
    return value


# Stored values are plain str/dict (what backends read); validation goes through the models.
_PLAIN = PlainSerializer(_as_is)


class FunctionCall(BaseModel):
    model_config = _Strict
    name: StrictStr
    arguments: StrictStr = "{}"

    @field_validator("arguments", mode="before")
    @classmethod
    def _args_to_string(cls, v: Any) -> Any:
        if isinstance(v, dict | list):
            import orjson

            return orjson.dumps(v).decode()
        return "{}" if v is None else v


class ToolCall(BaseModel):
    model_config = _Strict
    id: StrictStr = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(BaseModel):
    """A content part; gpt-oss is text-only, so only text parts exist."""

    model_config = _Strict
    type: Literal["text", "input_text"]
    text: StrictStr


def _join_parts(v: str | list[TextPart] | None) -> str | None:
    if isinstance(v, list):
        return "".join(p.text for p in v)
    return v


def _list_or_text(v: Any) -> str:
    return "~parts" if isinstance(v, list) else "~text"


if TYPE_CHECKING:
    Content = str | None
else:
    Content = Annotated[
        Annotated[
            Annotated[str, Tag("~text")] | Annotated[list[TextPart], Tag("~parts")],
            Discriminator(_list_or_text),
        ] | None,
        AfterValidator(_join_parts),
    ]


class Message(BaseModel):
    model_config = _Strict
    role: Role
    content: Content = None
    name: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: StrictStr | None = Field(default=None, validate_default=True)
    reasoning: StrictStr | None = Field(
        default=None, validation_alias=AliasChoices("reasoning", "reasoning_content")
    )

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, v: Any) -> Any:
        """OpenAI content-part arrays are accepted; only their text parts are supported."""
        if isinstance(v, list):
            for part in v:
                if isinstance(part, dict) and part.get("type") not in TEXT_PART_TYPES:
                    raise ValueError("only text content parts are supported by gpt-oss")
        return v

    @field_validator("tool_call_id")
    @classmethod
    def _tool_needs_id(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("role") == "tool" and not v:
            raise PydanticCustomError("missing", "a tool message needs a tool_call_id")
        return v


class FunctionDef(BaseModel):
    model_config = _Strict
    name: StrictStr = Field(pattern=TOOL_NAME)
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(BaseModel):
    model_config = _Strict
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = _Strict
    name: StrictStr = Field(min_length=1)


class NamedToolChoice(BaseModel):
    model_config = _Strict
    type: Literal["function"]
    function: NamedFunction


def _str_or_object(v: Any) -> str:
    return "~mode" if isinstance(v, str) else "~named"


def _dump(v: Any) -> Any:
    return v.model_dump(by_alias=True, exclude_none=True) if isinstance(v, BaseModel) else v


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: StrictStr = Field(min_length=1, max_length=64)
    description: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class TextFormat(BaseModel):
    model_config = _Strict
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = _Strict
    type: Literal["json_object"]


class JsonSchemaFormat(BaseModel):
    model_config = _Strict
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")


def _format_tag(v: Any) -> str | None:
    if not isinstance(v, dict):
        return "~text"  # refused there as "expected object"
    kind = v.get("type")
    return f"~{kind}" if kind in RESPONSE_FORMAT_TYPES else None


if TYPE_CHECKING:
    ToolChoice = str | dict[str, Any]
    ResponseFormat = dict[str, Any]
else:
    ToolChoice = Annotated[
        Annotated[ToolChoiceMode, Tag("~mode")] | Annotated[NamedToolChoice, Tag("~named")],
        Discriminator(_str_or_object), AfterValidator(_dump), _PLAIN,
    ]
    ResponseFormat = Annotated[
        Annotated[TextFormat, Tag("~text")] | Annotated[JsonObjectFormat, Tag("~json_object")]
        | Annotated[JsonSchemaFormat, Tag("~json_schema")],
        Discriminator(
            _format_tag, custom_error_type="invalid_tag",
            custom_error_message="must be one of 'text', 'json_object', 'json_schema'"),
        AfterValidator(_dump), _PLAIN,
    ]


class StreamOptions(BaseModel):
    model_config = _Strict
    include_usage: StrictBool | None = None


MetadataKey = Annotated[StrictStr, Field(max_length=64)]
MetadataValue = Annotated[StrictStr, Field(max_length=512)]


class ChatRequest(BaseModel):
    """A validated, normalised Chat Completions request."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    include_usage: StrictBool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX, strict=True)
    stop: list[StrictStr] | None = None
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX, strict=True)
    response_format: ResponseFormat | None = None
    reasoning_effort: Effort | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        default=None, max_length=MAX_METADATA_KEYS)
    user: StrictStr | None = None
    n: int | None = Field(default=None, ge=1, le=1, strict=True)
    # Ollama options (honoured by Ollama backends only; see the module docstring).
    top_k: int | None = Field(default=None, ge=0, le=INT32_MAX, strict=True)
    num_ctx: int | None = Field(default=None, ge=1, le=INT32_MAX, strict=True)
    keep_alive: StrictStr | StrictInt | StrictFloat | None = Field(default=None)

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive_bounded(cls, v: str | int | float | None) -> str | int | float | None:
        if isinstance(v, str) and (len(v) > 32 or not KEEP_ALIVE.fullmatch(v)):
            raise ValueError("must be a duration such as '5m', '1h30m' or '-1', or seconds")
        return v

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("stop"), str):
            data["stop"] = [data["stop"]]
        reasoning = data.get("reasoning")
        if data.get("reasoning_effort") is None and isinstance(reasoning, dict):
            data["reasoning_effort"] = reasoning.get("effort")
        if data.get("reasoning_effort") in ("minimal", "none"):
            data["reasoning_effort"] = "low"
        return data

    @model_validator(mode="after")
    def _aliases(self) -> ChatRequest:
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        if self.stream_options is not None and self.stream_options.include_usage:
            self.include_usage = True
        return self


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None
    # True when the router estimated the counts (the upstream reported none): surfaces mark it.
    estimated: bool = False

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

    `malformed` marks a chunk the backend could not decode (it carries nothing else): the
    stream session skips and counts it, and ends the stream after too many in a row.

    `ready_next` is a hint, never part of the answer (not compared, not shown): the backend
    already holds the next event in memory (decoded from the same read), so a surface may
    write this one together with it instead of alone; no I/O separates them.
    """

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    malformed: bool = False
    ready_next: bool = field(default=False, compare=False, repr=False)
