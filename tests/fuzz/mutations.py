"""Hypothesis strategies for the mutation fuzz: valid chat bodies, then mutated.

A case starts as a valid Chat Completions body (messages of every role, tools, tool calls,
content parts, options), maybe marked private (`X-Privacy`, `metadata.privacy`, the private
alias, an e-mail address in a user message), then gets a few mutations: a wrong-typed value at
a random path, a deleted key, nesting far past any sane depth, a huge or a duplicated key, many
keys, odd unicode and NUL, big and negative numbers. It is rendered by a JSON writer of its own
(so duplicate keys and 10^400 can be written), maybe corrupted at the byte level, and sent with
odd content types and repeated or odd headers. `FuzzCase.private` says whether a privacy
marker survived the mutations: then no cloud backend may be attempted.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.harness import PRIVATE_ALIAS, SECRET_EMAIL

Path = tuple[str | int, ...]
ENDPOINTS = ["/v1/chat/completions", "/chat/completions", "/v1/router/explain"]
CONTENT_TYPES: list[str | None] = [
    "application/json", "application/json; charset=utf-8", None, "APPLICATION/JSON",
    "text/plain", "text/plain; charset=json", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/json-patch+json", "application/jsonx",
    "", "application/json; charset=latin-1", "*/*", "application/vnd.api+json"]
ODD_STRINGS = ["", "\x00", "a\x00b", "\u202etxet", "\u200b\u200d\ufeff", "\U0001f600" * 50,
               "\ud7ff\ue000\uffff", "\\u0000", "é" * 1000, "x" * 70000, " ", "\n\r\t",
               "private", "PRIVATE", "standard", "null", "[]", "{}", "%00", "../../etc/passwd"]
ODD_NUMBERS: list[int | float] = [-1, 0, -0.0, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30,
                                  1e308, -1e308, 5e-324, 0.5, 3, 2.0000001, -2]
RAW_NUMBERS = ["1e999", "-1e999", "1" * 400, "-0", "0.0000000000000000000000001e-400", "1E+2"]
ROLES = ["system", "developer", "user", "assistant", "tool"]


@dataclass
class Deep:
    """A leaf rendered as `depth` nested arrays or objects (no recursion when rendered)."""

    depth: int
    kind: str  # "list" | "dict"

    def text(self) -> str:
        if self.kind == "list":
            return "[" * self.depth + "1" + "]" * self.depth
        return '{"a":' * self.depth + "1" + "}" * self.depth


@dataclass
class RawNumber:
    text: str


@dataclass
class Doc:
    """A body under construction: the tree plus duplicate keys to write into given objects."""

    root: Any
    dups: dict[int, list[tuple[str, Any, bool]]] = field(default_factory=dict)
    keep: list[Any] = field(default_factory=list)  # so no id() is reused while rendering

    def add_dup(self, obj: dict[str, Any], key: str, value: Any, after: bool) -> None:
        self.keep.append(obj)
        self.dups.setdefault(id(obj), []).append((key, value, after))


def render(doc: Doc, ensure_ascii: bool) -> str:
    def w(v: Any) -> str:
        if isinstance(v, Deep):
            return v.text()
        if isinstance(v, RawNumber):
            return v.text
        if isinstance(v, dict):
            pairs = [(k, x) for k, x, after in doc.dups.get(id(v), []) if not after]
            pairs += list(v.items())
            pairs += [(k, x) for k, x, after in doc.dups.get(id(v), []) if after]
            return "{" + ",".join(f"{w(str(k))}:{w(x)}" for k, x in pairs) + "}"
        if isinstance(v, list):
            return "[" + ",".join(w(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=ensure_ascii)

    return w(doc.root)


# -- valid bodies ---------------------------------------------------------------------------

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string",
                                                             "enum": ["Paris", "Oslo"]}},
                   "required": ["city"]}}}


@st.composite
def messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if draw(st.booleans()):
        out.append({"role": draw(st.sampled_from(["system", "developer"])), "content": "Be brief."})
    for _ in range(draw(st.integers(0, 2))):
        out.append({"role": "user", "content": draw(st.text(max_size=30))})
        out.append({"role": "assistant", "content": None, "reasoning": "think",
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {
                        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]})
        out.append({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
    last: Any = draw(st.one_of(st.text(max_size=40), st.just([
        {"type": "text", "text": "part one "}, {"type": "input_text", "text": "two"}])))
    out.append({"role": "user", "content": last})
    return out


OPTIONAL: dict[str, Any] = {
    "stream": st.booleans(), "temperature": st.floats(0, 2), "top_p": st.floats(0, 1),
    "max_tokens": st.integers(1, 4096), "max_completion_tokens": st.integers(1, 4096),
    "stop": st.one_of(st.just("END"), st.just(["a", "b"])), "seed": st.integers(0, 2**31),
    "tools": st.just([TOOL]), "parallel_tool_calls": st.booleans(),
    "tool_choice": st.sampled_from(["auto", "none", "required", {
        "type": "function", "function": {"name": "get_weather"}}]),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}, {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}]),
    "reasoning_effort": st.sampled_from(["low", "medium", "high", "minimal"]),
    "stream_options": st.just({"include_usage": True}), "user": st.text(max_size=10),
    "n": st.just(1), "metadata": st.just({"team": "fuzz"}),
}


@st.composite
def valid_body(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(st.sampled_from(["gpt-oss-20b", "gpt-oss-120b",
                                                           "GPT-OSS-20B", "openai/gpt-oss-20b"])),
                            "messages": draw(messages())}
    for name in draw(st.lists(st.sampled_from(sorted(OPTIONAL)), max_size=6, unique=True)):
        body[name] = draw(OPTIONAL[name])
    return body


# -- mutations ------------------------------------------------------------------------------

def paths(root: Any, limit: int = 400) -> list[Path]:
    """The first `limit` paths, breadth first (a body grown to 50,000 keys by an earlier
    mutation must not make every later draw walk all of it)."""
    out: list[Path] = []
    queue: list[tuple[Path, Any]] = [((), root)]
    while queue and len(out) < limit:
        path, node = queue.pop(0)
        out.append(path)
        if isinstance(node, dict):
            queue.extend(((*path, k), v) for k, v in list(node.items())[:limit])
        elif isinstance(node, list):
            queue.extend(((*path, i), v) for i, v in enumerate(node[:limit]))
    return out


def get(root: Any, path: Path) -> Any:
    for part in path:
        root = root[part]
    return root


wrong_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
    st.text(max_size=20), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from(ODD_STRINGS), st.sampled_from(ODD_NUMBERS),
    st.sampled_from(RAW_NUMBERS).map(RawNumber), st.just([[[[[]]]]]), st.just([None] * 50),
).map(copy.deepcopy)  # mutations change values in place: never share a strategy's constant


@st.composite
def mutate(draw: st.DrawFn, doc: Doc) -> str:
    """Apply one mutation to `doc` in place; returns its name (for the tallies)."""
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "deep", "huge_key", "many_keys",
                                 "dup_key", "odd_string", "number", "wrap_list"]))
    targets = paths(doc.root)
    path = draw(st.sampled_from(targets))
    parent_path, leaf = path[:-1], (path[-1] if path else None)
    parent = get(doc.root, parent_path) if path else None

    def put(value: Any) -> None:
        if parent is None:
            doc.root = value
        else:
            parent[leaf] = value

    node = get(doc.root, path)
    if kind == "set":
        put(draw(wrong_values))
    elif kind == "delete" and isinstance(parent, dict):
        del parent[leaf]
    elif kind == "deep":
        put(Deep(draw(st.sampled_from([40, 64, 100, 500, 990, 1100, 5000, 100_000])),
                 draw(st.sampled_from(["list", "dict"]))))
    elif kind == "huge_key" and isinstance(node, dict):
        node["k" * draw(st.sampled_from([1000, 100_000, 1_000_000]))] = 1
    elif kind == "many_keys" and isinstance(node, dict | list):
        n = draw(st.sampled_from([100, 5000, 50_000]))
        if isinstance(node, dict):
            node.update({f"k{i}": i for i in range(n)})
        else:
            node.extend([node[0] if node else 0] * n)
    elif kind == "dup_key" and isinstance(node, dict) and node:
        key = draw(st.sampled_from(sorted(node)))
        doc.add_dup(node, key, draw(st.one_of(st.just(node[key]), wrong_values)),
                    draw(st.booleans()))
    elif kind == "odd_string":
        put(draw(st.sampled_from(ODD_STRINGS)) + draw(st.text(max_size=5)))
    elif kind == "number":
        put(draw(st.one_of(st.sampled_from(ODD_NUMBERS), st.sampled_from(RAW_NUMBERS).map(
            RawNumber))))
    elif kind == "wrap_list":
        put([node])
    else:
        return "noop"
    return kind


@dataclass
class FuzzCase:
    path: str
    raw: bytes
    headers: list[tuple[str, str]]
    private: bool
    mutations: list[str]


def _private_in_body(doc: Doc) -> bool:
    root = doc.root
    if not isinstance(root, dict):
        return False
    dups = doc.dups.get(id(root), [])
    models = [root.get("model"), *(v for k, v, _ in dups if k == "model")]
    if PRIVATE_ALIAS in models:
        return True
    metas = [root.get("metadata"), *(v for k, v, _ in dups if k == "metadata")]
    for meta in metas:
        if isinstance(meta, dict):
            values = [meta.get("privacy"), *(v for k, v, _ in doc.dups.get(id(meta), [])
                                             if k == "privacy")]
            if any(_says_private(v) for v in values):
                return True
    msgs = root.get("messages")
    for m in msgs if isinstance(msgs, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        parts = content if isinstance(content, list) else [content]
        for p in parts:
            text = p.get("text") if isinstance(p, dict) else p
            if isinstance(text, str) and SECRET_EMAIL in text:
                return True
    return False


def _says_private(value: Any) -> bool:
    return isinstance(value, str) and "private" in [x.strip() for x in value.lower().split(",")]


@st.composite
def private_marks(draw: st.DrawFn, body: dict[str, Any], doc: Doc,
                  headers: list[tuple[str, str]]) -> None:
    """Mark the body private in zero or more ways, some conflicting with a standard marker."""
    for mark in draw(st.lists(st.sampled_from(["header", "metadata", "alias", "email",
                                               "dup_metadata", "dup_model"]), max_size=2)):
        if mark == "header":
            values = draw(st.permutations(["private", *draw(st.lists(st.sampled_from(
                ["standard", "Standard", "", "private"]), max_size=2))]))
            headers.extend((draw(st.sampled_from(["X-Privacy", "x-privacy"])), v)
                           for v in values)
        elif mark == "metadata":
            body["metadata"] = {"privacy": "private"}
        elif mark == "alias":
            body["model"] = PRIVATE_ALIAS
        elif mark == "email":
            body["messages"][-1] = {"role": "user", "content": f"mail {SECRET_EMAIL} please"}
        elif mark == "dup_metadata":
            meta = {"privacy": "private"}
            body["metadata"] = meta
            doc.add_dup(meta, "privacy", "standard", after=draw(st.booleans()))
        else:
            body["model"] = PRIVATE_ALIAS
            doc.add_dup(body, "model", "gpt-oss-20b", after=draw(st.booleans()))


@st.composite
def fuzz_cases(draw: st.DrawFn) -> FuzzCase:
    body = copy.deepcopy(draw(valid_body()))
    doc = Doc(body)
    headers: list[tuple[str, str]] = []
    draw(private_marks(body, doc, headers))
    names = [draw(mutate(doc)) for _ in range(draw(st.integers(0, 3)))]
    raw = render(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    corruption = draw(st.sampled_from([None] * 6 + ["truncate", "bom", "garbage", "invalid_utf8",
                                                    "empty", "nan"]))
    if corruption == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif corruption == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif corruption == "garbage":
        raw += b" ]}x"
    elif corruption == "invalid_utf8":
        raw = raw.replace(b'"', b'"\xff', 1)
    elif corruption == "empty":
        raw = b""
    elif corruption == "nan":
        raw = raw.replace(b"{", b'{"temperature":NaN,', 1)
    if corruption:
        names.append(corruption)
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    for extra in draw(st.lists(st.sampled_from([
            ("X-Request-Id", "r" * 300), ("X-Request-Id", "é\x7f"), ("Authorization", "Bearer "),
            ("Authorization", "Basic Zm9vOmJhcg=="), ("X-API-Key", "nope"), ("Accept", "*/*"),
            ("X-Privacy", "standard"), ("X-Privacy", "bogus"), ("Content-Encoding", "gzip"),
            ("Expect", "100-continue")]), max_size=2)):
        headers.append(extra)
    private = _private_in_body(doc) or any(
        k.lower() == "x-privacy" and _says_private(v) for k, v in headers)
    return FuzzCase(draw(st.sampled_from(ENDPOINTS)), raw, headers, private, names)
