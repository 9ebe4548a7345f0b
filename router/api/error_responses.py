"""The only place that turns errors into OpenAI error bodies (`{"error": {...}}`).

Router errors keep their status, type, code and param; pydantic validation errors become a 400
naming the offending parameter; anything unexpected becomes a 500 with a generic message (the
traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from router.errors import InvalidRequest, RouterError

log = logging.getLogger("router.api")


_EXPECTED = {
    "list_type": "array", "tuple_type": "array", "set_type": "array",
    "dict_type": "object", "model_type": "object", "model_attributes_type": "object",
    "dataclass_type": "object", "string_type": "string", "bool_type": "boolean",
    "bool_parsing": "boolean", "int_type": "integer", "int_parsing": "integer",
    "int_from_float": "integer", "float_type": "number", "float_parsing": "number",
}
_TAG_ERRORS = ("invalid_tag", "union_tag_invalid", "union_tag_not_found")


def _is_marker(part: str) -> bool:
    """Union tags (`~text`) and pydantic's own schema labels (`function-after[f(), str]`)."""
    return part.startswith("~") or ("[" in part and "(" in part)


def param_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_marker(part):
            continue
        elif not out:
            out = part
        else:
            out += f".{part}"
    return out


def _clean(msg: str) -> str:
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg.replace("Input should be", "must be").rstrip(".")


def from_validation_error(exc: ValidationError) -> InvalidRequest:
    err = exc.errors(include_url=False)[0]
    param = param_path(tuple(err["loc"])) or None
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        why = "" if err["msg"] == "Field required" else f" ({err['msg']})"
        msg = f"Missing required parameter: '{param}'{why}."
    elif kind in _EXPECTED:
        msg = f"Invalid type for '{param}': expected {_EXPECTED[kind]}."
    elif kind in _TAG_ERRORS:
        param = f"{param}.type" if param else "type"
        msg = f"Invalid value for '{param}': {_clean(err['msg'])}."
    elif kind == "literal_error":
        msg = f"Invalid value for '{param}': {_clean(err['msg'])}."
    elif kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        msg = f"Invalid '{param}': must not be empty."
    elif kind == "too_long":
        msg = f"Invalid '{param}': at most {ctx.get('max_length')} items are allowed."
    elif kind == "string_too_long":
        msg = f"Invalid '{param}': at most {ctx.get('max_length')} characters are allowed."
    elif kind == "string_pattern_mismatch":
        msg = f"Invalid value for '{param}': must match {ctx.get('pattern')}."
    else:
        msg = f"Invalid value for '{param}': {_clean(err['msg'])}."
    return InvalidRequest(msg, param=param)


def error_response(exc: BaseException, headers: Mapping[str, str] | None = None) -> Response:
    if isinstance(exc, ValidationError):
        exc = from_validation_error(exc)
    if not isinstance(exc, RouterError):
        log.error("unexpected error", exc_info=exc)
        exc = RouterError("The router hit an internal error; it has been logged.",
                          code="internal_error")
    out = dict(headers or {})
    retry_after = exc.retry_after
    if retry_after is None and exc.status in (429, 503):
        retry_after = 1.0  # docs/design.md, Errors: 429 and 503 always say when to come back
    if retry_after is not None:
        out["retry-after"] = str(max(1, math.ceil(retry_after)))
    return Response(orjson.dumps(exc.body()), status_code=exc.status,
                    media_type="application/json", headers=out)
