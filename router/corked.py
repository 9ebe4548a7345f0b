"""Corked writes: a transport wrapper whose writes within one run of the loop leave as one.

uvicorn writes a response's status line and headers, and each SSE event, with separate
`transport.write` calls; each is a system call. `CorkedTransport` (installed by the server's
connection protocol, `server.py`) joins what is written before the writing task yields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

CORK_MAX_BYTES = 64 * 1024  # corked bytes flushed at once, without waiting for the loop


class CorkedTransport:
    """A transport whose writes within one run of the loop go out as one `write`.

    `write` appends to a buffer and, on the first append, schedules `flush` with `call_soon`
    (a buffer of `CORK_MAX_BYTES` or more is flushed at once, so a large burst meets the real
    transport's flow control as before);
    `close`, `write_eof` and `set_protocol` flush first (nothing is lost or reordered), `abort`
    drops the buffer with the connection. `get_write_buffer_size` counts the buffer, so flow
    control sees it. Everything else is the real transport's.
    """

    __slots__ = ("_buf", "_loop", "_scheduled", "_size", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._buf: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._buf.append(bytes(data))
        self._size += len(data)
        if self._size >= CORK_MAX_BYTES:
            self.flush()  # a large burst goes now: the real transport's flow control sees it
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._scheduled = False
        buf = self._buf
        if not buf:
            return
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        self._size = 0
        if not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def abort(self) -> None:
        self._buf.clear()
        self._size = 0
        self.transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self.transport.set_protocol(protocol)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self._size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)
