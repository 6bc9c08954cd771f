"""`slm serve`: the web view of the collector's database (host/serve_app.py) under uvicorn. The database and the
positions file are checked and the address bound before anything is served, so a bad database, a bad file or a port
in use is one line and an exit code, never a traceback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys

from slm.errors import InputError, OperationError

STOP_GRACE_S = 1  # at most this long for open requests to end after Ctrl-C / SIGTERM (live streams end at once)


class ServeError(OperationError):
    """The server could not start (the address is in use or not allowed)."""


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise InputError(f"--host {host}: give an IP address such as 127.0.0.1") from None
    # proto given: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (with 0, a keep-alive response
    # written in two parts waits for the client's delayed ACK, 40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(db_url: str, host: str = "127.0.0.1", port: int = 8000, positions: str | None = None,
          announce=None) -> None:
    """Serve until Ctrl-C or SIGTERM. `announce(url)` is called once the address is bound (default: a line on
    stderr)."""
    import uvicorn

    from slm.serve_app import build_app
    from slm.serve_data import FleetReader
    from slm.serve_plan import load_positions

    plans = load_positions(positions)
    reader = FleetReader(db_url)
    try:
        sock = _bind(host, port)
        bound_host, bound_port = sock.getsockname()[:2]
        url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}/"
        (announce or (lambda u: print(f"slm serve: {u} (read-only; Ctrl-C to stop)", file=sys.stderr,
                                      flush=True)))(url)
        if not ipaddress.ip_address(bound_host).is_loopback:
            print("slm serve: listening beyond this machine: anyone who reaches the port sees the levels "
                  "(plain HTTP; see docs/web.md, Security)", file=sys.stderr, flush=True)
        stopping = asyncio.Event()

        class Server(uvicorn.Server):
            async def shutdown(self, sockets=None):
                stopping.set()  # the live streams end their responses, so the connections close without a wait
                await super().shutdown(sockets)

        config = uvicorn.Config(build_app(reader, plans, db_url, stopping), log_level="warning", access_log=False,
                                timeout_graceful_shutdown=STOP_GRACE_S, lifespan="off")
        Server(config).run(sockets=[sock])
    finally:
        reader.close()
