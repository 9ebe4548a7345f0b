"""Routing policy: schema (pydantic), loader (YAML + cross-checks) and the built-in default."""
