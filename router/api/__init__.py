"""The HTTP surface: OpenAI-compatible routes, health, admin, and the one error mapper."""
