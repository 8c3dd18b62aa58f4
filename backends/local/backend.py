"""The local backend: runs on this machine, history under $AMLOCAL_HOME."""

import contextlib
import dataclasses
import os
import sys
import threading
import time
import uuid
from pathlib import Path

from amlocal.backends import status as run_status
from amlocal.backends.base import (LOG_TAIL_LINES, Backend, LogLine, RecordedSpec, RunHandle,
                                   StageFinished, StageStarted, StatusChanged, download_target,
                                   downloads_under, ignore_event, tail_lines)
from amlocal.backends.local.compute import ComputeTargets, target_has_gpus, target_has_real_gpus
from amlocal.backends.local.lifecycle import (POLL_INTERVAL_S, RunDriver, max_preemptions,
                                               stop_grace_s)
from amlocal.backends.local.opendatasets import with_open_datasets
from amlocal.backends.local.recovery import reconcile_run, start_supervisor
from amlocal.backends.local.system_metrics import interval_s as system_metrics_interval_s
from amlocal.backends.history.run_folder import write_file
from amlocal.backends.history.snapshot import snapshot_files, take_snapshot
from amlocal.backends.history.store import BUILD_LOG, DRIVER_LOG, RunStore, run_details
from amlocal.backends.recipes import gpu_build, recipe_dir
from amlocal.errors import IllegalTransitionError, RunRecordCorruptedError, UserInputError

SWEEP_EXECUTOR = "sweep"  # the executor name of a sweep's parent run: it runs no script itself
READ_CHUNK_BYTES = 4 << 20  # how much of a followed log is read at once


