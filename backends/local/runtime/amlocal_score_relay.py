"""The relay of a web service (standard library only): TCP on its container's port to the scoring
server's Unix socket in the folder it shares with the scoring container.

The relay's container is the only one of a service on a network (a user-defined bridge, its port
published on the host's 127.0.0.1 only), so the user's scoring code, in a container without
any network, is reachable from the host and reaches nothing. While the scoring server is not
listening (starting, or its container dead) a request gets 502 at once.
"""

import asyncio
import os
import sys

_NOT_LISTENING = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")
_REASON = b'{"message": "the scoring server is not running (see the service\'s logs)"}'


async def pipe(reader, writer):
    """Copy one direction until its end, then pass the end on (a half-close, when it can)."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, RuntimeError):
        pass


async def connect(socket_path, patience_s=5.0):
    """The scoring server's socket; a full backlog (EAGAIN) is waited out, for up to
    patience_s, while a server that is not there (no socket, refused) is reported at once."""
    deadline = asyncio.get_running_loop().time() + patience_s
    while True:
        try:
            return await asyncio.open_unix_connection(socket_path)
        except BlockingIOError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.01)


async def refuse(client_reader, client_writer):
    """Answer 502, after reading what the client sent (closing on unread data would reset the
    connection, and the client would see no answer at all)."""
    try:
        await asyncio.wait_for(client_reader.read(1 << 16), timeout=0.5)
    except (asyncio.TimeoutError, ConnectionError):
        pass
    client_writer.write(_NOT_LISTENING % (len(_REASON), _REASON))
    try:
        await client_writer.drain()
    except ConnectionError:
        pass
    client_writer.close()


async def relay(socket_path, client_reader, client_writer):
    try:
        upstream_reader, upstream_writer = await connect(socket_path)
    except OSError:
        await refuse(client_reader, client_writer)
        return
    try:
        await asyncio.gather(pipe(client_reader, upstream_writer),
                             pipe(upstream_reader, client_writer))
    finally:
        for writer in (upstream_writer, client_writer):
            writer.close()


async def main(port, socket_path):
    server = await asyncio.start_server(lambda r, w: relay(socket_path, r, w), "0.0.0.0", port)
    print(f"amlocal relay: port {port} -> {socket_path}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), os.environ["AMLOCAL_SCORE_SOCKET"]))
