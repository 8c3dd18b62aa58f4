"""The process executor: the script runs as a subprocess of the current Python, from a snapshot copy.

For hosts without Docker (a GPU box without the NVIDIA container runtime, CI without an engine).
There is no image: Preparing checks the interpreter, and the run uses whatever is installed in it.
"""

import importlib.metadata
import os
import re
import resource
import subprocess
import sys
import time

from amlocal.backends.local import distributed
from amlocal.backends.local.compute import combine_node_resources
from amlocal.backends.local.jobs import Job, Prepared, ScriptVanished
from amlocal.backends.local.processes import process_alive, stop_process_group
from amlocal.backends.local.run_endpoint import loopback_listener
from amlocal.backends.local.run_settings import process_settings
from amlocal.backends.local.script_output import (EXIT_STATUS_FILE, follow_output,
                                                   prepare_output_file)
from amlocal.backends.history.snapshot import copy_working_directory
from amlocal.errors import UserInputError

# The last line of a traceback that ran out of memory: MemoryError, numpy's _ArrayMemoryError, ...
_MEMORY_ERROR_LINE = re.compile(r"[\w.]*MemoryError\b")
ADOPTED_POLL_S = 0.1


class ProcessJob(Job):
    """The script's launcher (the leader of the script's process group, see amlocal_launch.py).

    The driver that started it waits for it as its parent; a driver that adopted it is not its
    parent and watches the exit status file the launcher writes instead. Either way the exit
    code is the script's, as the launcher recorded it.
    """

    def __init__(self, pid, run_dir, on_line, process=None, memory_limit=None, spec=None):
        self.pid = pid
        self.run_dir = run_dir
        self.spec = spec  # a distributed run's (its ranks' logs and exit statuses), else None
        self.process = process
        self.memory_limit = memory_limit
        self._memory_error_seen = False
        self._exit_status = run_dir / EXIT_STATUS_FILE

        def watch_for_memory_error(line):
            if memory_limit and _MEMORY_ERROR_LINE.match(line):
                self._memory_error_seen = True
            on_line(line)

        output = follow_output(run_dir, watch_for_memory_error)
        if spec is not None and spec.distribution is not None:
            output = distributed.RankOutputs(output, run_dir, spec)
        super().__init__(wait_for_exit=self._wait_for_exit, output=output)

    def _wait_for_exit(self):
        if self.process is not None:
            returncode = self.process.wait()
        else:
            while process_alive(self.pid) and not self._exit_status.exists():
                time.sleep(ADOPTED_POLL_S)
            returncode = None
        try:
            return int(self._exit_status.read_text())
        except (OSError, ValueError):
            if returncode is None:
                raise ScriptVanished(f"the script's process (pid {self.pid}) ended without "
                                     "recording an exit status (it was killed)") from None
            return returncode  # the launcher itself was killed (SIGKILL after the grace period)

    def _has_exited(self):
        if self.process is not None:
            return self.process.poll() is not None
        return not process_alive(self.pid)

    def termination_reason(self):
        if self._memory_error_seen and self.exit_code != 0:
            return (f"out of memory: the script exceeded its memory limit of "
                    f"{self.memory_limit / 2**30:.1f} GiB (MemoryError; the limit is on each of "
                    "its processes' data, RLIMIT_DATA)")
        return None

    def failed_rank(self):
        if self.spec is None or self.spec.distribution is None:
            return None
        return distributed.failed_rank(self.run_dir, self.spec)

    def identity(self):
        return {"script_pid": self.pid}

    def stop(self, grace_s):
        stop_process_group(self.pid, grace_s, exited=self._has_exited)

    def kill(self):
        stop_process_group(self.pid, 0, exited=self._has_exited)


