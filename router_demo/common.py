"""What the demo's runner and its scenes share: the tool they offer and one row of the table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


@dataclass
class Row:
    scene: str
    request: str
    backend: str
    reason: str
    latency_ms: float
    tokens: str
    ok: bool
