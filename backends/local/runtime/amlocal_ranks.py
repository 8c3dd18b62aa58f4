"""Runs the ranks of a distributed run on one node, each with its own log and exit status.
Standard library, Python 3.8+.

    python -I -S amlocal_ranks.py --output-dir DIR -- PROGRAM ARGS...
        one MPI rank, started by Open MPI: the rank is OMPI_COMM_WORLD_RANK
    python -I -S amlocal_ranks.py --output-dir DIR --pytorch FIRST COUNT PER_NODE -- PROGRAM...
        COUNT PyTorch ranks FIRST, FIRST+1, ...: each gets RANK, LOCAL_RANK and NODE_RANK (of
        PER_NODE ranks a node; MASTER_ADDR, MASTER_PORT and WORLD_SIZE are in the environment)

Rank R's stdout and stderr go to DIR/script_output.txt for rank 0 (the file the run's driver
streams to the terminal) and DIR/script_output_R.txt for the others; when it ends, its exit
status (negative for a signal) goes to DIR/exit_status_R, so the driver can say which rank failed.
When one of several ranks here fails, the others are stopped; SIGTERM and SIGINT are passed to
every rank. The exit code is the first failing rank's, else 0.
"""

import os
import signal
import subprocess
import sys
import time

USAGE = ("usage: amlocal_ranks.py --output-dir DIR [--pytorch FIRST COUNT PER_NODE] -- "
         "PROGRAM ARGS...")
POLL_S = 0.1
STOP_GRACE_S = 10


def output_name(rank):
    return "script_output.txt" if rank == 0 else "script_output_%d.txt" % rank


def parse(argv):
    if "--" not in argv:
        sys.exit(USAGE)
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    if len(options) < 2 or options[0] != "--output-dir" or not command:
        sys.exit(USAGE)
    folder, rest = options[1], options[2:]
    if not rest:
        return folder, None, command
    if len(rest) != 4 or rest[0] != "--pytorch":
        sys.exit(USAGE)
    return folder, tuple(int(number) for number in rest[1:]), command


def _write_atomically(path, text):
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def start_rank(folder, rank, command, variables):
    descriptor = os.open(os.path.join(folder, output_name(rank)),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=descriptor,
                                stderr=descriptor, env=dict(os.environ, **variables))
    finally:
        os.close(descriptor)


def main(argv):
    folder, pytorch, command = parse(argv)
    if pytorch is None:
        ranks = {int(os.environ.get("OMPI_COMM_WORLD_RANK", "0")): {}}
    else:
        first, count, per_node = pytorch
        ranks = {rank: {"RANK": str(rank), "LOCAL_RANK": str(rank % per_node),
                        "NODE_RANK": str(rank // per_node)}
                 for rank in range(first, first + count)}
    processes = {}
    stopping = []

    def pass_on(signum, _frame):
        stopping.append(signum)
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, pass_on)
    try:
        for rank, variables in sorted(ranks.items()):
            processes[rank] = start_rank(folder, rank, command, variables)
    except OSError as error:
        sys.stderr.write("amlocal: could not start %s: %s\n" % (command[0], error))
        pass_on(signal.SIGTERM, None)
        return 127
    failed = None
    stop_deadline = None
    recorded = set()
    while len(recorded) < len(processes):
        for rank, process in sorted(processes.items()):
            code = process.poll()
            if code is None or rank in recorded:
                continue
            recorded.add(rank)
            _write_atomically(os.path.join(folder, "exit_status_%d" % rank), "%d\n" % code)
            if code != 0 and failed is None:
                failed = code
                pass_on(signal.SIGTERM, None)  # a rank that failed ends the job, as mpirun does
                stop_deadline = time.monotonic() + STOP_GRACE_S
        if stop_deadline is not None and time.monotonic() > stop_deadline:
            pass_on(signal.SIGKILL, None)
            stop_deadline = None
        time.sleep(POLL_S)
    if failed is None:
        return 0
    return failed if failed > 0 else 128 - failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
