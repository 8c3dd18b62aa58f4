"""`python -m amlocal.backends.local.supervisor --home HOME RUN_ID`: drive a detached run.

Started by `submit(..., detach=True)` in a session of its own, so the run outlives the process
that submitted it. SIGTERM or SIGINT to this process is a cancel request, not a silent death.
"""

import argparse
import signal

from amlocal.backends import status as run_status
from amlocal.backends.local.backend import LocalBackend


def main(argv=None):
    parser = argparse.ArgumentParser(prog="amlocal-supervisor")
    parser.add_argument("--home", required=True)
    parser.add_argument("run_id")
    args = parser.parse_args(argv)
    backend = LocalBackend(home=args.home)

    def request_cancel(signum, frame):
        backend.store.try_set_status(args.run_id, run_status.CANCEL_REQUESTED)

    signal.signal(signal.SIGTERM, request_cancel)
    signal.signal(signal.SIGINT, request_cancel)
    final_status = backend.drive(args.run_id)
    return 0 if final_status == run_status.COMPLETED else 1


if __name__ == "__main__":
    raise SystemExit(main())
