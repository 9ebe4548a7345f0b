"""Process settings from the environment (prefix `ROUTER_`), via pydantic-settings.

The only module that reads the environment. Routing intent lives in the policy file; these are
the knobs of the process: where to listen, which policy, limits, the shared store, the audit log.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTER_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="bind address (loopback unless told)")
    port: int = Field(default=11435, ge=0, le=65535)
    workers: int = Field(
        default=1, ge=1, le=64, description="worker processes on the one port; more than one "
        "needs redis_url (slots, breakers and spend shared through Redis)")
    policy_file: str | None = Field(default=None, description="YAML policy; None = built-in")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    redis_url: str | None = Field(default=None, description="shared state for several replicas")
    redis_prefix: str = "hr:"
    redis_lease_s: float = Field(default=10.0, gt=0)
    redis_op_timeout_s: float = Field(
        default=0.2, gt=0, description="longest a request waits on Redis before falling back")
    replica_id: str | None = Field(
        default=None, description="this process in the replica registry; None = hostname:pid")
    audit_log: str | None = Field(default=None, description="JSON-lines audit file; None = off")
    audit_max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    open_remote: bool = Field(
        default=False,
        description="with no API keys configured, serve non-loopback clients too "
        "(containers behind a loopback-published port or a ClusterIP Service)")
    admin_key: SecretStr | None = Field(default=None, description="enables POST /admin/reload")
    log_level: str = "info"
    grace_s: float = Field(default=30.0, ge=0, description="SIGTERM drain period")
    watch_policy: bool = Field(default=True, description="reload the policy when the file changes")
    # Slow and stuck clients: the server's own limits (see server.py and api/guards.py).
    keep_alive_s: int = Field(default=5, ge=1, description="idle keep-alive connection lifetime")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="longest a connection may take to send request headers")
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="longest wait for the next piece of a request body (408)")
    send_timeout_s: float = Field(
        default=30.0, gt=0, description="longest one write to a streaming client may block")
    max_connections: int = Field(
        default=2048, ge=1, description="open client connections; more are answered 503 and "
        "closed (also capped by the file-descriptor limit)")
    backlog: int = Field(default=1024, ge=1, description="listen backlog")
    gc_gen0_threshold: int = Field(
        default=50_000, ge=0, description="allocations between young-generation garbage "
        "collections once serving (startup objects are frozen first); 0 keeps Python's "
        "default (700), whose frequent collections were the router's p99 at load")
    # Browser-borne requests (api/guards.py).
    allowed_hosts: str = Field(
        default="", description="extra Host names accepted, comma-separated (loopback names, "
        "IP literals and a specific bind host are always accepted); '*' accepts any")
    cors_origins: str = Field(
        default="", description="comma-separated origins given CORS headers; empty = none")
    wire_logs: bool = Field(
        default=False, description="let botocore/urllib3/aiohttp log wire detail at debug")
    # Request-body limits (api/request_body.py): each is a 400 naming the parameter.
    max_json_depth: int = Field(
        default=64, ge=4, description="deepest JSON nesting accepted (the body object is 1)")
    max_messages: int = Field(default=2048, ge=1, description="messages per request")
    max_content_parts: int = Field(default=256, ge=1, description="content parts per message")
    max_tools: int = Field(
        default=512, ge=1, description="tools per request (and tool calls per message)")
    max_stop: int = Field(default=4, ge=1, description="stop sequences per request")
    # Stored Responses API conversations (`store: true`, `previous_response_id`).
    responses_ttl_s: float = Field(
        default=3600.0, gt=0, description="how long a stored response can be continued or read")
    responses_max_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0,
        description="largest stored response (its whole conversation); larger ones are not kept")
    # Inherited from Ollama's and AWS's own conventions for the built-in default policy.
    ollama_host: str | None = Field(default=None, validation_alias="OLLAMA_HOST")
    aws_region: str | None = Field(default=None, validation_alias="AWS_REGION")
