"""The audit log: one JSON line per request, and a summary of it for compliance reviews.

Each line is built from an `AuditRecord`, a dataclass with exactly the fields an auditor needs
(who, which class and why, where it was planned, tried and answered, the outcome, token counts,
latency) and no field for prompt or answer text, so text cannot reach the log by accident.
Free strings are cut to `MAX_STRING` characters for the same reason (a client-chosen model
name or request id cannot smuggle a prompt in).

`AuditLog` writes through a `logging.handlers.RotatingFileHandler` used directly (not via a
logger, so nothing propagates and nothing global is registered): `Handler.handle` takes the
handler's lock, which makes `write` thread-safe, and rotation is by size with `backups` old
files (`audit.log.1` ... `.N`). A write is a plain buffered file write plus flush, a few
microseconds, occasionally a rename on rotation: acceptable on the event loop. A failed write
is counted in `write_errors` and never raises into the request. `path=None` disables it.

`summarize(path, local_backends)` reads the log and its rotated backups and counts requests by
class, backend and outcome, where private requests went, and how many private requests were
sent to (attempted on or answered by) a backend outside `local_backends`: this must be 0.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import orjson

from router.reasons import Reason

__all__ = [
    "AttemptOutcome",
    "AuditLog",
    "AuditRecord",
    "BackendReason",
    "MAX_STRING",
    "audit_files",
    "summarize",
    "utc_now",
]

MAX_STRING = 200
_PRIVACY_CLASSES = ("private", "standard")


def utc_now() -> str:
    """RFC 3339 UTC timestamp with milliseconds, e.g. `2026-01-31T12:00:00.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _s(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"audit field {name} must be a string, not {type(value).__name__}")
    return value[:MAX_STRING]


def _opt_s(value: object, name: str) -> str | None:
    return None if value is None else _s(value, name)


def _opt_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"audit field {name} must be an int or None")
    return value


@dataclass(frozen=True, slots=True)
class BackendReason:
    """A planned or excluded candidate and the short machine-readable reason (a planner
    `Reason` is written as its wire string, as in `x-router-reason`)."""

    backend: str
    reason: str | Reason

    def to_dict(self) -> dict[str, str]:
        reason = self.reason.render() if isinstance(self.reason, Reason) else self.reason
        return {"backend": _s(self.backend, "backend"), "reason": _s(reason, "reason")}


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """One attempt on one backend: `outcome` is "ok" or the error code; `hedge` marks one
    started beside a slow attempt (written only when true)."""

    backend: str
    outcome: str
    error_code: str | None = None
    hedge: bool = False

    def to_dict(self) -> dict[str, str | bool | None]:
        out: dict[str, str | bool | None] = {
            "backend": _s(self.backend, "backend"),
            "outcome": _s(self.outcome, "outcome"),
            "error_code": _opt_s(self.error_code, "error_code"),
        }
        if self.hedge:
            out["hedge"] = True
        return out


def _reasons(items: Iterable[BackendReason | Mapping[str, str]], name: str) -> tuple[Any, ...]:
    out: list[BackendReason] = []
    for item in items:
        if isinstance(item, BackendReason):
            out.append(item)
        elif isinstance(item, Mapping):  # only the two known keys are read
            out.append(BackendReason(item["backend"], item["reason"]))  # types: to_dict()
        else:
            raise TypeError(f"audit field {name} takes BackendReason items")
    return tuple(out)


def _attempts(items: Iterable[AttemptOutcome | Mapping[str, Any]]) -> tuple[Any, ...]:
    out: list[AttemptOutcome] = []
    for item in items:
        if isinstance(item, AttemptOutcome):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(AttemptOutcome(item["backend"], item["outcome"], item.get("error_code"),
                                      item.get("hedge") is True))
        else:
            raise TypeError("audit field attempts takes AttemptOutcome items")
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """Everything the audit log holds about one request. There is no field for text."""

    ts: str = field(default_factory=utc_now)
    request_id: str
    key: str | None  # the API key's name (never the key), None in open mode
    privacy: str  # "private" | "standard"
    privacy_sources: Sequence[str] = ()
    model: str
    stream: bool = False
    route: str | None = None
    candidates: Sequence[BackendReason] = ()
    excluded: Sequence[BackendReason] = ()
    attempts: Sequence[AttemptOutcome] = ()
    backend: str | None = None  # the backend that answered
    outcome: str  # "ok" or the error code the client saw
    status: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float

    def __post_init__(self) -> None:
        if self.privacy not in _PRIVACY_CLASSES:
            raise ValueError(f"audit privacy must be one of {_PRIVACY_CLASSES}")
        if isinstance(self.privacy_sources, str):
            raise TypeError("audit field privacy_sources takes a sequence of strings")
        object.__setattr__(
            self, "privacy_sources", tuple(_s(s, "privacy_sources") for s in self.privacy_sources)
        )
        object.__setattr__(self, "candidates", _reasons(self.candidates, "candidates"))
        object.__setattr__(self, "excluded", _reasons(self.excluded, "excluded"))
        object.__setattr__(self, "attempts", _attempts(self.attempts))
        self.to_dict()  # type-check every field now, not when the line is written

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written: these keys, in this order, and nothing else."""
        return {
            "ts": _s(self.ts, "ts"),
            "request_id": _s(self.request_id, "request_id"),
            "key": _opt_s(self.key, "key"),
            "privacy": self.privacy,
            "privacy_sources": list(self.privacy_sources),
            "model": _s(self.model, "model"),
            "stream": bool(self.stream),
            "route": _opt_s(self.route, "route"),
            "candidates": [c.to_dict() for c in self.candidates],
            "excluded": [c.to_dict() for c in self.excluded],
            "attempts": [a.to_dict() for a in self.attempts],
            "backend": _opt_s(self.backend, "backend"),
            "outcome": _s(self.outcome, "outcome"),
            "status": int(self.status),
            "prompt_tokens": _opt_int(self.prompt_tokens, "prompt_tokens"),
            "completion_tokens": _opt_int(self.completion_tokens, "completion_tokens"),
            "latency_ms": round(float(self.latency_ms), 3),
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()


class _Handler(RotatingFileHandler):
    """Counts failed writes instead of letting them reach the request."""

    write_errors = 0

    def handleError(self, record: logging.LogRecord) -> None:
        self.write_errors += 1
        super().handleError(record)


class AuditLog:
    """JSON-lines audit file with size rotation. `path=None` makes every call a no-op."""

    def __init__(self, path: str | None, max_bytes: int = 10_000_000, backups: int = 5) -> None:
        self.path = path
        self._handler: _Handler | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._handler = _Handler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
            )
            self._handler.setFormatter(logging.Formatter("%(message)s"))

    @property
    def enabled(self) -> bool:
        return self._handler is not None

    @property
    def write_errors(self) -> int:
        return 0 if self._handler is None else self._handler.write_errors

    def write(self, record: AuditRecord) -> None:
        """Append one record (thread-safe). Never raises for I/O trouble; see write_errors."""
        if self._handler is None:
            return
        line = record.to_json()
        self._handler.handle(
            logging.makeLogRecord(
                {"name": "router.audit", "msg": line, "levelno": logging.INFO, "levelname": "INFO"}
            )
        )

    def close(self) -> None:
        if self._handler is not None:
            self._handler.close()
            self._handler = None


# ---------------------------------------------------------------------------------------------
# Reading it back
# ---------------------------------------------------------------------------------------------


def audit_files(path: str) -> list[str]:
    """The log and its rotated backups (`path.1`, `path.2`, ...), oldest first."""
    p = Path(path)
    prefix = p.name + "."
    backups: list[tuple[int, str]] = []
    if p.parent.is_dir():
        for name in os.listdir(p.parent):
            suffix = name[len(prefix) :]
            if name.startswith(prefix) and suffix.isdigit():
                backups.append((int(suffix), str(p.parent / name)))
    files = [f for _, f in sorted(backups, reverse=True)]
    if p.is_file():
        files.append(str(p))
    return files


def _backends_touched(rec: dict[str, Any]) -> set[str]:
    """Every backend a record says the request was sent to: attempts and the answerer."""
    attempts = rec.get("attempts")
    touched = {
        str(a.get("backend"))
        for a in (attempts if isinstance(attempts, list) else ())
        if isinstance(a, dict)
    }
    if rec.get("backend") is not None:
        touched.add(str(rec["backend"]))
    return touched


def summarize(path: str, local_backends: set[str]) -> dict[str, Any]:
    """Counts over the log and its backups (best effort while it is being written).

    `private_on_non_local` counts private records attempted on or answered by a backend that
    is not in `local_backends`; `private_on_non_local_ids` lists up to 100 of their ids.
    """
    files = audit_files(path)
    total = malformed = 0
    by_privacy: Counter[str] = Counter()
    by_backend: Counter[str] = Counter()
    by_outcome: Counter[str] = Counter()
    private_by_backend: Counter[str] = Counter()
    violations: list[str] = []
    violation_count = 0
    for file in files:
        with open(file, "rb") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                try:
                    rec = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    malformed += 1
                    continue
                if not isinstance(rec, dict):
                    malformed += 1
                    continue
                total += 1
                privacy = str(rec.get("privacy"))
                backend = rec.get("backend")
                backend_label = str(backend) if backend is not None else "none"
                by_privacy[privacy] += 1
                by_backend[backend_label] += 1
                by_outcome[str(rec.get("outcome"))] += 1
                if privacy != "private":
                    continue
                private_by_backend[backend_label] += 1
                if _backends_touched(rec) - local_backends:
                    violation_count += 1
                    if len(violations) < 100:
                        violations.append(str(rec.get("request_id")))
    return {
        "files": files,
        "total": total,
        "malformed_lines": malformed,
        "by_privacy": dict(by_privacy),
        "by_backend": dict(by_backend),
        "by_outcome": dict(by_outcome),
        "private_by_backend": dict(private_by_backend),
        "private_on_non_local": violation_count,
        "private_on_non_local_ids": violations,
    }
