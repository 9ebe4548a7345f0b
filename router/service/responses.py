"""Stored Responses API conversations: what `previous_response_id` and
`GET`/`DELETE /v1/responses/{id}` read, kept in the router's state store.

One record per response id, as one JSON blob under `resp:<id>` with a TTL (`responses_ttl_s`):
the Response object as it was returned, the full input conversation it answered (earlier
turns included, so a follow-up can rebuild it from this record alone), the request's privacy
class, and whose it is. A record larger than `responses_max_bytes` is not stored. With the
Redis store every replica sees the same records; with the memory store, this process only.

Privacy continuity: the privacy class stored with a response is the class its request was
served as, and a follow-up that continues a private response is classified private (the
surface adds the vote `previous_response`). An unknown, expired or foreign id reads as absent.

Ownership: with API keys configured, a record belongs to the key that created it (its SHA-256
digest is stored, never the key); another key reads it as absent. With no keys configured
(loopback open access) any local client may read it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from router.auth import hash_key, presented_key
from router.service.client import ClientContext
from router.state.base import StateStore

__all__ = ["ResponseStore", "StoredResponse"]

_PREFIX = "resp:"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object as returned to the client
    input_items: list[dict[str, Any]]  # the whole conversation it answered, in order
    privacy: str  # "private" or "standard"


class ResponseStore:
    def __init__(self, store: StateStore, *, ttl_s: float, max_bytes: int,
                 keys_open: Callable[[], bool]) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._keys_open = keys_open

    def _owner(self, client: ClientContext) -> str:
        if self._keys_open():
            return ""
        key = presented_key(client.authorization, client.api_key)
        return hash_key(key) if key else ""

    async def save(self, response_id: str, record: StoredResponse,
                   client: ClientContext) -> bool:
        """Keep the record for the TTL; False when it is over the size cap (not stored)."""
        data = orjson.dumps({
            "response": record.response, "input_items": record.input_items,
            "privacy": record.privacy, "owner": self._owner(client),
        }).decode()
        if len(data) > self.max_bytes:
            return False
        await self.store.put_blob(_PREFIX + response_id, data, self.ttl_s)
        return True

    async def load(self, response_id: str, client: ClientContext) -> StoredResponse | None:
        raw = await self.store.get_blob(_PREFIX + response_id)
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or not hmac.compare_digest(
                str(data.get("owner", "")), self._owner(client)):
            return None
        # A record without a readable class is treated as private: never less private.
        privacy = "standard" if data.get("privacy") == "standard" else "private"
        return StoredResponse(dict(data.get("response") or {}),
                              list(data.get("input_items") or []), privacy)

    async def delete(self, response_id: str, client: ClientContext) -> bool:
        if await self.load(response_id, client) is None:
            return False
        return await self.store.delete_blob(_PREFIX + response_id)
