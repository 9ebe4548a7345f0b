"""Running the app under uvicorn with a drain that keeps streams honest.

On SIGTERM uvicorn stops accepting and waits up to `grace_s` for requests in flight; a stream
still running shortly before the grace ends is finished with an in-band error event (via
`RouterService.begin_drain`) rather than cut at the socket. A drained shutdown exits 0.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from router.service import RouterService
from router.settings import RouterSettings


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: RouterService, grace_s: float) -> None:
        super().__init__(config)
        self._service = service
        self._grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._service.begin_drain(self._grace_s)


def run(app: Starlette, settings: RouterSettings) -> None:
    # uvicorn re-raises the SIGTERM it captured once drained, with the previous handler in
    # place: make that handler a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, access_log=False,
                            timeout_graceful_shutdown=settings.grace_s)  # type: ignore[arg-type]
    DrainingServer(config, app.state.service, settings.grace_s).run()