class LocalBackend(Backend):
    name = "local"

    def __init__(self, home=None, docker_client=None):
        self.store = RunStore(home)
        self._docker_client = docker_client

    @property
    def home(self):
        return self.store.home

    def models(self):
        from amlocal.backends.registries import HistoryModelRegistry

        return HistoryModelRegistry(self.store)

    def compute_targets(self):
        from amlocal.backends.local.registries import LocalComputeTargets

        return LocalComputeTargets(self.store)

    # The executors (and with docker_executor, engine and images the Docker SDK) are imported
    # where a run needs them, not with this module: reading the history (`amlocal runs list`)
    # should not pay for them.

    def _executor(self, name):
        if name == "docker":
            from amlocal.backends.local.docker_executor import DockerExecutor

            return DockerExecutor(self._docker_client)
        from amlocal.backends.local.process_executor import ProcessExecutor

        return ProcessExecutor()

    def _choose_executor(self, requested):
        """docker when asked (the engine must answer) or, unasked, when an engine answers."""
        from amlocal.backends.local import engine

        if requested == "process":
            return "process"
        if requested == "docker":
            if self._docker_client is None:
                self._docker_client = engine.connect()
            return "docker"
        if self._docker_client is not None or engine.engine_answers():
            return "docker"
        return "process"

    def submit(self, spec, on_event=ignore_event, detach=False, run_id=None, parent_id=None):
        """Start a run of `spec` (see Backend.submit) under a new id, or `run_id` (a plain id no
        run has: a sweep's child, a run whose id azureml-core chose); `parent_id` names its parent."""
        spec = spec.validated()
        if run_id is not None:
            self.store.check_new_run_id(run_id)
        # A bad AMLOCAL_* setting is refused before the run exists.
        stop_grace_s(), max_preemptions(), system_metrics_interval_s()
        executor_name = self._choose_executor(spec.executor)
        if executor_name == "docker":
            recipe_dir(spec.environment.recipe)
        else:
            from amlocal.backends.local import process_executor

            missing = process_executor.missing_packages(spec.environment.pip_packages)
            if missing:
                raise UserInputError(process_executor.missing_packages_message(missing,
                                                                               sys.executable))
        targets = ComputeTargets(self.store)
        target = targets.get(spec.compute)
        if spec.node_count > target.max_nodes:
            raise UserInputError(f"the run asks for {spec.node_count} nodes but {target.name} has "
                                 f"at most {target.max_nodes}")
        if spec.use_gpu and not target_has_gpus(target, targets.host):
            raise UserInputError(
                f"the run asks for a GPU (--gpu, use_gpu=True) but compute target {target.name!r} "
                f"has none on this host ({targets.host.describe()}): run on a GPU machine, or on "
                "a target of a GPU VM size created with --emulate-gpus to run its GPU work on the CPU")
        gpu_recipe = gpu_build(spec.environment.recipe)
        if (spec.use_gpu and executor_name == "docker" and gpu_recipe
                and target_has_real_gpus(target, targets.host)):
            # The framework's GPU build (CuPy on CUDA) for nodes that have real GPUs.
            spec = dataclasses.replace(spec, environment=dataclasses.replace(
                spec.environment, recipe=gpu_recipe))
        files = snapshot_files(spec.source_dir)
        spec = with_open_datasets(spec, files, self.home)
        # The run takes its place in the target's queue when it is created, so runs get their
        # nodes in the order they were submitted, however long each one's image takes to build.
        run_id = self.store.create_run(
            experiment=spec.experiment, executor=executor_name, compute=spec.compute,
            spec=spec.to_json(), driver_pid=None if detach else os.getpid(),
            fill_snapshot=lambda folder: take_snapshot(spec.source_dir, folder, files),
            also=lambda conn, run_id: targets.enqueue(conn, run_id, target.name, spec.node_count),
            run_id=run_id, parent_id=parent_id)
        if detach:
            self._start_supervisor(run_id)
            return LocalRunHandle(self, run_id)
        driver = RunDriver(self.store, run_id, self._executor(executor_name), on_event)
        # Completion is signalled by an Event rather than read from Thread.is_alive(): a join
        # interrupted by Ctrl-C can leave is_alive() wrongly False on CPython.
        finished = threading.Event()

        def drive():
            try:
                driver.drive()
            finally:
                finished.set()

        threading.Thread(target=drive, name=f"amlocal-run-{run_id}").start()
        return LocalRunHandle(self, run_id, driver=driver, driver_finished=finished)

    def _start_supervisor(self, run_id):
        """Hand a NotStarted run to a process of its own, which outlives this one (and a Ctrl-C
        in this terminal: it runs in a session of its own)."""
        try:
            supervisor = start_supervisor(self.store, run_id)
        except OSError as error:
            self.store.set_status(run_id, run_status.FAILED,
                                  error=f"could not start the process to drive the run: {error}")
            raise
        self.store.update_run(run_id, driver_pid=supervisor.pid)

    def submit_sweep(self, template, sweep, detach=True):
        """Start a hyperparameter sweep: a parent run of type hyperdrive whose children are runs of
        `template` (a RunSpec) with sampled hyperparameters. `sweep` holds the sampling, policy,
        primary metric and limits (HyperDriveConfig._sweep()). Returns the parent's handle."""
        template = template.validated()
        ComputeTargets(self.store).get(template.compute)  # a missing target is an error now
        files = snapshot_files(template.source_dir)
        spec = RecordedSpec(template, sweep=sweep).to_json()
        run_id = self.store.create_run(
            experiment=template.experiment, executor=SWEEP_EXECUTOR, compute=template.compute,
            spec=spec, driver_pid=None if detach else os.getpid(),
            fill_snapshot=lambda folder: take_snapshot(template.source_dir, folder, files),
            run_id=f"HD_{uuid.uuid4()}")
        self.store.update_tags(run_id, {"amlocal.run_type": "hyperdrive"})
        if detach:
            self._start_supervisor(run_id)
            return LocalRunHandle(self, run_id)
        self.drive(run_id)
        return LocalRunHandle(self, run_id)

    def drive(self, run_id, on_event=ignore_event):
        """Drive an existing NotStarted run in this process (what a detached supervisor does)."""
        record = self.store.get_run(run_id)
        self.store.update_run(run_id, driver_pid=os.getpid())
        if record["executor"] == SWEEP_EXECUTOR:
            from amlocal.backends.local.sweep import SweepDriver
            return SweepDriver(self, run_id).drive()
        return RunDriver(self.store, run_id, self._executor(record["executor"]), on_event).drive()

    def adopt(self, run_id):
        """Follow a run whose driver died to its end in this process (see recovery.py)."""
        record = self.store.get_run(run_id)
        return RunDriver(self.store, run_id, self._executor(record["executor"])).adopt()

    def get_run(self, run_id):
        self.store.get_status(run_id)
        return LocalRunHandle(self, run_id)

    def list_runs(self, experiment=None, limit=None):
        """Run details, newest first; a damaged run (its record, or its folder gone) appears as
        {id, experiment, corrupted}, so that one damaged run never hides the others."""
        listed = []
        for record in self.store.list_runs(experiment, limit):
            if "corrupted" not in record:
                try:
                    record = self.get_run(record["id"]).get_details()
                except RunRecordCorruptedError as error:
                    record = {"id": record["id"], "experiment": record["experiment"],
                              "corrupted": str(error)}
            listed.append(record)
        return listed


