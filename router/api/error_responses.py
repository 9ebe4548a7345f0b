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


def param_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = part
        elif part in ("function-after[_flatten_parts(), union[str,none]]",):
            continue
        else:
            out += f".{part}"
    return out


def from_validation_error(exc: ValidationError) -> InvalidRequest:
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and "(" in p))
    param = param_path(loc) or None
    kind = err["type"]
    if kind == "missing":
        msg = f"Missing required parameter: '{param}'."
    elif kind in ("list_type", "dict_type", "string_type", "int_type", "float_type", "bool_type",
                  "model_type", "int_parsing", "float_parsing", "bool_parsing"):
        expected = kind.split("_")[0].replace("list", "array").replace("dict", "object")
        expected = expected.replace("model", "object").replace("string", "string")
        msg = f"Invalid type for '{param}': expected {expected}."
    elif kind == "literal_error":
        msg = f"Invalid value for '{param}': {err['msg'].replace('Input should be', 'must be')}."
    elif kind == "too_short":
        msg = f"Invalid '{param}': must not be empty."
    else:
        msg = f"Invalid value for '{param}': {err['msg']}."
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
        retry_after = 1.0  # design §8: 429 and 503 always say when to come back
    if retry_after is not None:
        out["retry-after"] = str(max(1, math.ceil(retry_after)))
    return Response(orjson.dumps(exc.body()), status_code=exc.status,
                    media_type="application/json", headers=out)
