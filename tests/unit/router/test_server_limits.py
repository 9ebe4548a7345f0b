"""server.py: wire-level loggers stay quiet at debug, the fd limit is raised, the connection cap
fits the fd limit, and uvicorn gets the limits from settings."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator

import pytest

from router.app import create_app
from router.policy.loader import parse_policy
from router.server import (
    WIRE_LOGGERS,
    GuardedHttpTools,
    build_config,
    configure_logging,
    connection_cap,
    raise_fd_limit,
)
from router.settings import RouterSettings
from tests.api.test_ops_access import policy_dict


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    levels = {n: logging.getLogger(n).level for n in (*WIRE_LOGGERS, "")}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_wire_loggers_stay_quiet_at_debug(restore_loggers: None) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    configure_logging(RouterSettings(log_level="debug"))
    for name in (*WIRE_LOGGERS, "botocore.endpoint", "botocore.parsers", "urllib3.connectionpool"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name


def test_wire_logs_setting_lets_them_through(restore_loggers: None) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    configure_logging(RouterSettings(log_level="debug", wire_logs=True))
    assert logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG)


def test_fd_limit_raised_to_hard() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and soft == hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(256, hard // 2), hard))
        now = raise_fd_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
        if hard != resource.RLIM_INFINITY:
            assert now == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connection_cap_fits_the_fd_limit() -> None:
    assert connection_cap(2048, 1024) == (1024 - 128) // 2
    assert connection_cap(100, 1 << 20) == 100


def test_uvicorn_gets_the_limits() -> None:
    settings = RouterSettings(keep_alive_s=7, header_timeout_s=3.5, backlog=99,
                              max_connections=50)
    app = create_app(settings, policy=parse_policy(policy_dict()))
    config = build_config(app, settings)
    assert config.timeout_keep_alive == 7 and config.backlog == 99
    assert isinstance(config.http, type) and issubclass(config.http, GuardedHttpTools)
    assert config.http.header_timeout_s == 3.5 and config.http.max_connections == 50
