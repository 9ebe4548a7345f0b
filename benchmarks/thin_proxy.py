"""The thinnest proxy on the router's stack: the ceiling `overhead.py` measures the router against.

Starlette on uvicorn (uvloop event loop, httptools parser, one worker, access log off, as the
router runs), one pooled `aiohttp.ClientSession` to the upstream, and nothing else: every POST
is forwarded to the same path on the upstream with its body as bytes and its content type; the
answer's status, content type and bytes come back. Nothing is parsed, validated, classified or
routed. A `text/event-stream` answer is relayed chunk by chunk as it arrives (as the router
relays a stream); any other answer is read whole and sent with a content length. `GET /healthz`
answers `ok` for readiness.

    python -m benchmarks.thin_proxy --upstream http://127.0.0.1:11434 [--port 0]

`start_thin_proxy` starts it as a benchmark child process (see `harness.Child`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from benchmarks.harness import Child
from router_simulators.server import free_port

STREAM_TYPE = "text/event-stream"


def create_app(upstream: str) -> Starlette:
    """The proxy app: POST anything -> the same path on `upstream`, bytes in and out."""
    base = upstream.rstrip("/")
    session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False)
        try:
            yield
        finally:
            await session.close()

    async def forward(request: Request) -> Response:
        assert session is not None
        body = await request.body()
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        upstream_resp = await session.post(base + request.url.path, data=body, headers=headers)
        ctype = upstream_resp.headers.get("content-type", "application/octet-stream")
        if ctype.startswith(STREAM_TYPE):
            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in upstream_resp.content.iter_any():
                        yield chunk
                finally:
                    upstream_resp.release()

            return StreamingResponse(relay(), status_code=upstream_resp.status,
                                     media_type=ctype)
        try:
            data = await upstream_resp.read()
        finally:
            upstream_resp.release()
        return Response(data, status_code=upstream_resp.status, media_type=ctype)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"]),
                             Route("/{path:path}", forward, methods=["POST"])],
                     lifespan=lifespan)


def start_thin_proxy(upstream: str, logdir: Path, name: str = "thin") -> tuple[Child, str]:
    """The proxy as a child process on a free loopback port; its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = Child(name, [sys.executable, "-m", "benchmarks.thin_proxy", "--upstream", upstream,
                         "--port", str(port)], url + "/healthz", logdir)
    return child, url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.thin_proxy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, help="base URL everything is forwarded to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    import uvicorn

    uvicorn.run(create_app(args.upstream), host=args.host, port=args.port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