class LocalRunHandle(RunHandle):
    backend_name = LocalBackend.name

    def __init__(self, backend, run_id, driver=None, driver_finished=None):
        self.backend = backend
        self.store = backend.store
        self.id = run_id
        self._driver = driver  # the RunDriver, when this process drives the run
        self._driver_finished = driver_finished  # set when that driver is done

    def __repr__(self):
        return f"LocalRunHandle({self.id!r})"

    @property
    def run_dir(self):
        return self.store.run_dir(self.id)

    def get_status(self):
        self._reconcile()
        return self.store.get_status(self.id)

    def _driven_here(self):
        return self._driver_finished is not None and not self._driver_finished.is_set()

    def _reconcile(self):
        """Have a run whose driving process died adopted by a new one, or ended with the reason
        (recovery.reconcile_run)."""
        if not self._driven_here():
            reconcile_run(self.store, self.id)

    def get_details(self, refresh=True):
        self._reconcile()
        return run_details(self.store.get_run(self.id), self.run_dir)

    def wait(self, on_event=ignore_event, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._driver_finished is not None:
            # Driven here: its events already went to submit's on_event. Wait in short steps so
            # that Ctrl-C reaches the caller.
            while not self._driver_finished.wait(POLL_INTERVAL_S):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"run {self.id} is still {self.get_status()}")
            return self.get_details()
        for event in self.follow(deadline=deadline):
            on_event(event)
        return self.get_details()

    def follow(self, deadline=None, poll_interval=POLL_INTERVAL_S):
        """Events of a run driven elsewhere, read back from the run history until it ends.

        Raises TimeoutError once time.monotonic() passes `deadline`.
        """
        seen_stages = {}
        status = None
        logs = {"build": [self.run_dir / BUILD_LOG, 0], "driver": [self.run_dir / DRIVER_LOG, 0]}

        def new_lines(final=False):
            for source, log in logs.items():
                while True:  # in bounded reads: a log can grow by hundreds of MB between looks
                    offset, lines = _read_new_lines(log[0], log[1], final=final)
                    if offset == log[1]:
                        break
                    log[1] = offset
                    for line in lines:
                        yield LogLine(self.id, source, line)

        while True:
            record = self.store.get_run(self.id)
            for stage in record["stages"]:
                before = seen_stages.get(stage["name"])
                if (stage["status"] != run_status.STAGE_NOT_STARTED
                        and before in (None, run_status.STAGE_NOT_STARTED)):
                    yield StageStarted(self.id, stage["name"], stage["detail"])
                if stage["ended_at"] is not None and before not in run_status.STAGE_ENDINGS:
                    yield StageFinished(self.id, stage["name"], stage["status"],
                                        stage["duration_s"] or 0.0, stage["detail"])
                seen_stages[stage["name"]] = stage["status"]
            yield from new_lines()
            if record["status"] != status:
                status = record["status"]
                yield StatusChanged(self.id, status)
            if run_status.is_terminal(status):
                yield from new_lines(final=True)
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} is still {status}")
            time.sleep(poll_interval)
            self._reconcile()

    def stream_logs(self, follow=False):
        if not follow:
            path = self.run_dir / DRIVER_LOG
            if path.exists():
                with open(path, "rb") as log:
                    for line in log:
                        yield line.rstrip(b"\r\n").decode("utf-8", errors="replace")
            return
        for event in self.follow():
            if isinstance(event, LogLine) and event.source == "driver":
                yield event.line

    def cancel(self, force=False, reason=None):
        """Ask the run to stop; with force=True (a second Ctrl-C) a script this process runs is
        killed at once instead of after its grace period. `reason` becomes the run's error."""
        if run_status.is_terminal(self.store.get_status(self.id)):
            return
        self.store.try_set_status(self.id, run_status.CANCEL_REQUESTED,
                                  **({"error": reason} if reason else {}))
        if self.store.get_run(self.id)["spec"].get("interactive"):
            # Experiment.start_logging's run: nothing runs it, so nothing is left to stop.
            if self.store.try_set_status(self.id, run_status.CANCELED):
                with contextlib.suppress(IllegalTransitionError):  # it had not started
                    self.store.finish_stage(self.id, "Running", run_status.STAGE_CANCELED)
            return
        if force and self._driven_here():
            self._driver.kill()
        self._reconcile()

    def get_detailed_status(self):
        """{'status': ..., 'details': ...}: why a run waits, as Azure ML words it."""
        details = self.get_details()
        scaling = next(stage for stage in details["stages"] if stage["name"] == "Scaling")
        waiting = details["status"] == run_status.QUEUED and scaling["status"] == run_status.STAGE_RUNNING
        return {"status": details["status"], "details": scaling["detail"] if waiting else ""}

    def get_status_history(self):
        self.store.get_status(self.id)  # RunNotFoundError for a run that is gone
        return self.store.status_history(self.id)

    def get_log_tail(self, count=LOG_TAIL_LINES):
        lines, truncated = tail_lines(self.run_dir / DRIVER_LOG, count)
        return None if lines is None else {"name": DRIVER_LOG, "lines": lines,
                                           "truncated": truncated}

    def get_metrics(self):
        return self.store.get_metrics(self.id)

    def get_file_names(self):
        return self.store.file_names(self.id)

    def get_file_sizes(self):
        sizes = {}
        for name in self.get_file_names():
            try:
                sizes[name] = self.store.file_path(self.id, name).stat().st_size
            except (UserInputError, OSError):
                sizes[name] = None  # gone since it was listed
        return sizes

    def open_file(self, name):
        return self.store.open_verified_file(self.id, name)

    def register_model(self, model_name, model_path=None, **metadata):
        return self.backend.models().register_from_run(self.id, model_name, model_path, **metadata)

    def get_metric_records(self):
        return self.store.get_metric_records(self.id)

    def get_children(self):
        return [LocalRunHandle(self.backend, child) for child in self.store.children_of(self.id)]

    def set_tags(self, tags, remove=()):
        return self.store.update_tags(self.id, tags, remove)

    def add_properties(self, properties):
        return self.store.add_properties(self.id, properties)

    def download_file(self, name, output_file_path=None):
        """Copy run file `name` to output_file_path (default: its base name in the current
        folder; a folder: its base name there), atomically, after checking it against what
        PostProcessing recorded."""
        target = download_target(name, output_file_path)
        return self._download(name, target.parent, target.name)

    def download_files(self, prefix=None, output_directory=None, append_prefix=True):
        """Copy the run's files (those whose name starts with prefix) into output_directory,
        each under its name in the run (less the prefix, with append_prefix=False); nothing is
        written outside that folder, nor through a link in it."""
        root = Path(output_directory) if output_directory else Path.cwd()
        return [self._download(name, root, relative) for name, relative
                in downloads_under(self.get_file_names(), prefix, append_prefix)]

    def _download(self, name, folder, relative):
        with self.store.open_verified_file(self.id, name) as source:
            write_file(folder, relative, source)
        return folder / relative


def _read_new_lines(path, offset, final=False, most_bytes=READ_CHUNK_BYTES):
    """Complete lines appended to `path` since `offset`, from at most `most_bytes` (and a
    trailing partial line if final and nothing follows it); returns (new offset, lines)."""
    if not path.exists():
        return offset, []
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(most_bytes + 1)
    more = len(data) > most_bytes
    data = data[:most_bytes]
    if more or not final:
        complete = data.rfind(b"\n") + 1
        if complete or not more:  # a line longer than most_bytes comes in pieces
            data = data[:complete]
    lines = data.decode("utf-8", errors="replace").splitlines()
    return offset + len(data), lines
