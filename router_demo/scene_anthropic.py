"""Demo scene: an Anthropic Messages client through the router.

Plain HTTP (the standard library, as an Anthropic client sends it: `x-api-key`,
`anthropic-version`), so the demo needs no extra package: a message with a thinking budget (a
thinking block and a text block come back), the same question streamed (the `event:` sequence
is checked), a tool_use round trip, and a private request that must stay local.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from router_demo.common import Row

# Loopback only: never through a proxy from the environment.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_WEATHER = {"name": "get_weather", "description": "Current weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}
Check = Callable[[str, str, Any], bool]


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[Any, str, str, str]:
    """(parsed answer or SSE event names, backend, reason, tokens)."""
    req = urllib.request.Request(
        url + "/v1/messages", data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": "demo",
                 "anthropic-version": "2023-06-01", **headers})
    try:
        with _LOOPBACK.open(req, timeout=30) as r:
            backend = r.headers.get("x-router-backend", "?")
            reason = r.headers.get("x-router-reason", "?")
            raw = r.read().decode()
    except urllib.error.HTTPError as exc:
        err = json.loads(exc.read() or b"{}").get("error", {})
        return None, "-", f"HTTP {exc.code} {err.get('type', '?')}", "-"
    if body.get("stream"):
        events = [line[7:] for line in raw.splitlines() if line.startswith("event: ")]
        return events, backend, reason, "-"
    msg = json.loads(raw)
    usage = msg.get("usage") or {}
    return msg, backend, reason, f"{usage.get('input_tokens')}+{usage.get('output_tokens')}"


def _row(rows: list[Row], url: str, label: str, check: Check, body: dict[str, Any],
         headers: dict[str, str] | None = None) -> Any:
    t = time.perf_counter()
    out, backend, reason, tokens = _post(url, {"model": "gpt-oss-20b", "max_tokens": 512,
                                               **body}, headers or {})
    ms = (time.perf_counter() - t) * 1000
    ok = out is not None and check(backend, reason, out)
    rows.append(Row("anthropic", label, backend, reason, ms, tokens, ok))
    return out


def _kinds(msg: Any) -> list[str]:
    return [b.get("type") for b in msg.get("content", [])] if isinstance(msg, dict) else []


def anthropic_scene(router_url: str, rows: list[Row]) -> None:
    """Append the scene's rows (the router must be in front of a healthy local backend)."""
    ask = [{"role": "user", "content": "Explain MXFP4 quantization in one sentence."}]
    _row(rows, router_url, "messages + thinking budget",
         lambda b, r, m: b == "local" and _kinds(m) == ["thinking", "text"],
         {"messages": ask, "thinking": {"type": "enabled", "budget_tokens": 2048}})
    _row(rows, router_url, "messages, streamed (SSE events)",
         lambda b, r, ev: b == "local" and ev[:2] == ["message_start", "ping"]
         and "content_block_delta" in ev and ev[-1] == "message_stop",
         {"messages": ask, "stream": True})
    tools: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Tokyo?"}]
    first = _row(rows, router_url, "tool_use requested",
                 lambda b, r, m: m.get("stop_reason") == "tool_use",
                 {"messages": tools, "tools": [_WEATHER]})
    use = next((c for c in first.get("content", []) if c.get("type") == "tool_use"), None) \
        if isinstance(first, dict) else None
    if use is None:
        rows[-1].ok = False
        return
    tools += [{"role": "assistant", "content": first["content"]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                            "content": '{"city":"Tokyo","temp_c":21}'}]}]
    _row(rows, router_url, "tool_result -> final answer",
         lambda b, r, m: m.get("stop_reason") == "end_turn" and "text" in _kinds(m),
         {"messages": tools, "tools": [_WEATHER]})
    _row(rows, router_url, "X-Privacy: private",
         lambda b, r, m: b == "local" and r == "private_local_only",
         {"messages": [{"role": "user", "content": "Summarise our Q3 numbers."}]},
         {"X-Privacy": "private"})
