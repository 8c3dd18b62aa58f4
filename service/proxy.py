"""The https route for blob uploads: a CONNECT proxy that is only ever the emulator's blob host.

azureml-core sends blob PUTs to `https://{account}.blob.{suffix}` and nothing else will do, so
clients are given HTTPS_PROXY pointing here. A client's `CONNECT amlocal.blob.amlocal.internal:443`
is answered 200, TLS is terminated here with the emulator's certificate (tls.py), and the
decrypted stream is piped to the emulator's own plain http socket, where the same ASGI app serves
it (blobs.py routes by the Host header): a TCP port for `amlocal serve` (`tcp_app`), a Unix socket
for a run's endpoint (`unix_app`, backends/local/run_endpoint.py). Piping rather than running
uvicorn's protocol class on the TLS transport: it uses only public interfaces (asyncio streams,
the app's listening socket), and every request goes through the one server, its request log and
its limits.

Any other CONNECT target, and any request that is not a CONNECT, is answered 403: this is never a
proxy to the world.
"""

import asyncio
import contextlib

from amlocal.service.config import BLOB_HOST

# The bound on a CONNECT head; also the stream's buffer size (smaller slows the tunnel down).
MAX_HEAD_BYTES = 1 << 16
HEAD_TIMEOUT_S = 30
TLS_HANDSHAKE_TIMEOUT_S = 30
_CHUNK = 1 << 16


def connect_target(head):
    """The (host, port) a CONNECT request head asks for; None if it is not a CONNECT."""
    try:
        request_line = head.split(b"\r\n", 1)[0].decode("ascii")
        method, target, _version = request_line.split(" ")
        host, port = target.rsplit(":", 1)
        return (host.lower(), int(port)) if method == "CONNECT" else None
    except (UnicodeDecodeError, ValueError):
        return None


def _answer(writer, status, reason, body=b""):
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
                 f"Connection: close\r\n\r\n".encode("ascii") + body)


def tcp_app(host, port):
    """How BlobProxy reaches an app listening on host:port."""
    return lambda: asyncio.open_connection(host, port)


def unix_app(path):
    """How BlobProxy reaches an app listening on the Unix socket `path` (a str connect() takes)."""
    return lambda: asyncio.open_unix_connection(path)


class BlobProxy:
    """Serves CONNECT to BLOB_HOST:443 on its socket; `connect_app()` opens a connection to the
    emulator's app, as asyncio streams (tcp_app, unix_app)."""

    def __init__(self, ssl_context, connect_app, log):
        self._ssl = ssl_context
        self._connect_app = connect_app
        self._log = log
        self._server = None

    async def start(self, sock):
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=MAX_HEAD_BYTES)

    async def close(self):
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader, writer):
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ConnectionError):
            pass  # the client went away or never spoke: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader, writer):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        target = connect_target(head)
        if target != (BLOB_HOST, 443):
            shown = head.split(b"\r\n", 1)[0][:200].decode("ascii", "backslashreplace")
            self._log(f"CONNECT refused: {shown} 403")
            _answer(writer, 403, "Forbidden",
                    f"amlocal's emulator proxies only CONNECT {BLOB_HOST}:443\n".encode("ascii"))
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        await writer.start_tls(self._ssl, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S)
        app_reader, app_writer = await self._connect_app()
        pipes = [asyncio.ensure_future(_pipe(reader, app_writer)),
                 asyncio.ensure_future(_pipe(app_reader, writer))]
        try:
            # Either side closing ends the tunnel (a TLS stream cannot be half-closed).
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            app_writer.close()


async def _pipe(reader, writer):
    with contextlib.suppress(OSError, ConnectionError):
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
