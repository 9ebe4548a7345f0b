"""Property: a secret at ANY string position of a request makes it private, and through the real
ASGI app it is never attempted on a cloud backend.

A Chat Completions body of random shape (messages with names, tool calls and results, tools
with parameter schemas, enums and defaults, tool_choice, response_format, stop, metadata,
user) is generated from secret-free words; then one string leaf (or a schema property name, or
an integer enum value) is replaced by an e-mail address, card number, AWS key, IBAN, phone or
private-key header. The classifier must say private with a detector source; the app must not
attempt the cloud, which its standard route prefers. The clean body is checked to be standard,
so it is the secret alone that moves the request. Examples: `HR_PRIVACY_EXAMPLES // 5` for the
classifier, `// 20` (at least 100) through the app.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from router.policy.schema import PrivacyConfig
from router.privacy import classify
from router.types import ChatRequest
from tests.property.privacy_app import PrivacyApp, assert_never_cloud, json_headers

BASE = int(os.environ.get("HR_PRIVACY_EXAMPLES", "1000"))
CLASSIFIER_EXAMPLES = max(100, BASE // 5)
APP_EXAMPLES = max(100, BASE // 20)

# Words without digits, "@", "+" or "-----": a body made of them can hold no secret.
WORDS = st.text(alphabet="abcdefghij klmnop_", min_size=1, max_size=12)
IDENT = st.text(alphabet="abcdefghijklmnop_", min_size=1, max_size=10)
# Secrets that fit anywhere, and those that are also valid names and ids ([A-Za-z0-9_-]).
FREE_SECRETS = ["ann.smith@example.org", "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE",
                "DE89 3704 0044 0532 0130 00", "+44 20 7946 0958",
                "-----BEGIN RSA PRIVATE KEY-----"]
NAME_SECRETS = ["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A", "4111111111111111",
                "5555555555554444"]
CARD_INTS = [4111111111111111, 378282246310005]
# Values that are the schema's own vocabulary, not client text: never replaced.
STRUCTURAL = frozenset({"role", "type", "model"})
NAME_KEYS = frozenset({"name", "id", "tool_call_id", "required"})
DATA_KEYED = frozenset({"arguments", "properties", "metadata"})  # their keys are client data


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name in [f"{draw(IDENT)}_{i}" for i in range(draw(st.integers(0, 3)))]:
        prop: dict[str, Any] = {"type": "string", "description": draw(WORDS)}
        if draw(st.booleans()):
            prop["enum"] = draw(st.lists(WORDS, min_size=1, max_size=3))
        if draw(st.booleans()):
            prop["default"] = draw(WORDS)
        props[name] = prop
    if draw(st.booleans()):
        props["count"] = {"type": "integer", "enum": [1, 2, 3]}
    return {"type": "object", "description": draw(WORDS), "properties": props,
            "required": list(props)[:1]}


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    tools: list[dict[str, Any]] = [
        {"type": "function", "function": {"name": name, "description": draw(WORDS),
                                          "parameters": draw(schemas())}}
        for name in [f"{draw(IDENT)}_{i}" for i in range(draw(st.integers(0, 3)))]]
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])),
                         "content": draw(WORDS)})
    for turn in range(draw(st.integers(1, 3))):
        user: dict[str, Any] = {"role": "user", "content": draw(WORDS)}
        if draw(st.booleans()):
            user["content"] = [{"type": "text", "text": draw(WORDS)}]
        if draw(st.booleans()):
            user["name"] = draw(IDENT)
        messages.append(user)
        if draw(st.booleans()) and tools:
            fn = tools[0]["function"]["name"]
            call_id = f"call_{draw(IDENT)}_{turn}"
            assistant: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": fn, "arguments": {draw(IDENT): draw(WORDS)}}}]}
            if draw(st.booleans()):
                assistant["reasoning_content"] = draw(WORDS)
            messages.extend([assistant, {"role": "tool", "tool_call_id": call_id,
                                         "content": draw(WORDS)}])
    messages.append({"role": "user", "content": draw(WORDS)})
    body: dict[str, Any] = {"model": "gpt-oss-20b", "messages": messages}
    if tools:
        body["tools"] = tools
        body["tool_choice"] = draw(st.sampled_from([
            "auto", "required", {"type": "function",
                                 "function": {"name": tools[0]["function"]["name"]}}]))
    if draw(st.booleans()):
        body["stop"] = draw(st.one_of(WORDS, st.lists(WORDS, min_size=1, max_size=4)))
    if draw(st.booleans()):
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": draw(IDENT), "schema": draw(schemas())}}
    if draw(st.booleans()):
        body["metadata"] = {draw(IDENT): draw(WORDS)}
    if draw(st.booleans()):
        body["user"] = draw(WORDS)
    return body


# (container, key or index, what: "text" | "name" | "key" | "int", the field it belongs to)
Slot = tuple[Any, Any, str, str]


def _slots(body: dict[str, Any]) -> list[Slot]:
    """Every replaceable position: string values, the names of schema properties and metadata
    entries (dict keys), integer enum values."""
    slots: list[Slot] = []
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        node, parent = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            if not isinstance(node, dict):
                field = parent  # a list item
            elif parent in DATA_KEYED:
                field = f"{parent}[]"  # a value under a data key (a property, an argument)
            else:
                field = str(k)
            if isinstance(v, str):
                if field not in STRUCTURAL and not (k == "tool_choice" and parent == ""):
                    slots.append((node, k, "name" if field in NAME_KEYS else "text", field))
            elif isinstance(v, int) and not isinstance(v, bool) and parent == "enum":
                slots.append((node, k, "int", "enum"))
            elif isinstance(v, dict | list):
                if k in ("properties", "metadata") and isinstance(v, dict):
                    slots.extend((v, name, "key", k) for name in v)
                stack.append((v, field))
    return slots


def _place(data: st.DataObject, body: dict[str, Any]) -> str:
    """Put one secret at a random slot of `body` (in place); returns where, for the report."""
    draw = data.draw
    container, key, what, field = draw(st.sampled_from(_slots(body)))
    where = f"{what} in {field} [{key!r}]"
    if what == "int":
        container[key] = draw(st.sampled_from(CARD_INTS))
    elif what == "key":
        container[draw(st.sampled_from(NAME_SECRETS))] = container.pop(key)
    elif what == "name":
        container[key] = draw(st.sampled_from(NAME_SECRETS))
    else:
        secret = draw(st.sampled_from(FREE_SECRETS))
        container[key] = f"{draw(WORDS)} {secret} {draw(WORDS)}"
    return where


def _classify(body: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    d = classify(ChatRequest.model_validate(body), header=None, key_default="standard",
                 alias_private=False, config=PrivacyConfig())
    return d.cls, d.sources


@settings(max_examples=CLASSIFIER_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_a_secret_anywhere_makes_the_request_private(data: st.DataObject) -> None:
    body = data.draw(chat_bodies())
    assert _classify(body)[0] == "standard", body  # the generator itself holds no secret
    where = _place(data, body)
    event(where.split(" [")[0])
    note(f"{where}: {json.dumps(body)}")
    cls, sources = _classify(body)
    assert cls == "private", (where, body)
    assert any(s.startswith("detector:") for s in sources), sources


@pytest.fixture(scope="module")
def app() -> Iterator[PrivacyApp]:
    a = PrivacyApp()
    yield a
    a.close()


@settings(max_examples=APP_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_secret_anywhere_never_reaches_the_cloud(app: PrivacyApp, data: st.DataObject) -> None:
    body = data.draw(chat_bodies())
    where = _place(data, body)
    note(f"{where}: {json.dumps(body)}")
    out = app.send(json.dumps(body).encode(), json_headers())
    assert_never_cloud(out, where)
