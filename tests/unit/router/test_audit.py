"""router.audit: one JSON line per request, size rotation, no text, and the summary."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from router.audit import (
    MAX_STRING,
    AttemptOutcome,
    AuditLog,
    AuditRecord,
    BackendReason,
    audit_files,
    summarize,
    utc_now,
)

FIELDS = [
    "ts",
    "request_id",
    "key",
    "privacy",
    "privacy_sources",
    "model",
    "stream",
    "route",
    "candidates",
    "excluded",
    "attempts",
    "backend",
    "outcome",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
]


def _rec(**kw: Any) -> AuditRecord:
    base: dict[str, Any] = {
        "ts": "2026-01-31T12:00:00.000Z",
        "request_id": "req-1",
        "key": "alice",
        "privacy": "standard",
        "privacy_sources": ("policy_default",),
        "model": "gpt-oss-20b",
        "stream": False,
        "route": "local-first",
        "candidates": (BackendReason("local", "local"), BackendReason("bedrock", "fallback")),
        "excluded": (BackendReason("sagemaker", "local_unhealthy"),),
        "attempts": (AttemptOutcome("local", "ok"),),
        "backend": "local",
        "outcome": "ok",
        "status": 200,
        "prompt_tokens": 12,
        "completion_tokens": 34,
        "latency_ms": 56.7891,
    }
    base.update(kw)
    return AuditRecord(**base)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_record_has_exactly_the_audit_fields_and_no_text_field() -> None:
    assert [f.name for f in dataclasses.fields(AuditRecord)] == FIELDS
    assert list(_rec().to_dict()) == FIELDS
    for forbidden in ("prompt", "messages", "content", "answer", "text", "reasoning"):
        with pytest.raises(TypeError):
            _rec(**{forbidden: "the secret prompt"})


def test_subclass_cannot_add_fields_to_the_line() -> None:
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Sneaky(AuditRecord):
        prompt: str = "the secret prompt"

    rec = Sneaky(**{f: getattr(_rec(), f) for f in FIELDS})
    assert "secret" not in rec.to_json()
    assert list(json.loads(rec.to_json())) == FIELDS


def test_record_types_are_checked() -> None:
    with pytest.raises(ValueError):
        _rec(privacy="secret")
    with pytest.raises(TypeError):
        _rec(privacy_sources="header")  # a bare string is not a list of sources
    with pytest.raises(TypeError):
        _rec(candidates=[("local", "reason")])
    with pytest.raises(TypeError):
        _rec(model={"content": "hello"})
    with pytest.raises(TypeError):
        _rec(prompt_tokens="12")
    with pytest.raises(TypeError):
        _rec(backend=["local"])


def test_mappings_are_read_for_their_known_keys_only() -> None:
    rec = _rec(
        candidates=[{"backend": "local", "reason": "local", "prompt": "the secret prompt"}],
        attempts=[{"backend": "local", "outcome": "backend_timeout", "error_code": None}],
    )
    d = rec.to_dict()
    assert d["candidates"] == [{"backend": "local", "reason": "local"}]
    assert d["attempts"] == [{"backend": "local", "outcome": "backend_timeout", "error_code": None}]
    assert "secret" not in rec.to_json()


def test_long_strings_are_cut() -> None:
    d = _rec(model="m" * 10_000, request_id="r" * 10_000).to_dict()
    assert len(d["model"]) == MAX_STRING and len(d["request_id"]) == MAX_STRING


def test_utc_now_is_rfc3339_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_now())
    assert re.fullmatch(r".*Z", AuditRecord(**{**_rec().to_dict(), "ts": utc_now()}).ts)


def test_default_ts_is_now() -> None:
    d = _rec().to_dict()
    d.pop("ts")
    rec = AuditRecord(**d)
    assert rec.ts.endswith("Z") and rec.ts[:4].isdigit()


def test_writes_one_json_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.log"  # the folder is created
    log = AuditLog(str(path))
    assert log.enabled
    log.write(_rec(request_id="a"))
    log.write(
        _rec(
            request_id="b",
            privacy="private",
            privacy_sources=("header", "detector:email"),
            stream=True,
            attempts=(
                AttemptOutcome("local", "backend_timeout", "backend_timeout"),
                AttemptOutcome("local", "ok"),
            ),
            prompt_tokens=None,
        )
    )
    log.close()
    lines = _lines(path)
    assert [line["request_id"] for line in lines] == ["a", "b"]
    first, second = lines
    assert first == {
        "ts": "2026-01-31T12:00:00.000Z",
        "request_id": "a",
        "key": "alice",
        "privacy": "standard",
        "privacy_sources": ["policy_default"],
        "model": "gpt-oss-20b",
        "stream": False,
        "route": "local-first",
        "candidates": [
            {"backend": "local", "reason": "local"},
            {"backend": "bedrock", "reason": "fallback"},
        ],
        "excluded": [{"backend": "sagemaker", "reason": "local_unhealthy"}],
        "attempts": [{"backend": "local", "outcome": "ok", "error_code": None}],
        "backend": "local",
        "outcome": "ok",
        "status": 200,
        "prompt_tokens": 12,
        "completion_tokens": 34,
        "latency_ms": 56.789,
    }
    assert second["privacy_sources"] == ["header", "detector:email"]
    assert second["attempts"][0]["error_code"] == "backend_timeout"
    assert second["stream"] is True and second["prompt_tokens"] is None


def test_disabled_log_is_a_no_op(tmp_path: Path) -> None:
    log = AuditLog(None)
    assert not log.enabled
    log.write(_rec())
    log.close()
    assert list(tmp_path.iterdir()) == []
    assert log.write_errors == 0


def test_rotation_by_size(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    one_line = len(_rec().to_json()) + 1
    log = AuditLog(str(path), max_bytes=one_line * 3, backups=2)
    for i in range(20):
        log.write(_rec(request_id=f"r{i:02d}"))
    log.close()
    files = audit_files(str(path))
    assert files == [str(path) + ".2", str(path) + ".1", str(path)]
    for f in files:
        assert Path(f).stat().st_size <= one_line * 3
    kept = [line["request_id"] for f in files for line in _lines(Path(f))]
    assert kept == sorted(kept) and kept[-1] == "r19"  # oldest first, newest last
    assert len(kept) < 20  # older files were dropped beyond `backups`


def test_concurrent_writers_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(str(path), max_bytes=10_000_000)

    def worker(n: int) -> None:
        for i in range(50):
            log.write(_rec(request_id=f"t{n}-{i}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    ids = {line["request_id"] for line in _lines(path)}
    assert len(ids) == 200


def test_write_failure_is_counted_not_raised(tmp_path: Path, monkeypatch: Any) -> None:
    import logging

    monkeypatch.setattr(logging, "raiseExceptions", False)  # no traceback on stderr
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    path.mkdir()  # a directory where the file should be: open() fails
    log.write(_rec())
    assert log.write_errors == 1
    log.close()


def test_summarize_counts_and_private_on_non_local(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    one_line = len(_rec().to_json()) + 1
    log = AuditLog(str(path), max_bytes=one_line * 2, backups=10)  # spread over backups
    records = [
        _rec(request_id="s1", backend="local"),
        _rec(request_id="s2", backend="bedrock", attempts=(AttemptOutcome("bedrock", "ok"),)),
        _rec(request_id="s3", backend=None, outcome="backend_timeout", status=504,
             attempts=(AttemptOutcome("bedrock", "backend_timeout", "backend_timeout"),)),
        _rec(request_id="p1", privacy="private", privacy_sources=("header",), backend="local"),
        _rec(request_id="p2", privacy="private", backend="gpu2",
             attempts=(AttemptOutcome("gpu2", "ok"),)),
        _rec(request_id="p3", privacy="private", backend=None, outcome="no_local_capacity",
             status=503, attempts=()),
        # violations: answered by the cloud, or merely attempted there
        _rec(request_id="p4", privacy="private", backend="bedrock",
             attempts=(AttemptOutcome("bedrock", "ok"),)),
        _rec(request_id="p5", privacy="private", backend="local",
             attempts=(AttemptOutcome("sagemaker", "backend_unavailable", "backend_unavailable"),
                       AttemptOutcome("local", "ok"))),
    ]  # fmt: skip
    for rec in records:
        log.write(rec)
    log.close()
    with open(path, "a") as fh:  # a torn or foreign line is skipped, and counted
        fh.write("{not json\n\n[1, 2]\n")
    assert len(audit_files(str(path))) > 1

    s = summarize(str(path), local_backends={"local", "gpu2"})
    assert s["total"] == 8
    assert s["malformed_lines"] == 2
    assert s["by_privacy"] == {"standard": 3, "private": 5}
    assert s["by_backend"] == {"local": 3, "bedrock": 2, "none": 2, "gpu2": 1}
    assert s["by_outcome"] == {
        "ok": 6,
        "backend_timeout": 1,
        "no_local_capacity": 1,
    }
    assert s["private_by_backend"] == {"local": 2, "gpu2": 1, "none": 1, "bedrock": 1}
    assert s["private_on_non_local"] == 2
    assert sorted(s["private_on_non_local_ids"]) == ["p4", "p5"]

    # With every backend declared local, nothing is a violation.
    s_all = summarize(str(path), local_backends={"local", "gpu2", "bedrock", "sagemaker"})
    assert s_all["private_on_non_local"] == 0


def test_summarize_missing_log_is_empty(tmp_path: Path) -> None:
    s = summarize(str(tmp_path / "nope.log"), local_backends={"local"})
    assert s["total"] == 0 and s["files"] == [] and s["private_on_non_local"] == 0


def test_audit_files_ignores_unrelated_names(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    for name in ("audit.log", "audit.log.1", "audit.log.12", "audit.log.bak", "audit.log1"):
        (tmp_path / name).write_text("")
    assert audit_files(str(path)) == [
        str(path) + ".12",
        str(path) + ".1",
        str(path),
    ]


def test_mapping_values_must_be_strings() -> None:
    with pytest.raises(TypeError):
        _rec(candidates=[{"backend": "local", "reason": {"text": "the secret prompt"}}])
