"""Encoder for the AWS event stream (`application/vnd.amazon.eventstream`), for the simulators.

Frame layout (big-endian; docs/protocols.md, AWS event-stream encoding): total_len u32, headers_len
u32, prelude CRC32,
headers, payload, message CRC32. Headers are written as type 7 (string), as AWS servers do.
"""

from __future__ import annotations

import binascii
import struct


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v


def frame(headers: dict[str, str], payload: bytes, *, corrupt_crc: bool = False) -> bytes:
    hb = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack("!II", 12 + len(hb) + len(payload) + 4, len(hb))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    msg = prelude + hb + payload
    crc = binascii.crc32(msg) & 0xFFFFFFFF
    if corrupt_crc:
        crc ^= 0xFFFFFFFF
    return msg + struct.pack("!I", crc)


def event(event_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    return frame(
        {":message-type": "event", ":event-type": event_type, ":content-type": content_type},
        payload,
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    return frame(
        {
            ":message-type": "exception",
            ":exception-type": exception_type,
            ":content-type": "application/json",
        },
        payload,
    )
