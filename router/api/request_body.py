"""Reading a request at the edge: headers, body bytes, JSON, limits, then `ChatRequest`.

Order of checks, cheapest first, each a clear 4xx:

1. Content-Type must be a JSON media type (`application/json` or `application/<x>+json`,
   parameters allowed, charset UTF-8 only): anything else, or none, is a 415. A web page can
   make a browser send `text/plain` or a body without a type without any CORS preflight.
2. Size: Content-Length, then the bytes actually read, against `max_body_bytes` (413).
3. JSON: the standard library's C scanner with an `object_pairs_hook`, so a key that appears
   twice in any object is a 400 `duplicate_key` naming its path (`metadata.privacy`): a later
   key must never silently override an earlier, more private, one. NaN/Infinity, integers
   outside 64 bits and lone UTF-16 surrogates are refused, since no backend can encode them.
4. Counts (`max_messages`, `max_content_parts`, `max_tools`, `max_stop`): on the raw dict,
   before pydantic builds a single model.
5. Nesting depth (`max_json_depth`): an iterative walk, never recursion; a body nested past the
   parser's own limit is the same 400 `too_deep`.
6. `ChatRequest` validation (strict types, see `router/types.py`).

Bodies over `OFFLOAD_BYTES` are parsed and validated in a worker thread, so a few large bodies
do not stall the event loop (and `/healthz`) for their whole parse, and at most
`LARGE_PARSES` of them are parsed at once, which bounds the memory their parsed trees take.

A client that disconnects while its body is being read raises `ClientGone`: there is nobody
to answer, so the route records it and returns without logging a traceback.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request

from router.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from router.ids import new_id
from router.types import ChatRequest

T = TypeVar("T")
OFFLOAD_BYTES = 1024 * 1024
LARGE_PARSES = 2  # large bodies parsed at once (each in a worker thread)
_LARGE_PARSES = threading.BoundedSemaphore(LARGE_PARSES)
REQUEST_ID_MAX = 128
_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:\-]")
_JSON_MEDIA = re.compile(r"application/(?:json|[a-z0-9!#$&^_.+\-]+\+json)")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


# nginx's "client closed request": recorded, never seen by the (departed) client.
CLIENT_GONE_STATUS = 499
CLIENT_GONE_OUTCOME = "client_disconnected"


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_depth: int = 64
    max_messages: int = 2048
    max_content_parts: int = 256
    max_tools: int = 512
    max_stop: int = 4

    @classmethod
    def from_settings(cls, settings: object, max_body_bytes: int | None = None) -> BodyLimits:
        """Limits from `RouterSettings` (any missing field keeps its default)."""
        base = cls()
        values = {name: getattr(settings, name, getattr(base, name))
                  for name in cls.__dataclass_fields__}
        if max_body_bytes is not None:
            values["max_body_bytes"] = max_body_bytes
        return cls(**values)


_LIMITS: dict[tuple[int, int], tuple[object, BodyLimits]] = {}  # (id(settings), max) -> built


def body_limits(request: Request, max_body_bytes: int) -> BodyLimits:
    """The limits of the app serving `request` (its `app.state.settings`), built once per
    settings object and body limit (the settings are read when the app starts)."""
    settings = getattr(getattr(request.scope.get("app"), "state", None), "settings", None)
    key = (id(settings), max_body_bytes)
    hit = _LIMITS.get(key)
    if hit is not None and hit[0] is settings:
        return hit[1]
    limits = BodyLimits.from_settings(settings, max_body_bytes)
    if len(_LIMITS) >= 64:
        _LIMITS.clear()
    _LIMITS[key] = (settings, limits)
    return limits


# -- headers ---------------------------------------------------------------------------------

def lower_headers(request: Request) -> dict[str, str]:
    """Header names lowered; a repeated header keeps every value, joined with ", " (RFC 9110
    field-line combination), so no value of e.g. `X-Privacy` is lost to a later one."""
    out: dict[str, str] = {}
    for k, v in request.scope["headers"]:
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def request_id(headers: dict[str, str]) -> str:
    """The client's `X-Request-Id` made safe to echo (first value, a plain charset, bounded
    length), or a new id."""
    raw = headers.get("x-request-id", "").split(",", 1)[0].strip()
    safe = _REQUEST_ID_UNSAFE.sub("", raw)[:REQUEST_ID_MAX]
    return safe or new_id("req")


def check_content_type(value: str | None) -> None:
    if value is None:
        raise UnsupportedMediaType(
            "Content-Type is missing; send 'Content-Type: application/json'.",
            param="Content-Type")
    media, _, params = value.partition(";")
    ok = _JSON_MEDIA.fullmatch(media.strip().lower()) is not None
    for param in params.split(";") if params.strip() else ():
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip().strip('"').lower() not in (
                "utf-8", "utf8"):
            ok = False
    if not ok:
        shown = value[:100]
        raise UnsupportedMediaType(
            f"Content-Type must be application/json (UTF-8), got '{shown}'.",
            param="Content-Type")


# -- body ------------------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"Request body is {length} bytes; the limit is {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone from None
    return b"".join(chunks)


class _Duplicate(dict[str, Any]):
    """An object in which `key` appeared more than once (only ever built on the error path)."""

    key: str


class _DuplicateFound(Exception):
    pass


def _duplicate(pairs: list[tuple[str, Any]], d: dict[str, Any]) -> _Duplicate:
    seen: set[str] = set()
    dup = _Duplicate(d)
    for k, _ in pairs:
        if k in seen:
            dup.key = k
            break
        seen.add(k)
    return dup


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _DuplicateFound
    return d


def _mark_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    return d if len(d) == len(pairs) else _duplicate(pairs, d)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _bounded_int(text: str) -> int:
    if len(text) > 21:
        raise ValueError("integer out of range")
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError("integer out of range")
    return value


def _path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _find_duplicate(text: str) -> tuple[str, str]:
    """Second pass, error path only: the first repeated key and the path to it."""
    data = json.loads(text, object_pairs_hook=_mark_hook, parse_constant=_no_constant,
                      parse_int=_bounded_int)
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _Duplicate):
            return node.key, _path([*path, node.key])
        if isinstance(node, dict):
            stack.extend((v, [*path, k]) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, [*path, i]) for i, v in reversed(list(enumerate(node))))
    return "", ""


# One decoder per thread (json.loads with hooks builds a new one per call; large bodies are
# parsed in worker threads, and a decoder's scanner keeps a key memo while it runs).
_DECODERS = threading.local()


def _decoder() -> json.JSONDecoder:
    dec: json.JSONDecoder | None = getattr(_DECODERS, "decoder", None)
    if dec is None:
        dec = _DECODERS.decoder = json.JSONDecoder(
            object_pairs_hook=_pairs_hook, parse_constant=_no_constant, parse_int=_bounded_int)
    return dec


def parse_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("Request body is empty; expected a JSON object.")
    try:
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        data = _decoder().decode(text)
    except _DuplicateFound:
        try:
            key, where = _find_duplicate(text)
        except (ValueError, RecursionError):  # a duplicate AND broken JSON after it
            key, where = "", ""
        raise InvalidRequest(
            f"Duplicate key '{key}' in the JSON body (at '{where}'); each key may appear once "
            "per object.", param=where or None, code="duplicate_key") from None
    except RecursionError:
        raise _too_deep(None) from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"Could not parse the JSON body: {exc.msg} (position {exc.pos}).",
                             code="invalid_json") from None
    except ValueError as exc:  # not UTF-8, NaN/Infinity, out-of-range integers
        raise InvalidRequest(f"Could not parse the JSON body: {_short(exc)}.",
                             code="invalid_json") from None
    if _SURROGATE_ESCAPE.search(raw) is not None:
        _check_surrogates(raw)
    if not isinstance(data, dict):
        raise InvalidRequest("The JSON body must be an object.")
    return data


def _short(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:120]


def _check_surrogates(raw: bytes) -> None:
    import orjson  # refuses lone surrogates, which no backend's JSON encoder accepts

    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Could not parse the JSON body: {exc.msg}.",
                             code="invalid_json") from None


# -- limits ----------------------------------------------------------------------------------

def _too_many(param: str, n: int, limit: int, what: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' has {n} {what}; the limit is {limit}.", param=param,
                          code="array_too_long")


def check_counts(data: dict[str, Any], limits: BodyLimits) -> None:
    """Array lengths that drive work downstream, checked on the raw dict."""
    messages = data.get("messages")
    if isinstance(messages, list):
        if len(messages) > limits.max_messages:
            raise _too_many("messages", len(messages), limits.max_messages, "messages")
        for i, m in enumerate(messages):
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list) and len(content) > limits.max_content_parts:
                raise _too_many(f"messages[{i}].content", len(content),
                                limits.max_content_parts, "content parts")
            calls = m.get("tool_calls") if isinstance(m, dict) else None
            if isinstance(calls, list) and len(calls) > limits.max_tools:
                raise _too_many(f"messages[{i}].tool_calls", len(calls), limits.max_tools,
                                "tool calls")
    tools = data.get("tools")
    if isinstance(tools, list) and len(tools) > limits.max_tools:
        raise _too_many("tools", len(tools), limits.max_tools, "tools")
    stop = data.get("stop")
    if isinstance(stop, list) and len(stop) > limits.max_stop:
        raise _too_many("stop", len(stop), limits.max_stop, "stop sequences")


def _too_deep(param: str | None, limit: int | None = None) -> InvalidRequest:
    bound = f" (the limit is {limit} levels)" if limit else ""
    return InvalidRequest(f"The JSON body is nested too deeply{bound}.", param=param,
                          code="too_deep")


def check_depth(data: Any, limit: int) -> None:
    """Reject containers nested deeper than `limit` (the top-level object is level 1)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            raise _too_deep(_deep_path(data, limit), limit)
        for v in node.values() if isinstance(node, dict) else node:
            if isinstance(v, dict | list):
                push((v, depth + 1))


