"""ASGI middleware at the edge of the app: the Host allow-list and the request-body timeout.

`HostGuard` answers 421 (JSON) unless the `Host` header names an allowed host, so a web page
cannot reach the router through DNS rebinding. Loopback names (`localhost`, `127.0.0.1`,
`[::1]`, any port) are always allowed, and so is the bind host when it is a specific address;
`allowed_hosts` adds names (`*.example.com` matches subdomains), and `*` turns the check off.
A Host that is an IP address literal is accepted too: rebinding needs a DNS name (the page's
own origin), and probes and scrapers (kubelet, Prometheus) call a pod by its IP. `/healthz` and
`/readyz` are exempt as well: they reveal only a status word.

`BodyTimeout` bounds how long the app waits for the next piece of a request body (one timer
for all requests, armed for the oldest receive in progress); a body that stalls gets a 408
before the app ever sees it stall (the app's `receive` raises `BodyStalled`, which this
middleware turns into the response). Once the body is complete, `receive` is passed through
untouched (streaming responses keep waiting on it for the disconnect).

CORS headers are added only when origins are configured (`cors_middleware`, Starlette's).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyStalled", "BodyTimeout", "HostGuard", "allowed_host_set", "cors_middleware",
           "split_list"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
UNSPECIFIED_BINDS = ("0.0.0.0", "::", "[::]", "")
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
HOST_VERDICTS = 256  # distinct Host values whose verdict is remembered (the rest: checked)
CORS_HEADERS = ("authorization", "content-type", "x-api-key", "x-privacy", "x-request-id")
CORS_EXPOSE = ("x-request-id", "x-router-backend", "x-router-reason", "x-router-route",
               "retry-after")


def split_list(value: str) -> list[str]:
    """`"a, b,,c"` -> `["a", "b", "c"]` (settings hold lists as comma-separated strings)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_host_set(extra: str, bind_host: str) -> frozenset[str] | None:
    """The accepted host names (lower case, IPv6 in brackets); None when any host goes."""
    names = split_list(extra.lower())
    if "*" in names:
        return None
    hosts = set(LOOPBACK_HOSTS) | {_bracket(n) for n in names}
    if bind_host.strip().lower() not in UNSPECIFIED_BINDS:
        hosts.add(_bracket(bind_host.strip().lower()))
    return frozenset(hosts)


def host_name(header: str) -> str:
    """The host part of a Host header, without the port: `[::1]:80` -> `[::1]`."""
    h = header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[: end + 1] if end > 0 else h
    name, _, port = h.rpartition(":")
    return name if name and port.isdigit() else h.rstrip(":")


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
    except ValueError:
        return False
    return True


def _host_allowed(name: str, allowed: frozenset[str]) -> bool:
    name = name.rstrip(".")
    if name in allowed or _is_ip_literal(name):
        return True
    return any(a.startswith("*.") and name.endswith(a[1:]) for a in allowed)


async def send_json_error(send: Send, status: int, code: str, message: str,
                          headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": code}})
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *headers]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class HostGuard:
    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed
        self._verdicts: dict[bytes, bool] = {}  # raw Host header -> allowed (bounded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed is None or scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        raw = b""
        for k, v in scope["headers"]:
            if k == b"host":
                raw = v
                break
        ok = self._verdicts.get(raw)
        if ok is None:
            name = host_name(raw.decode("latin-1"))
            ok = bool(name) and _host_allowed(name, self.allowed)
            if len(self._verdicts) < HOST_VERDICTS:
                self._verdicts[raw] = ok
        if ok:
            await self.app(scope, receive, send)
            return
        await send_json_error(
            send, 421, "host_not_allowed",
            "The Host header names a host this router does not serve; add it to "
            "ROUTER_ALLOWED_HOSTS if clients reach the router by that name.")


class BodyStalled(Exception):
    """The client stopped sending its request body for longer than the body timeout."""


class _Reader:
    """One request's `receive`, bounded by the body timeout until the body is complete."""

    __slots__ = ("base", "done", "fired", "receive", "task", "watch")

    def __init__(self, receive: Receive, watch: _ReceiveWatch) -> None:
        self.receive = receive
        self.watch = watch
        self.done = False  # the body is complete: receive passes through
        self.fired = False  # the watch cancelled this request's task
        self.base = 0  # the task's cancel requests before the watch's
        self.task: asyncio.Task[Any] | None = None

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        if self.task is None:
            self.task = asyncio.current_task()
        watch = self.watch
        watch.begin(self)
        try:
            message = await self.receive()
        except asyncio.CancelledError:
            task = self.task
            if self.fired and task is not None and task.uncancel() <= self.base:
                raise BodyStalled from None
            raise
        finally:
            watch.end(self)
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message

    def expire(self) -> None:
        task = self.task
        if task is not None and not task.done() and not self.fired:
            self.fired = True
            self.base = task.cancelling()
            task.cancel()


class _ReceiveWatch:
    """The body timeout for every request of one app: the receives in progress, each with
    its deadline, and one loop timer armed for the oldest. Every deadline is `timeout_s` after
    its receive began, so start order is deadline order; a receive that returns at once (the
    body was already there) adds and removes one dict entry and arms no timer of its own."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._waiting: dict[_Reader, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def begin(self, reader: _Reader) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests): what the old one held is gone
            self._loop, self._handle = loop, None
            self._waiting.clear()
        deadline = loop.time() + self.timeout_s
        self._waiting[reader] = deadline
        if self._handle is None:
            self._handle = loop.call_at(deadline, self._fire)

    def end(self, reader: _Reader) -> None:
        self._waiting.pop(reader, None)

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        waiting = self._waiting
        while waiting:
            reader, deadline = next(iter(waiting.items()))
            if deadline > now:
                self._handle = loop.call_at(deadline, self._fire)
                return
            del waiting[reader]
            reader.expire()


class BodyTimeout:
    def __init__(self, app: ASGIApp, timeout_s: float,
                 on_timeout: Callable[[], None] | None = None) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self._watch = _ReceiveWatch(timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _Reader(receive, self._watch), watched_send)
        except BodyStalled:
            if self.on_timeout is not None:
                self.on_timeout()
            if not started:
                await send_json_error(
                    send, 408, "request_timeout",
                    f"The request body stalled: nothing arrived for {self.timeout_s:g}s.",
                    [(b"connection", b"close")])


def cors_middleware(origins: str) -> list[Middleware]:
    """Starlette's CORS middleware for the configured origins; none when empty."""
    allow = split_list(origins)
    if not allow:
        return []
    return [Middleware(CORSMiddleware, allow_origins=allow, allow_methods=["GET", "POST"],
                       allow_headers=list(CORS_HEADERS), expose_headers=list(CORS_EXPOSE))]
