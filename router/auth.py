"""API keys: who is calling, and which models they may use.

Keys are stored only as SHA-256 hex digests (policy `keys:` or `keys_file`). A presented key
(`Authorization: Bearer <key>` or `x-api-key: <key>`) is hashed and compared with EVERY stored
digest through `hmac.compare_digest`: constant time per comparison, no early exit, no lookup
keyed by the secret, so timing says nothing about which (or whether a) key matched.

With no keys configured the router runs open: `authenticate` returns None and every model is
allowed. Keys with `ops: true` (or `admin: true`) may also read status and metrics. Error
messages never echo the presented key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from router.errors import PermissionDenied, Unauthorized
from router.policy.schema import ApiKey, normalise_model_name

__all__ = ["KEY_PREFIX", "KeyRing", "digest_matches", "generate_key", "hash_key",
           "presented_key"]

KEY_PREFIX = "hr-"
_HOW = "send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'"


def hash_key(plaintext: str) -> str:
    """The SHA-256 hex digest stored for a key (what policy `keys[].sha256` holds)."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new key: (`hr-` + 32 random bytes url-safe, its SHA-256 hex). Show the first once."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, hash_key(plaintext)


def _presented_key(authorization: str | None, x_api_key: str | None) -> str:
    """The key the client sent; Authorization wins when both are present."""
    if authorization is not None and authorization.strip():
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized(f"Unsupported Authorization scheme; {_HOW}.")
        token = token.strip()
        if not token:
            raise Unauthorized(f"Empty bearer token; {_HOW}.")
        return token
    if x_api_key is not None and x_api_key.strip():
        return x_api_key.strip()
    raise Unauthorized(f"Missing API key; {_HOW}.")


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key the client sent, or None when it sent none (or an unusable header)."""
    try:
        return _presented_key(authorization, x_api_key)
    except Unauthorized:
        return None


def digest_matches(plaintext: str, digests: Iterable[str]) -> bool:
    """Whether the key's digest is one of `digests`: every digest compared, in constant time."""
    presented = hash_key(plaintext).encode("ascii")
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(presented, digest.encode("ascii"))
    return matched


class KeyRing:
    """The configured API keys, by digest. Immutable once built; rebuild on policy reload."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys: tuple[ApiKey, ...] = tuple(keys)
        names = [k.name for k in self._keys]
        if len(set(names)) != len(names):
            raise ValueError("API key names must be unique")
        digests = [k.sha256 for k in self._keys]
        if len(set(digests)) != len(digests):
            raise ValueError("two API keys share one sha256 digest")
        self._digests: tuple[tuple[bytes, ApiKey], ...] = tuple(
            (k.sha256.encode("ascii"), k) for k in self._keys
        )

    @property
    def is_open(self) -> bool:
        """No keys configured: every caller is anonymous and allowed."""
        return not self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def names(self) -> list[str]:
        return [k.name for k in self._keys]

    def authenticate(
        self, authorization_header: str | None, x_api_key: str | None
    ) -> ApiKey | None:
        """The caller's key, or None in open mode. Raises Unauthorized (401) otherwise."""
        if self.is_open:
            return None
        presented = hash_key(_presented_key(authorization_header, x_api_key)).encode("ascii")
        match: ApiKey | None = None
        for digest, key in self._digests:  # every digest, every time: no early exit
            if hmac.compare_digest(presented, digest) and match is None:
                match = key
        if match is None:
            raise Unauthorized("Invalid API key.")
        return match

    @staticmethod
    def may_operate(key: ApiKey) -> bool:
        """Ops and admin keys may read the router's status and metrics."""
        return key.ops or key.admin

    @staticmethod
    def check_model(key: ApiKey | None, logical_model: str) -> None:
        """Raise PermissionDenied (403) if the key's model allowlist excludes the model."""
        if key is None or key.models is None:
            return
        wanted = normalise_model_name(logical_model)
        if any(normalise_model_name(m) == wanted for m in key.models):
            return
        raise PermissionDenied(
            f"API key '{key.name}' is not allowed to use model '{logical_model}'.",
            param="model",
        )
