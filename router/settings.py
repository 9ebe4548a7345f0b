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
    policy_file: str | None = Field(default=None, description="YAML policy; None = built-in")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    redis_url: str | None = Field(default=None, description="shared state for several replicas")
    redis_prefix: str = "hr:"
    redis_lease_s: float = Field(default=10.0, gt=0)
    redis_op_timeout_s: float = Field(
        default=0.2, gt=0, description="longest a request waits on Redis before falling back")
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
    # Inherited from Ollama's and AWS's own conventions for the built-in default policy.
    ollama_host: str | None = Field(default=None, validation_alias="OLLAMA_HOST")
    aws_region: str | None = Field(default=None, validation_alias="AWS_REGION")
