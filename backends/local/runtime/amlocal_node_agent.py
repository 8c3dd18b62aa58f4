"""How mpirun in a distributed run's first node starts its daemons on the other nodes, without
sshd. Standard library, Python 3.8+.

    python -I -S amlocal_node_agent.py serve PORT        (every node but the first)
    python -I -S amlocal_node_agent.py exec HOST CMD...   (Open MPI's plm_ssh_agent, on node 0:
                                                          its port in AMLOCAL_NODE_AGENT_PORT)

Open MPI reaches a remote node by running `<ssh agent> HOST COMMAND...` and keeps that process
as its line to the daemon it starts there. On Azure ML that agent is ssh between the nodes of
one job; here `exec` connects to the `serve` of the node container HOST on the run's own network
(a Docker network of this run alone: only its sibling nodes can connect), which runs COMMAND
with `sh -c` as the run's user and sends its output back. So a node can do what the node beside
it could already do, nothing more: the same trust Azure's passwordless ssh between a job's
nodes gives.

The wire: `exec` sends one line of JSON, {"command": "..."}; `serve` answers with frames, a
byte for the stream (1 stdout, 2 stderr, 3 the exit status as decimal text) and a 4-byte length,
then the data. When the connection drops (mpirun ended or was killed) the command's process
group is killed, so no daemon outlives the job.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

STDOUT, STDERR, EXIT = 1, 2, 3
HEADER = struct.Struct("!BI")
CHUNK = 1 << 16
CONNECT_TIMEOUT_S = 60  # the other nodes' containers start alongside the first one
CONNECT_RETRY_S = 0.1
MAX_COMMAND_BYTES = 1 << 20
USAGE = "usage: amlocal_node_agent.py serve PORT | exec HOST COMMAND..."


def _send_frame(connection, lock, stream, data):
    with lock:
        connection.sendall(HEADER.pack(stream, len(data)) + data)


def _read_exactly(connection, size):
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def _read_command(connection):
    line = b""
    while not line.endswith(b"\n"):
        chunk = connection.recv(4096)
        if not chunk or len(line) > MAX_COMMAND_BYTES:
            raise EOFError("no command")
        line += chunk
    return json.loads(line.decode())["command"]


def _forward(pipe, connection, lock, stream):
    try:
        while True:
            data = os.read(pipe.fileno(), CHUNK)
            if not data:
                break
            _send_frame(connection, lock, stream, data)
    except OSError:
        pass


def _kill_when_dropped(connection, process):
    """The client never sends after its command: a read that returns means it is gone."""
    try:
        connection.recv(1)
    except OSError:
        pass
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass


def _serve_connection(connection):
    lock = threading.Lock()
    try:
        command = _read_command(connection)
        process = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
    except (OSError, ValueError, KeyError, EOFError):
        connection.close()
        return
    watcher = threading.Thread(target=_kill_when_dropped, args=(connection, process))
    watcher.daemon = True
    watcher.start()
    pumps = [threading.Thread(target=_forward, args=(pipe, connection, lock, stream))
             for pipe, stream in ((process.stdout, STDOUT), (process.stderr, STDERR))]
    for pump in pumps:
        pump.start()
    returncode = process.wait()
    for pump in pumps:
        pump.join()
    try:
        _send_frame(connection, lock, EXIT, str(returncode).encode())
        connection.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    watcher.join(timeout=5)
    connection.close()


def serve(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(16)
    while True:
        connection, _ = listener.accept()
        worker = threading.Thread(target=_serve_connection, args=(connection,))
        worker.daemon = True
        worker.start()


def _connect(host, port):
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            return socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(CONNECT_RETRY_S)


def execute(host, port, command):
    """Run `command` on node `host`; its output becomes ours, its exit status our exit code."""
    try:
        connection = _connect(host, port)
    except OSError as error:
        sys.stderr.write("amlocal: cannot reach node %s of this run: %s\n" % (host, error))
        return 255
    connection.settimeout(None)
    connection.sendall(json.dumps({"command": command}).encode() + b"\n")
    outputs = {STDOUT: sys.stdout.buffer, STDERR: sys.stderr.buffer}
    try:
        while True:
            stream, size = HEADER.unpack(_read_exactly(connection, HEADER.size))
            data = _read_exactly(connection, size)
            if stream == EXIT:
                code = int(data.decode())
                return code if code >= 0 else 128 - code
            outputs[stream].write(data)
            outputs[stream].flush()
    except (EOFError, OSError, ValueError, KeyError):
        sys.stderr.write("amlocal: lost node %s of this run\n" % host)
        return 255


def main(argv):
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(int(argv[1]))
        return 0
    if argv[:1] == ["exec"] and len(argv) >= 3:
        port = int(os.environ.get("AMLOCAL_NODE_AGENT_PORT", "0"))
        return execute(argv[1], port, " ".join(argv[2:]))
    sys.stderr.write(USAGE + "\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
