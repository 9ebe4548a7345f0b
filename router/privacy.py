"""Privacy: the request classifier, over the detector in `router/detector.py`.

`classify(...)` merges every privacy source into one `PrivacyDecision`: the class is the
maximum over every marker (each `X-Privacy` token, `metadata.privacy`, the API key's default, a
private model alias, a private earlier turn, the detector, the policy default), so nothing can
make a request less private than any one of its markers says. `X-Privacy` is a comma-separated
list (repeated headers arrive joined with ", "); any `private` token makes the request private.
Invalid client values (any bad `X-Privacy` token, `metadata.privacy`) are 400s naming the field,
even next to a `private` marker: a 400 sends nothing anywhere.

The detector scans `request_texts(request)`: every string leaf of the normalised request (and
every dict key and free-form JSON integer), found by a generic iterative walk, so a field added
to `ChatRequest` is scanned without anyone listing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal

from pydantic import BaseModel

from router.detector import detect, iban_valid, luhn_valid
from router.errors import InvalidRequest
from router.policy.schema import PrivacyConfig
from router.types import ChatRequest

__all__ = ["PrivacyDecision", "classify", "detect", "iban_valid", "luhn_valid", "request_texts"]

PRIVATE: Literal["private"] = "private"
STANDARD: Literal["standard"] = "standard"
_CLASSES = (PRIVATE, STANDARD)

# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrivacyDecision:
    """The request's class and every source that voted for it.

    For a private request, `sources` lists each source that said private (`header`,
    `metadata`, `api_key`, `model_alias`, `detector:<kind>`, `policy_default`). For a standard
    one it lists the sources that said standard explicitly, then `policy_default`.
    """

    cls: Literal["private", "standard"]
    sources: tuple[str, ...]

    @property
    def private(self) -> bool:
        return self.cls == PRIVATE


def _parse_class(value: str, param: str) -> Literal["private", "standard"]:
    v = value.strip().lower()
    if v == PRIVATE:
        return PRIVATE
    if v == STANDARD:
        return STANDARD
    raise InvalidRequest(f"invalid {param} value: expected 'private' or 'standard'", param=param)


def _parse_header(value: str) -> Literal["private", "standard"]:
    """`X-Privacy` as a comma-separated list: private if any token is; every token is checked
    (an empty or unknown one is a 400, also next to `private`)."""
    classes = {_parse_class(token, "X-Privacy") for token in value.split(",")}
    return PRIVATE if PRIVATE in classes else STANDARD


# Free-form JSON integers (enum values, defaults in a tool schema) reach a backend as digits;
# only those that could be a card number are worth a string. Typed numeric fields (seed,
# max_tokens, ...) are the client's knobs, not content, and are not scanned.
_INT_SCAN_MIN, _INT_SCAN_MAX = 10**12, 10**20
_SCALARS = frozenset({bool, int, float, type(None)})
# The one top-level field no backend receives: `model` is resolved to a logical model (unknown
# names are a 404) and each backend sends its own model id. Skipping it also keeps its digits
# ("gpt-oss-20b") from switching on the digit-based detectors for digit-free prose.
_NOT_SENT = frozenset({"model"})


def _visit_subclass(
    node: object, add: Callable[[str], None], extend: Callable[[Iterable[Any]], None]
) -> None:
    """The slow path of `request_texts`: subclasses of str (enums), list, tuple and dict."""
    if isinstance(node, str):
        if node:
            add(node)
    elif isinstance(node, list | tuple):
        extend(node)
    elif isinstance(node, dict):
        extend(chain.from_iterable(node.items()))


def request_texts(request: BaseModel) -> list[str]:
    """Every text a backend could receive from `request`: each non-empty string leaf of the
    pydantic model tree (fields, extras, nested dicts and lists, dict keys included) and each
    free-form integer of 13+ digits, as its digits; only the top-level `model` is left out.

    Generic: no field list to maintain. Iterative (an explicit stack, so hostile nesting cannot
    exhaust the C stack) and linear in the size of the request. Order is unspecified.
    """
    texts: list[str] = []
    add = texts.append
    stack: list[Any] = [v for k, v in request.__dict__.items()
                        if k not in _NOT_SENT and type(v) not in _SCALARS]
    if request.__pydantic_extra__:
        stack.append(request.__pydantic_extra__)
    push, pop, extend = stack.append, stack.pop, stack.extend
    while stack:
        node = pop()
        kind = type(node)  # exact-type fast paths first: this loop runs once per node
        if kind is str:
            if node:
                add(node)
        elif kind is list or kind is tuple:
            extend(node)
        elif kind is dict:
            extend(chain.from_iterable(node.items()))
        elif isinstance(node, BaseModel):
            for value in node.__dict__.values():
                if type(value) not in _SCALARS:  # bool, int, float, None: no client text
                    push(value)
            if node.__pydantic_extra__:
                push(node.__pydantic_extra__)
        elif kind is int:
            if _INT_SCAN_MIN <= abs(node) < _INT_SCAN_MAX:
                add(str(node))
        else:
            _visit_subclass(node, add, extend)
    return texts


def classify(
    request: ChatRequest,
    *,
    header: str | None,
    key_default: str | None,
    alias_private: bool,
    config: PrivacyConfig,
    forced_private: Iterable[str] = (),
) -> PrivacyDecision:
    """Merge every privacy source: the most private class any of them says wins.

    `header` is the raw `X-Privacy` value, repeated headers joined with ", " (None when
    absent); `key_default` the API key's `default_privacy` (None in open mode);
    `alias_private` whether the model alias the client used is a private alias;
    `forced_private` sources the surface knows to be private (e.g. `previous_response`: the
    conversation a Responses API request continues was private). Raises
    InvalidRequest for a bad `X-Privacy` token or `metadata.privacy` value.
    """
    votes: list[tuple[str, str]] = []
    if header is not None:
        votes.append(("header", _parse_header(header)))
    # Every spelling of the key counts ("Privacy", " privacy"): one source, the maximum.
    metas = [_parse_class(v, "metadata.privacy") for k, v in (request.metadata or {}).items()
             if k.strip().lower() == "privacy"]
    if metas:
        votes.append(("metadata", PRIVATE if PRIVATE in metas else STANDARD))
    if key_default is not None:
        if key_default not in _CLASSES:
            raise ValueError(f"API key default class must be private or standard: {key_default!r}")
        votes.append(("api_key", key_default))
    if alias_private:
        votes.append(("model_alias", PRIVATE))
    votes.extend((source, PRIVATE) for source in forced_private)
    detector = config.detector
    if detector.enabled and detector.kinds:
        # \x00 never belongs to any pattern, so texts cannot combine into a false match.
        joined = "\x00".join(request_texts(request))
        votes.extend((f"detector:{kind}", PRIVATE) for kind in detect(joined, detector.kinds))
    votes.append(("policy_default", config.default_class))

    private_sources = tuple(src for src, cls in votes if cls == PRIVATE)
    if private_sources:
        return PrivacyDecision(PRIVATE, private_sources)
    return PrivacyDecision(STANDARD, tuple(src for src, _ in votes))
