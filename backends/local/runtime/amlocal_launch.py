"""Starts a run's script with its output going straight to a file. Standard library, Python 3.8+.

    python -I -S amlocal_launch.py --output FILE [--exit-status FILE] [--relay LISTEN=SOCKET]...
        -- PROGRAM ARGS...

--output FILE is opened for appending (never through a symlink) and becomes the script's stdout
and stderr, so every byte the script writes lands there however fast it writes, and no pipe ties
the script to the process that drives the run: the script outlives a killed driver, and the host
copies FILE into the driver log at its own pace.

Without --exit-status this process becomes the script (exec), so the container's exit code is
the script's and the container's init signals the script directly.

With --exit-status (the process executor) the script runs as a child of this process, which
waits for it and then writes its exit status (as subprocess reports it: negative for a signal)
to that file atomically, so a driver that adopted the run, and is not the script's parent, still
learns how it ended. SIGINT and SIGTERM reach the script through its process group; this process
only outlasts them to record the status.

With --relay (once per socket), a process of its own relays every connection to LISTEN
(127.0.0.1:PORT, which it binds, or fd:N, a listening socket it was handed) to the Unix socket
SOCKET, where the run's driver serves the emulator (backends/local/run_endpoint.py: its app, and
its https route for blob uploads): that is how azureml-core in the script reaches its run history
from a container that has no network. The relay outlives SIGINT and SIGTERM (the SDK flushes its
metrics through it when it gets them) and ends when the process that started it (the launcher,
or the script it became) has ended. The bytes it relays are the script's: it only copies them.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

USAGE = ("usage: amlocal_launch.py --output FILE [--exit-status FILE] [--relay LISTEN=SOCKET]... "
         "-- PROGRAM ARGS...")
OPTIONS = ("--output", "--exit-status", "--relay")
RELAY_CHUNK = 1 << 16
PARENT_POLL_S = 0.2
UNIX_PATH_MAX = 100  # sun_path holds 108 bytes


def parse(argv):
    """({option: value}, command); --relay's value is the list of its values."""
    options = {"--relay": []}
    while argv and argv[0] != "--":
        if len(argv) < 2 or argv[0] not in OPTIONS:
            sys.exit(USAGE)
        if argv[0] == "--relay":
            options["--relay"].append(argv[1])
        else:
            options[argv[0]] = argv[1]
        argv = argv[2:]
    if not argv[1:] or "--output" not in options:
        sys.exit(USAGE)
    return options, argv[1:]


def redirect_output(path):
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)


def write_atomically(path, text):
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _listener(listen):
    if listen.startswith("fd:"):
        return socket.socket(fileno=int(listen[len("fd:"):]))
    host, _, port = listen.rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by what it accepts: a relayed answer's body must not wait for the client's
    # delayed ACK of its head (40 ms a request on Linux).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((host, int(port)))
    listener.listen(64)
    return listener


def _unix_address(path):
    """A path connect() takes: a long one is reached through /proc/self/fd (sun_path is short)."""
    if len(path) < UNIX_PATH_MAX:
        return path
    folder = os.open(os.path.dirname(path), os.O_RDONLY)
    return "/proc/self/fd/%d/%s" % (folder, os.path.basename(path))


def _pump(source, destination):
    try:
        while True:
            data = source.recv(RELAY_CHUNK)
            if not data:
                break
            destination.sendall(data)
    except OSError:
        pass
    finally:
        try:
            destination.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay_connection(client, address):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(address)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client))
    back.daemon = True
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _accept_forever(listener, address):
    while True:
        client, _ = listener.accept()
        worker = threading.Thread(target=_relay_connection, args=(client, address))
        worker.daemon = True
        worker.start()


def _relay_until_orphaned(relays, parent):
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    for listener, address in relays:
        acceptor = threading.Thread(target=_accept_forever, args=(listener, address))
        acceptor.daemon = True
        acceptor.start()
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)


def start_relays(specs):
    """Fork the relays of LISTEN=SOCKET each (see the module's docstring), one process for all;
    say so for one that cannot start."""
    relays = []
    for spec in specs:
        listen, _, socket_path = spec.partition("=")
        try:
            relays.append((_listener(listen), _unix_address(socket_path)))
        except (OSError, ValueError) as error:
            sys.stderr.write("amlocal: no emulator endpoint at %s in this run (relay: %s)\n"
                             % (listen, error))
    if not relays:
        return
    parent = os.getpid()
    if os.fork() == 0:
        try:
            _relay_until_orphaned(relays, parent)
        finally:
            os._exit(0)
    for listener, _ in relays:
        listener.close()


def main(argv):
    options, command = parse(argv)
    exit_status = options.get("--exit-status")
    redirect_output(options["--output"])
    start_relays(options["--relay"])
    if exit_status is None:
        os.execvp(command[0], command)
    # A Python handler, not SIG_IGN: an ignored signal would stay ignored in the script.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    try:
        returncode = subprocess.call(command, stdin=subprocess.DEVNULL)
    except OSError as error:
        sys.stderr.write("amlocal: could not start %s: %s\n" % (command[0], error))
        returncode = 127
    write_atomically(exit_status, "%d\n" % returncode)
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
