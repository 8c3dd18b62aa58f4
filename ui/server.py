"""Running the web UI in the foreground: `amlocal ui` (cli/ui.py) calls `serve`."""

import asyncio
import ipaddress
import signal
import socket

from amlocal.backends.history.ui_address import remove_ui_address, write_ui_address
from amlocal.errors import UserInputError


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listening_socket(host, port):
    """A socket listening on host:port (port 0: a free one); UserInputError if it cannot be."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host.strip("[]"), port), family=family, backlog=128)
    except (OSError, OverflowError) as error:
        raise UserInputError(f"cannot listen on {host}:{port}: {error}"
                             + (" (--port 0 picks a free port)" if port else "")) from None


def url_of(sock):
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def origins_of(sock, host):
    """The origins a loopback server is reached at (its Host and its pages' Origin); None for a
    host the user exposed on purpose (any name may reach it)."""
    if not is_loopback(host):
        return None
    port = sock.getsockname()[1]
    return {url_of(sock), f"http://localhost:{port}", f"http://127.0.0.1:{port}",
            f"http://[::1]:{port}"}


def serve(home, host, port, announce):
    """Serve the UI over the history at `home` until SIGINT or SIGTERM; `announce(url)` is called
    once it listens. $AMLOCAL_HOME/ui.json names it meanwhile (removed when it stops)."""
    import uvicorn

    from amlocal.ui.app import create_app

    sock = listening_socket(host, port)
    url = url_of(sock)
    app = create_app(home, origins_of(sock, host))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    # uvicorn stops gracefully on SIGINT/SIGTERM and raises the signal again with the handlers it
    # found: these, so a stop ends in exit 0.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: None)
    write_ui_address(home, url)
    try:
        announce(url)
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        remove_ui_address(home, url)
        sock.close()
