"""A complete stream is audited `ok`/200 whichever backend served it, also when the client
hangs up the moment the answer's last event arrived (as the SDKs do after `[DONE]`), while
the router is still closing the upstream stream."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.client import EFFORT, HTTP, PIN, PROMPT
from tests.e2e.conftest import Stack
from tests.e2e.fault_helpers import audit_record

MESSAGES = [{"role": "user", "content": PROMPT}]
# surface -> (path, body, the bytes that end a whole answer there)
SURFACES: dict[str, tuple[str, dict[str, Any], bytes]] = {
    "openai": ("/v1/chat/completions", {"model": "gpt-oss-20b", "messages": MESSAGES,
                                        "reasoning_effort": EFFORT, "stream": True},
               b"data: [DONE]"),
    "responses": ("/v1/responses", {"model": "gpt-oss-20b", "input": PROMPT, "stream": True},
                  b"response.completed"),
    "anthropic": ("/v1/messages", {"model": "gpt-oss-20b", "messages": MESSAGES,
                                   "max_tokens": 256, "stream": True}, b"message_stop"),
    "ollama": ("/api/chat", {"model": "gpt-oss:20b", "messages": MESSAGES, "stream": True},
               b'"done":true'),
}


def _stream_and_hang_up(url: str, backend: str, request_id: str,
                        surface: str = "openai") -> bytes:
    """Read the stream up to its last event, then close the connection at once (as an SDK
    client does)."""
    path, body, end = SURFACES[surface]
    seen = b""
    headers = {PIN: backend, "x-request-id": request_id, "connection": "close"}
    with HTTP.stream("POST", url + path, json=body, headers=headers) as r:
        assert r.status_code == 200 and r.headers["x-router-backend"] == backend
        for piece in r.iter_raw():
            seen += piece
            if end in seen and seen.endswith(b"\n"):
                break
    return seen


@pytest.mark.parametrize("stack", ["bedrock"], indirect=True)
@pytest.mark.parametrize("backend", ["local", "bedrock", "sagemaker"])
def test_complete_stream_is_audited_ok(stack: Stack, backend: str) -> None:
    rid = f"whole-stream-{backend}-{time.monotonic_ns()}"
    seen = _stream_and_hang_up(stack.url, backend, rid)
    assert b'"finish_reason":"stop"' in seen and b'"error"' not in seen
    rec = audit_record(stack, rid)
    assert (rec["outcome"], rec["status"], rec["backend"]) == ("ok", 200, backend), rec


@pytest.mark.parametrize("stack", ["bedrock"], indirect=True)
@pytest.mark.parametrize("surface", ["responses", "anthropic", "ollama"])
def test_complete_bedrock_stream_is_audited_ok_on_every_surface(stack: Stack,
                                                                surface: str) -> None:
    rid = f"whole-stream-{surface}-{time.monotonic_ns()}"
    seen = _stream_and_hang_up(stack.url, "bedrock", rid, surface)
    assert SURFACES[surface][2] in seen
    rec = audit_record(stack, rid)
    assert (rec["outcome"], rec["status"], rec["backend"]) == ("ok", 200, "bedrock"), rec
