"""Runs whose driving process died: adopted by a new driver, or ended with the reason.

A local run is driven by one process (the `amlocal run` in a terminal, or a detached
supervisor), whose pid the run's record holds. If that process is killed, the script goes on (its
output goes to a file, not to the dead process: see script_output.py), and whoever looks at the
run next (`runs wait`, `runs show`, `runs list`, a run waiting for the same nodes) calls
`reconcile_run`. A run whose script had started is adopted: the looking process takes the run
over with a compare-and-set on its driver_pid (so exactly one adopter wins) and starts a
detached supervisor that follows the script to its true end and records it (RunDriver.adopt).
A run whose driver died before its script started is ended: its nodes given back, Canceled if a
cancel was asked for, else Failed with the reason.
"""

import os
import subprocess
import sys

from amlocal.backends import status as run_status
from amlocal.backends.local.compute import ComputeTargets
from amlocal.backends.local.processes import process_alive

SUPERVISOR_LOG = "azureml-logs/55_supervisor_log.txt"
_SCRIPT_EXECUTORS = ("docker", "process")


def driver_gone(record):
    """True when the run is not over and the process recorded as driving it has exited."""
    if run_status.is_terminal(record["status"]) or record["driver_pid"] is None:
        return False  # ended, or a detached run whose supervisor is being started
    return not process_alive(record["driver_pid"])


def claim_run(store, run_id, expected_driver, new_driver):
    """Make `new_driver` the run's driver if `expected_driver` still is; True if it did."""
    with store.transaction() as conn:
        return conn.execute("UPDATE runs SET driver_pid = ? WHERE id = ? AND driver_pid = ?",
                            (new_driver, run_id, expected_driver)).rowcount == 1


def start_supervisor(store, run_id, *options):
    """Start `python -m amlocal.backends.local.supervisor` for the run, in a session of its own
    (so it outlives this process and a Ctrl-C in this terminal); its stderr goes to the run's
    supervisor log. Returns the Popen."""
    with open(store.run_dir(run_id) / SUPERVISOR_LOG, "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "amlocal.backends.local.supervisor",
             "--home", str(store.home), *options, run_id],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True)


def _adoptable(record):
    """The script started (or had ended): there is something to follow or to collect."""
    return record["executor"] in _SCRIPT_EXECUTORS and (
        record["status"] in (run_status.RUNNING, run_status.FINALIZING)
        or (record["status"] == run_status.CANCEL_REQUESTED and record["started_at"] is not None))


def reconcile_run(store, run_id):
    """Adopt or end a run whose driver died; return True if it was ended (its nodes freed)."""
    record = store.get_run(run_id)
    if not driver_gone(record):
        return False
    if _adoptable(record):
        # This process holds the run until the supervisor it starts takes it over from it (the
        # supervisor's own compare-and-set): if this process dies first, the next look adopts.
        if claim_run(store, run_id, record["driver_pid"], os.getpid()):
            try:
                start_supervisor(store, run_id, "--adopt-from", str(os.getpid()))
                return False
            except OSError:
                pass  # no process to adopt it: ended below, as before adoption existed
        else:
            return False  # another process adopted it first
    return _end_run(store, run_id, record)


def _end_run(store, run_id, record):
    if record["executor"] == "docker":
        try:
            from amlocal.backends.local.docker_executor import DockerExecutor
            DockerExecutor().remove_leftovers(run_id)
        except Exception:  # the engine may be gone too; the record must still be fixed
            pass
    ComputeTargets(store).release(run_id)
    if store.get_status(run_id) == run_status.CANCEL_REQUESTED:
        store.try_set_status(run_id, run_status.CANCELED, error="Canceled by request")
    else:
        before = ", before its script started" if record["executor"] in _SCRIPT_EXECUTORS else ""
        store.try_set_status(
            run_id, run_status.FAILED,
            error=f"the amlocal process driving this run (pid {record['driver_pid']}) exited "
                  f"while the run was {record['status']}{before}")
    return True


def reconcile_blockers(store, target):
    """Free the nodes of `target` held by runs that ended or whose driver is gone for good."""
    with store.transaction() as conn:
        holders = [row["run_id"] for row in conn.execute(
            "SELECT DISTINCT run_id FROM nodes WHERE target = ? AND run_id IS NOT NULL", (target,))]
    freed = []
    for run_id in holders:
        if run_status.is_terminal(store.get_status(run_id)):
            ComputeTargets(store).release(run_id)  # its driver died between ending and releasing
            freed.append(run_id)
        elif reconcile_run(store, run_id):
            freed.append(run_id)
    return freed
