"""Running the app under uvicorn: the server's limits, and a drain that keeps streams honest.

On SIGTERM uvicorn stops accepting and waits up to `grace_s` for requests in flight; a stream
still running shortly before the grace ends is finished with an in-band error event (via
`RouterService.begin_drain`) rather than cut at the socket. A drained shutdown exits 0.

Limits (all from settings): keep-alive lifetime, listen backlog, a header timeout (uvicorn has
none: `GuardedHttpTools`, a subclass of its httptools protocol, closes a connection whose
request headers are not complete `header_timeout_s` after it opened or after its request
began), a cap on open connections (beyond it a connection gets a JSON 503 and is closed at
once, so slow clients cannot exhaust file descriptors), and the soft RLIMIT_NOFILE raised to
the hard limit. The protocol also gives each request scope the `router.connection` extension
(`abort`), which a stalled streaming response uses to drop its connection. Body and send
timeouts live in `api/guards.py` and `api/streaming.py`.

Writes are corked (`CorkedTransport`, `corked.py`): what uvicorn writes for a response in one
run of the event loop (the status line and headers, then the body; a burst of SSE events that
were ready together) leaves in one socket write, flushed by a `call_soon` callback as soon as
the writing task yields. Nothing waits for more data: the flush runs in the same loop iteration.

Several workers (`workers` > 1, `hybrid-router serve --workers N`): `run_workers` binds the
port once and starts N spawned worker processes that each build their own app and serve the
same listening socket (the kernel hands each new connection to one of them). Each worker is a
replica in the sense of the shared Redis store, which is therefore required (`workers_problem`):
slots, breakers and spend must be one ledger, never one per worker. The limits above apply per
worker (N workers accept up to N x `max_connections`). The parent forwards SIGTERM, SIGINT and
SIGHUP to every worker, waits for their drains, and exits 0 when all exited 0; a worker that
dies on its own stops the others and the parent exits 1, for the supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

import orjson
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from router.api.streaming import CONNECTION_EXTENSION
from router.corked import CorkedTransport
from router.metrics import SlowClient
from router.service import RouterService
from router.settings import RouterSettings

log = logging.getLogger("router.server")

FD_RESERVE = 128  # descriptors kept for upstream connections, the audit log, Redis, ...
WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "aiohttp.client", "s3transfer")

_BUSY_BODY = (b'{"error":{"message":"The router has too many open connections.",'
              b'"type":"api_error","param":null,"code":"too_many_connections"}}')
_OVER_CAPACITY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\nconnection: close\r\nretry-after: 1\r\n\r\n%s"
                  % (len(_BUSY_BODY), _BUSY_BODY))


def _json_error(status: bytes, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": code}})
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and a connection cap.

    Configure the class attributes (or use `guarded_protocol`) before handing it to uvicorn.
    """

    header_timeout_s: float = 10.0
    max_connections: int = 2048
    max_header_bytes: int = 64 * 1024  # request line plus headers; 431 beyond
    on_slow_client: Callable[[SlowClient], None] | None = None

    _header_timer: asyncio.TimerHandle | None = None
    _header_deadline: float = 0.0  # while reading a request line and headers; else 0.0
    _header_bytes: int = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._count(SlowClient.OVER_CAPACITY)
            transport.write(_OVER_CAPACITY)
            transport.close()
            return
        # uvicorn's request cycles write through `self.transport`; flow control keeps the real one.
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {CONNECTION_EXTENSION: {"abort": self._abort}}
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        reading_headers = self._header_deadline > 0.0
        super().data_received(data)
        # Still inside the request line and headers after this chunk (a chunk that completes
        # them may carry body bytes too, which do not count).
        if reading_headers and self._header_deadline > 0.0:
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
                self._disarm_header_timer()
                self.transport.write(_json_error(
                    b"431 Request Header Fields Too Large", "headers_too_large",
                    f"The request line and headers exceed {self.max_header_bytes} bytes."))
                self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's own parser errors (bad request line, header, chunk): JSON, not text."""
        self.transport.write(_json_error(
            b"400 Bad Request", "invalid_http", f"The HTTP request could not be parsed: {msg}"))
        self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _count(self, kind: SlowClient) -> None:
        hook = type(self).on_slow_client
        if hook is not None:
            hook(kind)

    # One timer per connection, re-armed lazily: a request whose headers arrive in time only
    # sets and clears `_header_deadline`; the timer, when it fires, re-arms for the deadline
    # in force (or stops when there is none).
    def _arm_header_timer(self) -> None:
        if self._header_deadline == 0.0:
            self._header_bytes = 0
            self._header_deadline = self.loop.time() + self.header_timeout_s
            if self._header_timer is None:
                self._header_timer = self.loop.call_at(self._header_deadline,
                                                       self._header_timeout)

    def _disarm_header_timer(self) -> None:
        self._header_deadline = 0.0

    def _header_timeout(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if deadline == 0.0:
            return
        if self.loop.time() < deadline:
            self._header_timer = self.loop.call_at(deadline, self._header_timeout)
            return
        self._header_deadline = 0.0
        if not self.transport.is_closing():
            self._count(SlowClient.HEADER_TIMEOUT)
            self.transport.abort()


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 1 << 16
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        log.warning("could not raise the open-file limit from %d to %d", soft, target)
        return soft
    return target


def connection_cap(wanted: int, fd_limit: int) -> int:
    """`max_connections`, lowered so client and upstream sockets fit in the fd limit."""
    fits = max(16, (fd_limit - FD_RESERVE) // 2)
    return min(wanted, fits)


def guarded_protocol(header_timeout_s: float, max_connections: int,
                     on_slow_client: Callable[[SlowClient], None] | None = None,
                     ) -> type[GuardedHttpTools]:
    """A configured protocol class (a subclass per server: class attributes hold the limits)."""
    return type("RouterHttpProtocol", (GuardedHttpTools,), {
        "header_timeout_s": header_timeout_s, "max_connections": max_connections,
        "on_slow_client": staticmethod(on_slow_client) if on_slow_client else None})


def configure_logging(settings: RouterSettings) -> None:
    """Root logging at `log_level`; wire-level loggers at WARNING unless `wire_logs` is set
    (at debug, botocore logs whole request bodies: prompt text would reach the log)."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if settings.wire_logs
                                         else logging.WARNING)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: RouterService, grace_s: float) -> None:
        super().__init__(config)
        self._service = service
        self._grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._service.begin_drain(self._grace_s)


def build_config(app: Starlette, settings: RouterSettings) -> uvicorn.Config:
    service: RouterService = app.state.service
    cap = connection_cap(settings.max_connections, raise_fd_limit())
    if cap < settings.max_connections:
        log.warning("max_connections lowered to %d to fit the open-file limit", cap)
    protocol = guarded_protocol(settings.header_timeout_s, cap,
                                service.count_slow_client)
    return uvicorn.Config(app, host=settings.host, port=settings.port,
                          log_level=settings.log_level, access_log=False,
                          http=protocol, timeout_keep_alive=settings.keep_alive_s,
                          backlog=settings.backlog,
                          timeout_graceful_shutdown=settings.grace_s)  # type: ignore[arg-type]


def tune_gc(settings: RouterSettings) -> tuple[int, int, int]:
    """Collect once, freeze what startup built, and collect the young generation less often.

    At Python's default (a collection every 700 net allocations) a loaded router collected
    hundreds of times a second, and each pass over the startup objects (policy, pydantic
    models, botocore) stalled the loop: that was its p99 (benchmarks/README.md). Frozen objects
    are never scanned; a larger young generation makes the passes rarer. Returns the thresholds
    now in force.
    """
    gc.collect()
    gc.freeze()
    if settings.gc_gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, gen1, gen2)
    return gc.get_threshold()


def run(app: Starlette, settings: RouterSettings) -> None:
    tune_gc(settings)
    # uvicorn re-raises the SIGTERM it captured once drained, with the previous handler in
    # place: make that handler a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    DrainingServer(build_config(app, settings), app.state.service, settings.grace_s).run()


# --------------------------------------------------------------------------------------------
# Several worker processes on one port
# --------------------------------------------------------------------------------------------

WORKERS_NEED_REDIS = (
    "--workers {n} needs shared state: set ROUTER_REDIS_URL (for example "
    "redis://127.0.0.1:6379/0). With the in-memory store every worker would keep its own "
    "slots, breakers and spend, so together they could oversubscribe the GPU and overspend.")
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def workers_problem(settings: RouterSettings) -> str | None:
    """Why `settings` cannot run with its `workers`, or None when it can."""
    if settings.workers > 1 and not settings.redis_url:
        return WORKERS_NEED_REDIS.format(n=settings.workers)
    return None


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket every worker serves (bound once, by the parent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def worker_settings(settings: RouterSettings, index: int) -> RouterSettings:
    """A worker's settings: one process, and its own replica id when one was given."""
    update: dict[str, object] = {"workers": 1}
    if settings.replica_id:
        update["replica_id"] = f"{settings.replica_id}/w{index}"
    return settings.model_copy(update=update)


def _worker_main(settings: RouterSettings, sock: socket.socket) -> None:
    """One worker (in a spawned process): its own app, serving the parent's socket."""
    from router.app import create_app

    configure_logging(settings)
    app = create_app(settings)
    tune_gc(settings)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    DrainingServer(build_config(app, settings), app.state.service,
                   settings.grace_s).run(sockets=[sock])


def run_workers(settings: RouterSettings) -> int:
    """Serve with `settings.workers` processes on one port; the exit status for the command."""
    problem = workers_problem(settings)
    if problem:
        raise ValueError(problem)
    sock = bind_socket(settings.host, settings.port)
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    stopping = False

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                # SIGINT becomes SIGTERM: a terminal's Ctrl-C already reached every worker,
                # and a second SIGINT would make uvicorn skip the drain.
                with contextlib.suppress(OSError):
                    os.kill(p.pid, signal.SIGTERM if sig == signal.SIGINT else sig)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        for i in range(settings.workers):
            worker = ctx.Process(target=_worker_main, args=(worker_settings(settings, i), sock),
                                 name=f"hybrid-router-worker-{i}", daemon=False)
            worker.start()
            procs.append(worker)
        log.info("serving on %s:%d with %d workers (pids %s)", settings.host, settings.port,
                 len(procs), ", ".join(str(p.pid) for p in procs))
        while any(p.exitcode is None for p in procs):
            multiprocessing.connection.wait([p.sentinel for p in procs if p.exitcode is None],
                                            timeout=0.5)
            died = [p for p in procs if p.exitcode is not None]
            if died and not stopping:
                log.error("worker %s exited (%s) on its own: stopping the others",
                          died[0].name, died[0].exitcode)
                stopping = True
                forward(signal.SIGTERM, None)
                for p in procs:
                    p.join(settings.grace_s + 5)
                    if p.exitcode is None:
                        p.kill()
                return 1
        return 0 if all(p.exitcode == 0 for p in procs) else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for p in procs:
            if p.exitcode is None:
                p.kill()
                p.join()
        sock.close()
