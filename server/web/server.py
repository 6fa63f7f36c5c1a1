"""Runs the HTTP API with uvicorn inside the service's own event loop, beside the gRPC server."""

import asyncio
import socket

import uvicorn

from server.errors import StartupError
from server.web.http_api import HttpApi


def _bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot listen on {listen}: {e.strerror}; choose another address with --http-listen "
                           "HOST:PORT (port 0 picks a free one)") from None
    sock.setblocking(False)
    return sock


class HttpServer:
    """uvicorn's server started and stopped by the App: it installs no signal handlers (the process's own
    handlers stop the App, which stops this), and binds its socket first so that port 0 tells its port."""

    def __init__(self, app: HttpApi, listen: str, *, shutdown_grace_s: float, tls_cert_file: str = "",
                 tls_key_file: str = ""):
        self._listen = listen
        self._config = uvicorn.Config(
            app, loop="none", http="httptools", lifespan="off", log_config=None, access_log=False,
            server_header=False, proxy_headers=False,  # server.core.client_address decides whom to believe
            timeout_graceful_shutdown=max(1, round(shutdown_grace_s)),
            ssl_certfile=tls_cert_file or None, ssl_keyfile=tls_key_file or None,
        )
        self._server = uvicorn.Server(self._config)
        self._socket: socket.socket | None = None
        self._main_loop: asyncio.Task[None] | None = None

    async def start(self) -> int:
        self._socket = _bind(self._listen)
        self._config.load()
        self._server.lifespan = self._config.lifespan_class(self._config)
        await self._server.startup(sockets=[self._socket])
        self._main_loop = asyncio.create_task(self._server.main_loop(), name="http-api")
        return int(self._socket.getsockname()[1])

    async def stop(self) -> None:
        """Stops accepting, lets requests in flight finish within the grace, then closes."""
        if self._main_loop is None:
            return
        self._server.should_exit = True
        await self._main_loop
        await self._server.shutdown(sockets=[self._socket] if self._socket else None)
        if self._socket is not None:
            self._socket.close()
