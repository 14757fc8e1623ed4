"""Run the gateway's ASGI app with uvicorn in a background thread of this process (tests, benchmarks,
the local stack of payoff/stack.py)."""

from __future__ import annotations

import threading
import time

from services.jobs import COMPONENTS, ComponentRegistry


class GatewayServer:
    """uvicorn serving the gateway in a background thread of this process."""

    def __init__(
        self,
        settings,
        host: str = "127.0.0.1",
        port: int | None = None,
        registry: ComponentRegistry = COMPONENTS,
    ) -> None:
        from gateway.app import create_app, wrap
        from services.redis_server import free_port

        self.settings, self.host, self.port = settings, host, port or free_port()
        self.app = create_app(settings, registry)
        self.asgi = wrap(self.app, settings)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def gateway(self):
        return self.app.state.gateway

    def start(self, timeout_s: float = 60.0) -> GatewayServer:
        import uvicorn

        config = uvicorn.Config(
            self.asgi,
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="payoff-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start (see the log above)")
            time.sleep(0.05)
        return self

    def stop(self, release_lease: bool = True) -> None:
        """Shut down; `release_lease=False` abandons the runner lease as a crashed process would."""
        if not release_lease and self.gateway.runner is not None:
            self.gateway.runner.stop(release=False)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