class ProcessExecutor:
    name = "process"

    def __init__(self, python=None):
        self.python = python or sys.executable

    def prepare(self, spec, on_line, should_cancel):
        """Check that this Python has what the run's spec (a RunSpec) asks pip for."""
        missing = missing_packages(spec.environment.pip_packages)
        if missing:
            raise UserInputError(missing_packages_message(missing, self.python))
        if spec.distribution is not None and spec.distribution.kind == "mpi":
            distributed.require_mpirun(self.python)
        version = ".".join(map(str, sys.version_info[:3]))
        return Prepared(image=None, detail=f"no image: Python {version} at {self.python}")

    def start(self, run, runtime_dir, prepared, on_line, resources=None, endpoint=None):
        """Start the script of `run` (a jobs.LocalRun) as a subprocess, confined to its node;
        `endpoint` (a run_endpoint.RunEndpoint) is served for it on a free loopback port."""
        run_dir = run.run_dir
        working_dir = run_dir / "wd"
        copy_working_directory(run_dir / "snapshot", working_dir)
        prepare_output_file(run_dir)
        for mapped in ("outputs", "logs"):
            (working_dir / mapped).symlink_to(run_dir / mapped, target_is_directory=True)
        listeners = []  # handed to the launcher: nobody can take the ports
        if endpoint is not None:
            listeners = [loopback_listener(), loopback_listener()]
            api_port, blob_port = (listener.getsockname()[1] for listener in listeners)
            endpoint.serve(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{blob_port}")
        relay_fds = [listener.fileno() for listener in listeners]
        program = variables = None
        if run.spec.distribution is not None:  # every rank a process of this host
            program, variables = distributed.process_launch(self.python, run, runtime_dir)
            distributed.prepare_rank_outputs(run_dir, run.spec)
            if isinstance(resources, tuple):  # the nodes' shares together
                resources = combine_node_resources(list(resources))
        settings = process_settings(run, python=self.python, working_dir=working_dir,
                                    runtime_dir=runtime_dir, base_environment=os.environ,
                                    endpoint=endpoint, relay_fds=relay_fds, program=program,
                                    extra=variables)
        cores = memory_limit = None
        if resources is not None:
            if resources.cpuset or resources.nano_cpus:
                # A node of a sized target: pin the script to the node's cores and show it only
                # the node's GPUs (on `local` it keeps the CUDA_VISIBLE_DEVICES it was given).
                if resources.cpuset:
                    cores = {int(core) for core in resources.cpuset.split(",")}
                settings["env"]["CUDA_VISIBLE_DEVICES"] = ",".join(resources.gpu_ids)
            if not (run.spec.use_gpu or resources.gpu_ids):
                # CUDA maps far more than the GPU's memory at start; a data limit could break
                # it, so only a run that sees no GPU gets one.
                memory_limit = resources.memory_bytes
        # No pipe to this process: the launcher writes the script's output to its file, so the
        # script outlives a killed driver. A session of its own keeps the terminal's Ctrl-C
        # (meant for amlocal, which cancels the run) away from the script.
        try:
            process = subprocess.Popen(settings["args"], cwd=settings["cwd"], env=settings["env"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True,
                                       pass_fds=relay_fds,
                                       preexec_fn=_confinement(cores, memory_limit))
        finally:
            for listener in listeners:
                listener.close()  # the launcher has its own
        return ProcessJob(process.pid, run_dir, on_line, process=process, memory_limit=memory_limit,
                          spec=run.spec)

    def attach(self, run, on_line):
        """The job of a run (a jobs.LocalRun) started by a driver that died (None: its script is
        gone for good)."""
        pid = run.script_pid
        if not pid or not (process_alive(pid) or (run.run_dir / EXIT_STATUS_FILE).exists()):
            return None
        return ProcessJob(pid, run.run_dir, on_line, spec=run.spec)


def _confinement(cores, memory_limit):
    """What the script's process applies to itself before it starts (None: nothing).

    The memory limit is RLIMIT_DATA: since Linux 4.7 it counts every private writable mapping
    (heap, anonymous mmap, thread stacks), so an allocation past it fails with MemoryError, while
    reserved but inaccessible address space (malloc arenas) does not count as it would with
    RLIMIT_AS. It is per process (each data-loader worker gets its own), inherited by children.
    """
    if not cores and not memory_limit:
        return None

    def in_the_child():
        if cores:
            os.sched_setaffinity(0, cores)
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
    return in_the_child


def missing_packages(requirements):
    """The pip requirements whose distribution is not installed in this Python.

    The process executor installs nothing (it would change the user's own environment), so it
    checks that what the run asks for is already there; versions are not compared.
    """
    missing = []
    for requirement in requirements:
        name = re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0]
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def missing_packages_message(missing, python):
    return (f"the process executor runs the script with {python}, which lacks "
            f"{', '.join(missing)}: install them there (pip install {' '.join(missing)}) or use "
            "the docker executor")
