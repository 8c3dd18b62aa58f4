"""Starts a run's script with its output going straight to a file. Standard library, Python 3.8+.

    python -I -S amlocal_launch.py --output FILE [--exit-status FILE] -- PROGRAM ARGS...

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
"""

import os
import signal
import subprocess
import sys

USAGE = "usage: amlocal_launch.py --output FILE [--exit-status FILE] -- PROGRAM ARGS..."


def parse(argv):
    options = {}
    while argv and argv[0] != "--":
        if len(argv) < 2 or argv[0] not in ("--output", "--exit-status"):
            sys.exit(USAGE)
        options[argv[0]] = argv[1]
        argv = argv[2:]
    if not argv[1:] or "--output" not in options:
        sys.exit(USAGE)
    return options["--output"], options.get("--exit-status"), argv[1:]


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


def main(argv):
    output, exit_status, command = parse(argv)
    redirect_output(output)
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
