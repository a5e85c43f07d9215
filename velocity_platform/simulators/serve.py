"""Serving the simulator apps with uvicorn: in the foreground, or in a background thread."""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any

import uvicorn

__all__ = ["BackgroundServer", "free_port", "run_foreground"]


def free_port() -> int:
    """A loopback port nobody listens on now (for a simulator or a service started next)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_foreground(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve ``app`` until interrupted (loopback by default: the simulators have no real auth)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level)


class _SignallingServer(uvicorn.Server):
    """A uvicorn server that reports when it is listening (or failed to start)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self._ready.set()


class BackgroundServer:
    """Run an ASGI app with uvicorn in a daemon thread on a free loopback port.

    >>> with BackgroundServer(create_erp_app(ErpConfig())) as srv:
    ...     httpx.get(srv.url + "/healthz")
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        startup_timeout: float = 30.0,
        graceful_shutdown_seconds: float = 2.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._startup_timeout = startup_timeout
        self._ready = threading.Event()
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            lifespan="off",
            # Slow-response faults must not hold shutdown hostage.
            timeout_graceful_shutdown=graceful_shutdown_seconds,
        )
        self._server = _SignallingServer(config, self._ready)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.host}:{self.port}", daemon=True)
        self._thread.start()
        # Set by startup() in a finally, or by _run() when the server dies before startup.
        if not self._ready.wait(self._startup_timeout) or not self._server.started:
            self.stop()
            raise RuntimeError(f"uvicorn did not start on {self.host}:{self.port}")
        sock = self._server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        return self

    def _run(self) -> None:
        try:
            self._server.run()
        finally:
            self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
