"""Slow and stuck clients against a real router process (raw loopback sockets).

- A client that sends a stream request and never reads: once one send has blocked for
  ROUTER_SEND_TIMEOUT_S the response is abandoned, the upstream stream is cancelled, the local
  slot (the only one) is released, the outcome is audited and counted as `client_stalled`, and
  a private request is served afterwards. The policy's idle timeout and deadline are long, so
  nothing else could free the slot within the test.
- Hundreds of connections that send half a request line and then nothing: a legitimate client
  is served at once while they are connected, and each of them is closed after
  ROUTER_HEADER_TIMEOUT_S.
- A request body that stalls gets a JSON 408 after ROUTER_BODY_TIMEOUT_S.
- Beyond ROUTER_MAX_CONNECTIONS a new connection gets a JSON 503 and is closed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from router.audit import summarize
from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy

ENDLESS = "stream for ever please"  # the prompt our Ollama answers with an endless stream
SLOW = 300  # slow-header connections
HEADER_TIMEOUT_S = 2.0


class EndlessOllama:
    """The Ollama simulator, except that ENDLESS gets an endless stream of 4 KB tokens."""

    def __init__(self) -> None:
        self.open_streams = 0
        self.server = SimServer(self._app)

    def _app(self) -> web.Application:
        app = ollama_app(OllamaSimConfig(parallel=1))

        @web.middleware
        async def endless(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path != "/api/chat":
                return await handler(request)
            data = json.loads(await request.read())
            if ENDLESS not in json.dumps(data.get("messages")):
                return await handler(request)
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            line = json.dumps({"model": data["model"], "created_at": "2025-08-05T00:00:00Z",
                               "message": {"role": "assistant", "content": "x" * 4096},
                               "done": False}).encode() + b"\n"
            self.open_streams += 1
            try:
                while True:  # until the router lets go of this upstream call
                    await resp.write(line)
                    await asyncio.sleep(0)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                self.open_streams -= 1
            return resp

        app.middlewares.append(endless)
        return app


@pytest.fixture(scope="module")
def endless_ollama() -> Iterator[EndlessOllama]:
    sim = EndlessOllama()
    with sim.server:
        yield sim


@pytest.fixture(scope="module")
def router(endless_ollama: EndlessOllama, module_tmp: Path) -> Iterator[RouterProcess]:
    policy = base_policy(endless_ollama.server.url, stream={"first_token_timeout_s": 30,
                                                            "idle_timeout_s": 60},
                         deadline_s=300, privacy={"private_max_queue_wait_s": 1})
    policy["backends"]["local"]["parallel"] = 1
    audit = module_tmp / "slow-audit.jsonl"
    proc = RouterProcess(policy, module_tmp, {
        "ROUTER_SEND_TIMEOUT_S": "1", "ROUTER_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "ROUTER_BODY_TIMEOUT_S": "0.5", "ROUTER_AUDIT_LOG": str(audit)})
    proc.audit = audit  # type: ignore[attr-defined]
    yield proc
    proc.stop()


def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    return s


def _request(port: int, body: bytes, *, length: int | None = None) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length or len(body)}\r\n\r\n"
            ).encode() + body


def _local_load(proc: RouterProcess) -> int:
    status = httpx.get(proc.url + "/v1/router/status", timeout=5).json()
    q = status["backends"]["local"]["queues"]["gpt-oss-20b"]
    return int(q["in_flight"]) + int(q["queued"])


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _closed(s: socket.socket) -> bool:
    """The peer closed (EOF or reset); False while the connection is still open."""
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_stops_reading_releases_the_slot(router: RouterProcess,
                                                      endless_ollama: EndlessOllama) -> None:
    body = json.dumps({"model": "gpt-oss-20b", "stream": True,
                       "messages": [{"role": "user", "content": ENDLESS}]}).encode()
    stuck = _connect(router.port, rcvbuf=1024)
    try:
        stuck.sendall(_request(router.port, body))  # ... and never read a byte
        _wait(lambda: _local_load(router) == 1, 10, "the stream never took the local slot")
        _wait(lambda: _local_load(router) == 0, 15, "a stuck client kept the local slot")
        _wait(lambda: endless_ollama.open_streams == 0, 5, "the upstream stream was not cancelled")
        stuck.setblocking(False)
        _wait(lambda: _drained_to_close(stuck), 5, "the stalled connection was left open")
    finally:
        stuck.close()
    r = httpx.post(router.url + "/v1/chat/completions", timeout=20, headers={
        "x-privacy": "private"}, json={"model": "gpt-oss-20b",
                                       "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["x-router-backend"] == "local", r.text
    metrics = httpx.get(router.url + "/metrics", timeout=5).text
    assert _metric(metrics, "router_requests_total", outcome="client_stalled") == 1, metrics
    assert _metric(metrics, "router_slow_clients_total", kind="send_timeout") == 1, metrics
    audit: Path = router.audit  # type: ignore[attr-defined]
    _wait(lambda: "client_stalled" in audit.read_text(), 5, "the stall was not audited")
    records = [json.loads(x) for x in audit.read_text().splitlines() if x.strip()]
    stalled = [r for r in records if r["outcome"] == "client_stalled"]
    assert len(stalled) == 1 and stalled[0]["backend"] == "local", stalled
    assert summarize(str(audit), local_backends={"local"})["private_on_non_local"] == 0


def _drained_to_close(s: socket.socket) -> bool:
    """Read what the router had sent; True once the connection ends (EOF or reset)."""
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_slow_headers_do_not_stop_service_and_are_closed(router: RouterProcess) -> None:
    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW):
            s = _connect(router.port)
            s.sendall(b"GET /v1/models HT")  # half a request line, then nothing
            s.setblocking(False)
            slow.append(s)
        opened = time.monotonic()
        r = httpx.get(router.url + "/healthz", timeout=5)
        served_in = time.monotonic() - opened
        assert r.status_code == 200 and served_in < 1.0, served_in
        assert r.json() == {"status": "ok"}
        assert not any(_closed(s) for s in slow[-10:]), "closed before the header timeout"
        deadline = opened + HEADER_TIMEOUT_S + 10
        pending = list(slow)
        while pending and time.monotonic() < deadline:
            pending = [s for s in pending if not _closed(s)]
            time.sleep(0.05)
        assert not pending, f"{len(pending)} slow-header connections still open"
    finally:
        for s in slow:
            s.close()
    metrics = httpx.get(router.url + "/metrics", timeout=5).text
    assert _metric(metrics, "router_slow_clients_total", kind="header_timeout") >= SLOW


def test_a_stalled_body_gets_408(router: RouterProcess) -> None:
    s = _connect(router.port)
    try:
        s.sendall(_request(router.port, b'{"model": "gpt', length=200))
        s.settimeout(10)
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    finally:
        s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), raw
    assert json.loads(body)["error"]["code"] == "request_timeout", raw


def test_connections_beyond_the_cap_get_503(endless_ollama: EndlessOllama,
                                            tmp_path: Path) -> None:
    proc = RouterProcess(base_policy(endless_ollama.server.url), tmp_path,
                         {"ROUTER_MAX_CONNECTIONS": "20"})
    idle: list[socket.socket] = []
    try:
        idle = [_connect(proc.port) for _ in range(20)]
        extra = _connect(proc.port)
        extra.settimeout(10)
        raw = b""
        while chunk := extra.recv(65536):
            raw += chunk
        extra.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), raw
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        for s in idle:
            s.close()
        idle = []
        _wait(lambda: httpx.get(proc.url + "/healthz", timeout=5).status_code == 200, 10,
              "the router did not recover once connections closed")
    finally:
        for s in idle:
            s.close()
        proc.stop()


def _exchange(port: int, raw_request: bytes) -> tuple[bytes, bytes]:
    s = _connect(port)
    try:
        s.sendall(raw_request)
        s.settimeout(10)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    except ConnectionError:
        pass
    finally:
        s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("raw_request", [
    b"GARBAGE\r\n\r\n",  # no request line
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",  # a header without ':'
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n",
])
def test_http_parser_errors_are_json(router: RouterProcess, raw_request: bytes) -> None:
    head, body = _exchange(router.port, raw_request)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/json" in head
    assert json.loads(body)["error"]["code"] == "invalid_http"


def test_oversized_headers_get_431(router: RouterProcess) -> None:
    raw_request = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000
                   + b"\r\n\r\n")
    head, body = _exchange(router.port, raw_request)
    assert head.startswith(b"HTTP/1.1 431"), head
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert httpx.get(router.url + "/healthz", timeout=5).status_code == 200