def _deep_path(data: Any, limit: int, shown: int = 4) -> str | None:
    """Error path only: where the body first goes past `limit`, its first `shown` steps."""
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        node, path = stack.pop()
        if len(path) >= limit:
            return _path(path[:shown]) or None
        if isinstance(node, dict):
            stack.extend((v, [*path, k]) for k, v in node.items() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, [*path, i]) for i, v in enumerate(node)
                         if isinstance(v, dict | list))
    return None


# -- all together ----------------------------------------------------------------------------

def decode_chat_request(raw: bytes, limits: BodyLimits) -> ChatRequest:
    """Bytes to a validated `ChatRequest` (raises InvalidRequest or pydantic's ValidationError)."""
    data = parse_json(raw)
    check_counts(data, limits)
    check_depth(data, limits.max_json_depth)
    return ChatRequest.model_validate(data)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """Content type, size and JSON checks; the parsed object (no counts, depth or model)."""
    check_content_type(request.headers.get("content-type"))
    return parse_json(await read_body(request, limit))


async def read_chat_request(request: Request, limits: BodyLimits) -> ChatRequest:
    check_content_type(request.headers.get("content-type"))
    raw = await read_body(request, limits.max_body_bytes)
    if len(raw) > OFFLOAD_BYTES:
        return await asyncio.to_thread(_decode_large, raw, limits)
    return decode_chat_request(raw, limits)


def large_parse(work: Callable[[], T]) -> T:
    """Run one large body's parse and validation (in a worker thread) under `LARGE_PARSES`."""
    with _LARGE_PARSES:
        return work()


def _decode_large(raw: bytes, limits: BodyLimits) -> ChatRequest:
    """A large body's parse and validation, at most `LARGE_PARSES` at once: a parsed 10 MB
    body of tiny messages takes ~100 MB, so six at once would otherwise take ~700 MB."""
    with _LARGE_PARSES:
        return decode_chat_request(raw, limits)
