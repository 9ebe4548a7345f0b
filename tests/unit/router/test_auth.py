"""router.auth: API keys by SHA-256 digest, constant-time comparison, model allowlists."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from router.auth import KeyRing, generate_key, hash_key
from router.errors import PermissionDenied, Unauthorized
from router.policy.schema import ApiKey

ALICE, BOB, CAROL = "hr-alice-secret", "hr-bob-secret", "hr-carol-secret"


def _key(name: str, plaintext: str, **kw: object) -> ApiKey:
    return ApiKey.model_validate({"name": name, "sha256": hash_key(plaintext), **kw})


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(
        [
            _key("alice", ALICE, default_privacy="private"),
            _key("bob", BOB, models=["gpt-oss-20b"]),
            _key("carol", CAROL, admin=True),
        ]
    )


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("abc") == hashlib.sha256(b"abc").hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key("hr-x"))


def test_generate_key_gives_prefixed_random_key_and_its_hash() -> None:
    plain, digest = generate_key()
    assert plain.startswith("hr-") and len(plain) > 40
    assert digest == hash_key(plain)
    assert ApiKey(name="new", sha256=digest).sha256 == digest  # fits the schema
    assert generate_key()[0] != plain


def test_bearer_token(ring: KeyRing) -> None:
    key = ring.authenticate(f"Bearer {ALICE}", None)
    assert key is not None and key.name == "alice" and key.default_privacy == "private"


def test_bearer_scheme_is_case_insensitive_and_trimmed(ring: KeyRing) -> None:
    key = ring.authenticate(f"  bearer   {BOB}  ", None)
    assert key is not None and key.name == "bob"


def test_x_api_key(ring: KeyRing) -> None:
    key = ring.authenticate(None, CAROL)
    assert key is not None and key.name == "carol" and key.admin


def test_authorization_wins_over_x_api_key(ring: KeyRing) -> None:
    key = ring.authenticate(f"Bearer {ALICE}", BOB)
    assert key is not None and key.name == "alice"


def test_blank_authorization_falls_back_to_x_api_key(ring: KeyRing) -> None:
    key = ring.authenticate("  ", BOB)
    assert key is not None and key.name == "bob"


@pytest.mark.parametrize(
    ("authorization", "x_api_key"),
    [
        ("Bearer hr-wrong-secret-value", None),
        (None, "hr-wrong-secret-value"),
        (f"Bearer {ALICE}x", None),
        (f"Bearer {ALICE[:-1]}", None),
        (f"Bearer {hash_key(ALICE)}", None),  # the stored digest is not a key
    ],
)
def test_wrong_key_is_401_without_echo(
    ring: KeyRing, authorization: str | None, x_api_key: str | None
) -> None:
    with pytest.raises(Unauthorized) as exc:
        ring.authenticate(authorization, x_api_key)
    err = exc.value
    assert err.status == 401
    body = str(err.body())
    presented = (authorization or x_api_key or "").removeprefix("Bearer ")
    assert presented not in body and presented not in str(err)
    assert "invalid api key" in err.message.lower()


@pytest.mark.parametrize(
    ("authorization", "x_api_key"),
    [(None, None), ("", ""), ("Bearer", None), ("Bearer   ", None), (None, "   ")],
)
def test_missing_key_is_401_with_how_to(
    ring: KeyRing, authorization: str | None, x_api_key: str | None
) -> None:
    with pytest.raises(Unauthorized) as exc:
        ring.authenticate(authorization, x_api_key)
    assert exc.value.status == 401
    assert "Bearer" in exc.value.message and "x-api-key" in exc.value.message


def test_other_authorization_scheme_is_401_without_echo(ring: KeyRing) -> None:
    with pytest.raises(Unauthorized) as exc:
        ring.authenticate("Basic YWxpY2U6c2VjcmV0", None)
    assert "YWxpY2U6c2VjcmV0" not in exc.value.message


def test_no_keys_is_open_mode() -> None:
    ring = KeyRing([])
    assert ring.is_open and len(ring) == 0
    assert ring.authenticate(None, None) is None
    assert ring.authenticate("Bearer anything", "whatever") is None
    KeyRing.check_model(None, "gpt-oss-120b")  # everything allowed


def test_compare_digest_is_called_once_per_stored_key(
    ring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    # The first key matches: the loop must still compare against all three (no early exit).
    assert ring.authenticate(f"Bearer {ALICE}", None) is not None
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(Unauthorized):
        ring.authenticate(None, "hr-nope")
    assert len(calls) == 3
    # What is compared is the presented key's digest, never the secret itself.
    assert all(a == hash_key("hr-nope").encode() for a, _ in calls)


def test_duplicate_names_or_digests_are_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        KeyRing([_key("a", ALICE), _key("a", BOB)])
    with pytest.raises(ValueError, match="digest"):
        KeyRing([_key("a", ALICE), _key("b", ALICE)])


def test_names(ring: KeyRing) -> None:
    assert ring.names == ["alice", "bob", "carol"]
    assert not ring.is_open and len(ring) == 3


def test_model_allowlist(ring: KeyRing) -> None:
    bob = ring.authenticate(None, BOB)
    assert bob is not None
    KeyRing.check_model(bob, "gpt-oss-20b")
    KeyRing.check_model(bob, "openai/gpt-oss-20b")  # spellings of the same logical model
    with pytest.raises(PermissionDenied) as exc:
        KeyRing.check_model(bob, "gpt-oss-120b")
    assert exc.value.status == 403
    assert exc.value.param == "model"
    assert "gpt-oss-120b" in exc.value.message and "bob" in exc.value.message
    assert BOB not in exc.value.message


def test_no_allowlist_allows_every_model(ring: KeyRing) -> None:
    alice = ring.authenticate(None, ALICE)
    assert alice is not None and alice.models is None
    KeyRing.check_model(alice, "gpt-oss-120b")


def test_empty_allowlist_allows_nothing() -> None:
    key = _key("none", ALICE, models=[])
    with pytest.raises(PermissionDenied):
        KeyRing.check_model(key, "gpt-oss-20b")
