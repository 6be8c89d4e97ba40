"""`charrnn serve`: load the models, bind the socket, run uvicorn, drain on Ctrl-C / SIGTERM.

Shutdown: the first SIGINT or SIGTERM stops listening, answers 503 to requests arriving on open
connections, and lets the streams in flight finish for up to --drain-timeout seconds (then they are
cut); a second signal cuts them at once. A drained server exits 0.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import sys
import threading

import uvicorn

from .app import Limits, create_app
from .engine import UsageError
from .models import Registry

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a one-line error (port taken, unknown host)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                         "choose another --port (0 picks a free one) or --host") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config, app, say):
        super().__init__(config)
        self._app, self._say = app, say

    def handle_exit(self, sig, frame):
        engine = self._app.state.engine
        if not self.should_exit:
            engine.draining = True
            st = engine.stats()
            self._say(f"stopping: {st['running_streams']} stream(s) in flight finish (at most "
                      f"{self.config.timeout_graceful_shutdown:g} s), new requests get 503; again to cut them now")
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn's own version re-raises the signal once shut down, so the process would die by it;
        # a server that drained cleanly exits 0 instead
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in saved.items():
                signal.signal(s, h)


def serve(paths: list[str], watch: list[str], names: list[str], host: str, port: int, api_key: str | None,
          limits: Limits, drain_timeout: float, access_log: bool, say) -> int:
    """Run until Ctrl-C / SIGTERM; say(line) prints a status line on stderr."""
    for name, value in (("--max-length", limits.max_length), ("--max-prompt", limits.max_prompt),
                        ("--max-concurrency", limits.max_concurrency)):
        if value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    if limits.max_queue < 0 or drain_timeout < 0:
        raise UsageError("--max-queue and --drain-timeout must be >= 0")
    if api_key is not None and not api_key.strip():
        raise UsageError("the API key is empty", "give a non-empty --api-key or CHARRNN_API_KEY, or none")
    registry = Registry(paths, watch, names)
    if not is_loopback(host) and not api_key:
        say(f"warning: --host {host} lets other machines in and there is no API key: anyone who reaches "
            "this port can use the server (set --api-key or CHARRNN_API_KEY)")
    sock = bind(host, port)
    for v in registry.current.values():
        say(f"model {v.name!r}: {v.path} ({v.describe()})"
            + (f"; watching {v.path.parent} for a newer best.npz" if registry.watched(v.name) else ""))
    _log_to_stderr()
    app = create_app(registry, limits, api_key)
    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log,
                            timeout_graceful_shutdown=drain_timeout, lifespan="on", server_header=False)
    server = _Server(config, app, say)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    url = f"http://{shown}:{bound[1]}"
    started = server.startup

    async def startup(sockets=None):
        await started(sockets)
        if not server.should_exit:
            say(f"listening on {url}  (page {url}/, API {url}/v1, OpenAPI {url}/openapi.json); "
                "Ctrl-C stops" + (" (API key required)" if api_key else ""))
    server.startup = startup
    server.run(sockets=[sock])
    say("stopped")
    return 0


def _log_to_stderr() -> None:
    logger = logging.getLogger("charrnn.serve")
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False
