"""Running the emulator in the foreground: `amlocal serve` (cli/serve.py) calls `serve`."""

import asyncio
import signal
import socket

from amlocal.errors import UserInputError
from amlocal.service.config import WorkspaceIdentity, remove_config, write_config
from amlocal.service.proxy import BlobProxy, tcp_app
from amlocal.service.tls import server_context


def bind(host, port):
    """A listening socket on host:port (port 0: a free one); UserInputError when it cannot be."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by the connections it accepts: uvicorn writes an answer's head and body
        # apart, and without it the body waits for the client's delayed ACK (40 ms on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except (OSError, OverflowError) as error:
        raise UserInputError(f"cannot listen on {host}:{port}: {error}") from None
    return sock


def endpoint_of(sock):
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(home, host, port, announce):
    """Serve the workspace over the run history at `home` until SIGINT or SIGTERM.

    `announce(endpoint)` is called once the socket listens and config.json is written; when the
    server stops, config.json is removed (runs on the local backend go on: they are not this
    process's).
    """
    import uvicorn

    from amlocal.service.app import create_app

    sock = bind(host, port)
    proxy_sock = bind(host, 0)
    endpoint = endpoint_of(sock)
    app = create_app(home, endpoint)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    proxy = BlobProxy(server_context(home), tcp_app(*_reachable(sock)), app.write)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again with the
    # handlers it found installed: these ones, so that a stop ends in exit 0 rather than in a
    # KeyboardInterrupt or death by SIGTERM.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: None)

    write_config(home, WorkspaceIdentity.of_home(home), endpoint, endpoint_of(proxy_sock))
    try:
        announce(endpoint)
        asyncio.run(serve_with_proxy(server, sock, proxy, proxy_sock))
    finally:
        remove_config(home, endpoint)
        sock.close()
        proxy_sock.close()


async def serve_with_proxy(server, sock, proxy, proxy_sock):
    """Serve the app (a uvicorn.Server) on `sock` and the https route (a proxy.BlobProxy) on
    `proxy_sock` in one event loop: the proxy lives as long as the app's server."""
    await proxy.start(proxy_sock)
    try:
        await server.serve(sockets=[sock])
    finally:
        await proxy.close()


def _reachable(sock):
    """The (host, port) a local client connects to for socket `sock` (a wildcard address is
    reached through loopback)."""
    host, port = sock.getsockname()[:2]
    return ({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port)
