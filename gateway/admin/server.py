"""Runs the admin app with uvicorn inside the gateway's own event loop, beside the SMTP listener.

``await bind()`` opens the listening socket ourselves at start-up, so a bad or busy address fails
the gateway's start with an OSError (uvicorn would call sys.exit inside a task). ``serve()`` is a
task in the supervisor's TaskGroup; ``stop()`` asks it to finish (open requests complete, bounded
by GRACE seconds). uvicorn's own SIGINT/SIGTERM handling is switched off: it replaces the
handlers with signal.signal() and re-raises captured signals on exit, which would bypass the
supervisor's single shutdown path (LIBRARY-NOTES.md).
"""
from __future__ import annotations

import contextlib
import socket

import uvicorn

from gateway.config import parse_listen

__all__ = ["AdminServer"]

GRACE = 5.0    # seconds open HTTP requests get at shutdown


class AdminServer:
    def __init__(self, app, listen: str, *, tls_cert=None, tls_key=None, trusted_proxies=()):
        """``tls_cert``/``tls_key``: PEM files to serve HTTPS (None: plain HTTP);
        ``trusted_proxies``: addresses whose X-Forwarded-For/-Proto uvicorn believes (none:
        the headers are ignored, the client is the TCP peer)."""
        self.host, self.port = parse_listen(listen)
        tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert else {}
        proxies = {"proxy_headers": True, "forwarded_allow_ips": ",".join(trusted_proxies)} \
            if trusted_proxies else {"proxy_headers": False}
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning",
                                lifespan="off", access_log=False, log_config=None,
                                timeout_graceful_shutdown=GRACE, **proxies, **tls)
        self.server = uvicorn.Server(config)
        # uvicorn ≥0.29 (checked 0.54): serve() wraps itself in capture_signals(); older
        # versions call install_signal_handlers(). Neutralise both.
        self.server.capture_signals = contextlib.nullcontext
        self.server.install_signal_handlers = lambda: None
        self._sock: socket.socket | None = None

    def bind(self) -> tuple[str, int]:
        """Open the listening socket now; returns the bound (host, port) (port 0 → the real one)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the
        # socket says it is TCP (base_events._set_nodelay); without it a keep-alive response
        # written as headers + body waits ~40 ms for the client's delayed ACK (Nagle)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.set_inheritable(True)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return sock.getsockname()[:2]

    async def serve(self) -> None:
        if self._sock is None:
            self.bind()
        await self.server.serve(sockets=[self._sock])

    def stop(self) -> None:
        self.server.should_exit = True
