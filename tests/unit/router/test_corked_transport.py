"""`CorkedTransport`: writes within one loop run leave in one write, in order, never lost."""

from __future__ import annotations

import asyncio
from typing import Any

from router.corked import CorkedTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.extra = {"peername": ("127.0.0.1", 1)}

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


def corked() -> tuple[CorkedTransport, FakeTransport]:
    real = FakeTransport()
    return CorkedTransport(real, asyncio.get_running_loop()), real  # type: ignore[arg-type]


async def test_writes_in_one_run_leave_as_one() -> None:
    t, real = corked()
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(b"a")
    t.writelines([b"b", b"c"])
    assert real.writes == []
    assert t.get_write_buffer_size() == 22
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nabc"]
    t.write(b"d")
    await asyncio.sleep(0)
    assert real.writes[-1] == b"d"


async def test_close_flushes_first_and_abort_drops() -> None:
    t, real = corked()
    t.write(b"last")
    t.close()
    assert real.writes == [b"last"] and real.closed
    t2, real2 = corked()
    t2.write(b"lost")
    t2.abort()
    await asyncio.sleep(0)
    assert real2.writes == [] and real2.aborted


async def test_a_flush_after_the_connection_closed_writes_nothing() -> None:
    t, real = corked()
    t.write(b"x")
    real.closed = True
    await asyncio.sleep(0)
    assert real.writes == []


async def test_other_calls_reach_the_real_transport() -> None:
    t, _ = corked()
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)
    assert not t.is_closing()


async def test_a_large_burst_is_written_at_once() -> None:
    from router.corked import CORK_MAX_BYTES

    t, real = corked()
    t.write(b"h")
    t.write(b"x" * CORK_MAX_BYTES)
    assert real.writes == [b"h" + b"x" * CORK_MAX_BYTES]
    assert t.get_write_buffer_size() == 0
    await asyncio.sleep(0)
    assert len(real.writes) == 1
