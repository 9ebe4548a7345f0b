"""Ollama's native API: /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/version.

A codec over the service facade, like `api/openai_routes.py`: decode the dialect's body into a
`ChatRequest` plus a `ClientContext`, call `RouterService`, encode the answer, the event
stream or the error in the dialect's own shape. (Placeholder: no routes yet.)
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from router.api.access import Access
from router.service import RouterService
from router.settings import RouterSettings


def routes(service: RouterService, settings: RouterSettings, access: Access) -> list[BaseRoute]:
    """The dialect's routes, mounted by `router/app.py`."""
    return []


def openapi_paths() -> dict[str, Any]:
    """The dialect's paths for `/openapi.json` (merged by `api/openapi.py`)."""
    return {}
