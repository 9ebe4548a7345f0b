"""Demo scene: an Ollama-native client through the router, served by the cloud while the GPU
is busy.

Plain HTTP NDJSON (the standard library, as the `ollama` package sends it), so the demo needs
no extra package: `/api/tags` lists the Ollama names, one `/api/chat` answer comes from the
local GPU in Ollama's shape (`message.thinking`, `done_reason`, `eval_count`), then a burst of
ten streamed `/api/chat` requests fills the local slots: the ones that would wait past the
bound are answered by Bedrock, still as Ollama NDJSON (one `done: true` line, last).
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from router_demo.common import Row

# Loopback only: never through a proxy from the environment.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Check = Callable[[str, str, list[dict[str, Any]]], bool]


def _call(url: str, path: str, body: dict[str, Any] | None) -> tuple[list[dict[str, Any]], str,
                                                                      str]:
    """(the JSON objects of the answer, one per NDJSON line; backend; reason)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data,
                                 headers={"content-type": "application/json"})
    try:
        with _LOOPBACK.open(req, timeout=30) as r:
            backend = r.headers.get("x-router-backend", "-")
            reason = r.headers.get("x-router-reason", "-")
            lines = [json.loads(x) for x in r.read().decode().splitlines() if x.strip()]
    except urllib.error.HTTPError as exc:
        err = json.loads(exc.read() or b"{}").get("error", "")
        return [], "-", f"HTTP {exc.code} {str(err)[:40]}"
    except OSError as exc:
        return [], "-", type(exc).__name__
    return lines, backend, reason


def _row(rows: list[Row], url: str, label: str, check: Check, path: str,
         body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    t = time.perf_counter()
    lines, backend, reason = _call(url, path, body)
    ms = (time.perf_counter() - t) * 1000
    last = lines[-1] if lines else {}
    tokens = (f"{last.get('prompt_eval_count', 0)}+{last.get('eval_count', 0)}"
              if "eval_count" in last else "-")
    rows.append(Row("ollama", label, backend, reason, ms, tokens, check(backend, reason, lines)))
    return lines


def _ndjson_ok(lines: list[dict[str, Any]]) -> bool:
    """Ollama's stream: objects with model/created_at/message, one `done: true`, last."""
    return bool(lines) and [x.get("done") for x in lines].count(True) == 1 and bool(
        lines[-1].get("done")) and lines[-1].get("done_reason") in ("stop", "length") and all(
        "message" in x and "created_at" in x for x in lines)


def ollama_scene(router_url: str, rows: list[Row]) -> None:
    """Append the scene's rows (the router in front of the demo's local GPU and Bedrock)."""
    _row(rows, router_url, "GET /api/tags (Ollama names)",
         lambda b, r, x: bool(x) and "gpt-oss:20b" in {m["name"] for m in x[0]["models"]},
         "/api/tags")
    msgs = [{"role": "user", "content": "Say hello in one sentence."}]
    _row(rows, router_url, "/api/chat, think high, local GPU",
         lambda b, r, x: b == "local" and bool(x) and bool(x[0]["message"].get("thinking"))
         and x[0].get("done_reason") == "stop",
         "/api/chat", {"model": "gpt-oss:20b", "messages": msgs, "think": "high",
                       "stream": False})
    burst = [{"role": "user", "content": "Burst request."}]
    start = len(rows)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        futs = [pool.submit(_row, rows, router_url, f"NDJSON stream #{i + 1} of 10",
                            lambda b, r, x: b in ("local", "bedrock") and _ndjson_ok(x),
                            "/api/chat", {"model": "gpt-oss:20b", "messages": burst})
                for i in range(10)]
        for f in futs:
            f.result()
    mine = rows[start:]
    spilled = any(r.backend == "bedrock" for r in mine)
    local = any(r.backend == "local" for r in mine)
    for r in mine:
        r.ok = r.ok and spilled and local
