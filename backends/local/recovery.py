"""Runs whose driving process died: found on the next look, stopped, and ended with the reason.

A local run is driven by one process (the `amlocal run` in a terminal, or a detached
supervisor). If that process is killed, nothing advances the run any more; whoever looks at the
run next (`runs list`, `runs show`, a run waiting for the same nodes) calls `reconcile_run`,
which stops what the run left behind (its container or its script's process group), gives its
nodes back, and ends it: Canceled if a cancel was asked for, else Failed with the reason. What
the script wrote to ./outputs and ./logs is already in the run history and stays there.
"""

from amlocal.backends import status as run_status
from amlocal.backends.local.compute import ComputeTargets
from amlocal.backends.local.processes import process_alive, stop_process_group

STOP_GRACE_S = 10


def driver_gone(record):
    """True when the run is not over and the process recorded as driving it has exited."""
    if run_status.is_terminal(record["status"]) or record["driver_pid"] is None:
        return False  # ended, or a detached run whose supervisor is being started
    return not process_alive(record["driver_pid"])


def reconcile_run(store, run_id):
    """End a run whose driver died; return True if it had to."""
    record = store.get_run(run_id)
    if not driver_gone(record):
        return False
    if record["executor"] == "docker":
        try:
            from amlocal.backends.local.docker_executor import DockerExecutor
            DockerExecutor().remove_leftovers(run_id)
        except Exception:  # the engine may be gone too; the record must still be fixed
            pass
    elif process_alive(record["script_pid"]):
        stop_process_group(record["script_pid"], STOP_GRACE_S,
                           exited=lambda: not process_alive(record["script_pid"]))
    ComputeTargets(store).release(run_id)
    if record["status"] == run_status.CANCEL_REQUESTED:
        store.try_set_status(run_id, run_status.CANCELED, error="Canceled by request")
    else:
        store.try_set_status(
            run_id, run_status.FAILED,
            error=f"the amlocal process driving this run (pid {record['driver_pid']}) exited "
                  f"while the run was {record['status']}")
    return True


def reconcile_blockers(store, target):
    """Free the nodes of `target` held by runs that ended or whose driver is gone."""
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
