"""`python -m amlocal.backends.local.supervisor --home HOME [--adopt-from PID] RUN_ID`: drive a
detached run, or adopt one whose driver died.

Started by `submit(..., detach=True)`, or by recovery.reconcile_run with --adopt-from (the pid of
the process that claimed the run for it), in a session of its own, so the run outlives the
process that started this one. SIGTERM or SIGINT to this process is a cancel request, not a
silent death.
"""

import argparse
import os
import signal

from amlocal.backends import status as run_status
from amlocal.backends.local.backend import LocalBackend
from amlocal.backends.local.recovery import claim_run


def main(argv=None):
    parser = argparse.ArgumentParser(prog="amlocal-supervisor")
    parser.add_argument("--home", required=True)
    parser.add_argument("--adopt-from", type=int, metavar="PID",
                        help="adopt the run that process PID claimed for this one")
    parser.add_argument("run_id")
    args = parser.parse_args(argv)
    backend = LocalBackend(home=args.home)

    def request_cancel(signum, frame):
        backend.store.try_set_status(args.run_id, run_status.CANCEL_REQUESTED)

    signal.signal(signal.SIGTERM, request_cancel)
    signal.signal(signal.SIGINT, request_cancel)
    if args.adopt_from is not None:
        # Exactly one adopter: the one that takes the run over from the process that claimed it.
        if not claim_run(backend.store, args.run_id, args.adopt_from, os.getpid()):
            return 0
        final_status = backend.adopt(args.run_id)
    else:
        final_status = backend.drive(args.run_id)
    return 0 if final_status == run_status.COMPLETED else 1


if __name__ == "__main__":
    raise SystemExit(main())
