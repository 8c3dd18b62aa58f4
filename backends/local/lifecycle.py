"""Driving one local run through Azure ML's stages, whichever executor runs the script.

    Preparing       status Preparing   the executor finds or builds the environment
    Scaling         status Queued      the run waits its turn for nodes of its compute target
    Running         status Running     the script runs; output and metrics stream into history
    PostProcessing  status Finalizing  ./outputs collected, the last metrics read, scratch removed

Then Completed (exit code 0, no Run.fail()), Failed (with the reason: exit code and the log's
tail, out of memory, the engine lost, ...) or Canceled (a cancel request from any process, or the
run's max_run_duration_seconds passed). Requests are seen through the run history, so `amlocal runs
cancel` in another terminal stops a run this process drives. On a low-priority target a preempted
node sends the run back to the queue (Running -> Queued) to run again from the start, keeping what
it wrote to ./outputs, up to AMLOCAL_MAX_PREEMPTIONS times.

The script's output goes to a file of the run's, which the driver copies into the driver log
(script_output.py): no pipe ties the script to this process. So if the driving process dies,
another one adopts the run (`adopt()`, started by recovery.py) and follows it to its end.
"""

import errno
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from amlocal.backends import status as run_status
from amlocal.backends.base import LogLine, StageFinished, StageStarted, StatusChanged, ignore_event
from amlocal.backends.local.compute import ComputeTargets, combine_node_resources, node_resources
from amlocal.backends.local.distributed import failure_message, rank_log
from amlocal.backends.local.jobs import LocalRun, Prepared
from amlocal.backends.local.queue_wake import QueueWaiter
from amlocal.backends.local.recovery import reconcile_blockers
from amlocal.backends.local.script_output import OUTPUT_DIR, append_note
from amlocal.backends.history.store import BUILD_LOG, DRIVER_LOG, not_run_files
from amlocal.backends.local.telemetry import end_open_children
from amlocal.backends.local.telemetry import ingest as ingest_telemetry
from amlocal.errors import AmlocalError, IllegalTransitionError
from amlocal.validation import setting

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 64 << 10
# Less free space than this where the run history lives counts as a full disk.
DISK_LOW_WATER_BYTES = 1 << 20


def stop_grace_s():
    """SIGTERM, then this long before SIGKILL, when a run is canceled, times out or is preempted."""
    return setting("AMLOCAL_STOP_GRACE_S", 10.0, 0, 86400)


def queue_poll_s():
    """How long a queued run waits for a wake before it looks at the queue again anyway (a driver
    that died frees its nodes without waking anyone; recovery finds them on the next look)."""
    return setting("AMLOCAL_QUEUE_POLL_S", POLL_INTERVAL_S, 0.01, 60)


def max_preemptions():
    """How often a preempted run is queued again before it fails."""
    return setting("AMLOCAL_MAX_PREEMPTIONS", 3, 0, 1000, whole=True)


class _LogWriter:
    """Appends lines to the build log (opened on the first line, so unused logs never appear).

    A line that cannot be written (the disk is full) is still shown to the user; the first such
    error is kept in `error` for the driver to act on, and the log file is not written further.
    """

    def __init__(self, path, on_line):
        self.path = path
        self.on_line = on_line
        self.error = None
        self._handle = None

    def __call__(self, line):
        if self.error is None:
            try:
                if self._handle is None:
                    self._handle = open(self.path, "a", encoding="utf-8", buffering=1)
                self._handle.write(line + "\n")
            except OSError as error:
                self.error = error
        self.on_line(line)

    def close(self):
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass


class _CancelRequested(Exception):
    """The run was asked to stop (by any process, or by its own time limit)."""

    def __init__(self, reason="Canceled by request"):
        super().__init__(reason)
        self.reason = reason


class _Preempted(Exception):
    """The run's low-priority node was taken away."""


class RunDriver:
    """Drives one run that is in NotStarted to a terminal status. Use once: `drive()`."""

    def __init__(self, store, run_id, executor, on_event=ignore_event):
        self.store = store
        self.run_id = run_id
        self.executor = executor
        self.on_event = on_event
        self.run_dir = store.run_dir(run_id)
        self.compute = ComputeTargets(store)
        self.run = None  # the LocalRun, its typed spec read once from the record when driving starts
        self.job = None
        self.endpoint = None  # the emulator served to the script while it runs (run_endpoint.py)
        self.system_metrics = None  # its CPU, memory and GPU use, sampled (system_metrics.py)
        self._killed = False
        self._open_stage = None  # a stage whose end could not be recorded (the disk was full)
        self._requeued = False  # a preempted run runs its Scaling and Running stages again
        self._failed_rank = None  # (rank, exit code) when a distributed run's rank failed

    def kill(self):
        """Stop waiting for a canceled script's grace period: SIGKILL it now (a second Ctrl-C)."""
        self._killed = True
        if self.job is not None:
            self.job.kill()

    # -- small pieces ---------------------------------------------------------------------------

    def _emit(self, event):
        self.on_event(event)

    def _cancel_requested(self):
        return self.store.get_status(self.run_id) == run_status.CANCEL_REQUESTED

    def _advance(self, new_status, **fields):
        try:
            self.store.set_status(self.run_id, new_status, **fields)
        except IllegalTransitionError:
            if self._cancel_requested():
                raise _CancelRequested() from None
            raise
        self._emit(StatusChanged(self.run_id, new_status))

    @contextmanager
    def _stage_of(self, name, detail="", resumed=False):
        """Record a stage's start (unless `resumed`: an adopted run's stage is open already) and
        end; its end status follows how the block ended."""
        self._open_stage = name
        if not resumed:
            self.store.start_stage(self.run_id, name, detail, requeued=self._requeued)
            self._emit(StageStarted(self.run_id, name, detail))
        outcome = {"status": run_status.STAGE_COMPLETED, "detail": None}
        try:
            yield outcome
        except _Preempted:
            outcome["status"] = run_status.STAGE_PREEMPTED
            raise
        except BaseException as error:
            outcome["status"] = (run_status.STAGE_CANCELED if self._canceled_by(error)
                                 else run_status.STAGE_FAILED)
            raise
        finally:
            duration = self.store.finish_stage(self.run_id, name, outcome["status"], outcome["detail"])
            self._open_stage = None
            self._emit(StageFinished(self.run_id, name, outcome["status"], duration,
                                     outcome["detail"] or detail))

    def _canceled_by(self, error):
        if isinstance(error, _CancelRequested):
            return True
        try:
            return self._cancel_requested()
        except (OSError, sqlite3.Error):  # the history may be unreadable (a full disk)
            return False

    def _disk_full(self):
        return self.store.free_bytes() < DISK_LOW_WATER_BYTES

    def _disk_full_error(self, while_what):
        """Stop the script, give back the reserved space, and say what happened."""
        if self.job is not None and not self.job.wait(0):
            self.job.kill()
        self.store.free_reserve()
        return AmlocalError(
            f"disk full while {while_what} ({self.store.home} has "
            f"{self.store.free_bytes() / 2**20:.1f} MB free after amlocal gave back its reserve); "
            f"what the run wrote so far is kept in {self.run_dir}/outputs and logs (its driver "
            "log may be incomplete)")

    def _emit_driver_line(self, line):
        self._emit(LogLine(self.run_id, "driver", line))

    def _log_tail(self, log=DRIVER_LOG):
        path = self.run_dir / log
        if not path.exists():
            return ""
        with open(path, "rb") as log:  # the end only: a driver log can be hundreds of MB
            log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            end = log.read().decode(errors="replace")
        return "\n".join(end.splitlines()[-LOG_TAIL_LINES:])

    # -- the stages -----------------------------------------------------------------------------

    def drive(self):
        """Run every stage; return the terminal status. Never raises for a run that failed."""
        return self._guarded(self._all_stages)

    def adopt(self):
        """Take over a run whose driving process died (see recovery.py): follow its script to
        its end, or collect its outputs if the script had ended, and finish it as drive() would.
        A script that vanished without a trace (its container or process gone, no exit status)
        fails the run with the reason. Returns the terminal status."""
        return self._guarded(self._adopted_stages)

    def _read_run(self):
        """The run's record, and the run (with its typed spec) that it describes."""
        record = self.store.get_run(self.run_id)
        self.run = LocalRun.from_record(record, self.run_dir)
        return record

    def _all_stages(self):
        record = self._read_run()
        target = self.compute.get(record["compute"])
        self._advance(run_status.PREPARING)
        with self._stage_of("Preparing") as outcome:
            for note in self.run.spec.environment.build_notes:
                self._build_log(note)
            prepared = self.executor.prepare(self.run.spec, self._build_log, self._cancel_requested)
            outcome["detail"] = prepared.detail
        self.store.update_run(self.run_id, image=prepared.image)
        return self._run_and_finish(target, prepared)

    def _adopted_stages(self):
        record = self._read_run()
        if record["status"] == run_status.FINALIZING:  # the script had ended and was recorded
            post_processing = next(stage for stage in record["stages"]
                                   if stage["name"] == "PostProcessing")
            return self._post_process_and_finish(
                record["exit_code"], resumed=post_processing["status"] == run_status.STAGE_RUNNING)
        self.job = self.executor.attach(self.run, self._emit_driver_line)
        if self.job is None:
            self._open_stage = "Running"
            where = (f"its container {self.run.container_id or ''}".rstrip()
                     if self.executor.name == "docker" else f"its process {self.run.script_pid}")
            raise AmlocalError(
                f"the amlocal process driving this run exited, and the script is gone without a "
                f"trace: {where} is gone and recorded no exit status")
        from amlocal.backends.local.run_endpoint import RunEndpoint  # the emulator: only for runs

        self.endpoint = RunEndpoint(self.store.home, self.run).resume()  # at the same address
        return self._run_and_finish(self.compute.get(record["compute"]),
                                    Prepared(image=record["image"], detail=""), adopted=True,
                                    started_at=record["started_at"])

    def _guarded(self, stages):
        """Run `stages` and record how the run ended, whatever happened."""
        self._build_log = _LogWriter(self.run_dir / BUILD_LOG, lambda line: self._emit(
            LogLine(self.run_id, "build", line)))
        try:
            return stages()
        except _CancelRequested as cancel:
            return self._finish_canceled(cancel.reason)
        except AmlocalError as error:
            self._fail(str(error))
            return run_status.FAILED
        except (OSError, sqlite3.Error) as error:
            if not (_is_disk_full(error) or self._disk_full()):
                self._fail(f"amlocal failed while driving the run: {type(error).__name__}: {error}")
                raise
            # The reserve is given back first, so that the failure itself can be recorded.
            failure = self._disk_full_error(f"recording the run ({type(error).__name__}: {error})")
            self._fail(str(failure))
            return run_status.FAILED
        except BaseException as error:
            self._fail(f"amlocal failed while driving the run: {type(error).__name__}: {error}")
            raise
        finally:
            self._build_log.close()
            self._release_job()
            self.compute.release(self.run_id)
            self._remove_scratch()
            try:
                status = self.store.get_status(self.run_id)
                if run_status.is_terminal(status):
                    end_open_children(self.store, self.run_id, status)
                    shutil.rmtree(self.run_dir / OUTPUT_DIR, ignore_errors=True)  # in the log now
            except (OSError, sqlite3.Error):
                pass  # the history is unwritable (a full disk); the run's own end is recorded

    def _run_and_finish(self, target, prepared, adopted=False, started_at=None):
        """Queue, run the script (or, `adopted`, follow the one running since `started_at`) and
        finish the run."""
        running = f"{self.run.spec.script} on {self.executor.name}"
        while True:
            if not adopted:
                resources = self._queue_for_nodes(target)
                self._advance(run_status.RUNNING)
            try:
                with self._stage_of("Running", running, resumed=adopted) as outcome:
                    if adopted:
                        exit_code = self._follow_script(started_at)
                    else:
                        exit_code = self._run_script(prepared, resources)
                    outcome["detail"] = f"{running}: exit code {exit_code}"
                    if exit_code != 0:
                        outcome["status"] = run_status.STAGE_FAILED
                        self._failed_rank = self.job.failed_rank()
            except _Preempted:
                self._requeue_after_preemption()
                adopted = False
                self._requeued = True
                continue
            break
        # The script has ended: its nodes go to the next queued run now, not once the outputs
        # are collected (which needs no node).
        self.compute.release(self.run_id)
        return self._post_process_and_finish(exit_code)

    def _queue_for_nodes(self, target):
        self._advance(run_status.QUEUED)
        with self._stage_of("Scaling") as outcome:
            nodes, waited = self._wait_for_nodes(target)
            outcome["detail"] = (
                f"{len(nodes)} node(s) requested, {len(nodes)} allocated on "
                f"{target.name} after waiting {waited:.2f} s: "
                + ", ".join(node_id for node_id, _slot in nodes))
        per_node = [node_resources(target, slot, self.compute.host) for _node, slot in nodes]
        if self.run.spec.distribution is not None:  # a container (or rank group) per node
            return tuple(per_node)
        return combine_node_resources(per_node, host=self.compute.host)

    def _post_process_and_finish(self, exit_code, resumed=False):
        """Collect the outputs (`resumed`: an adopted run's PostProcessing had started) and end."""
        if self.store.get_status(self.run_id) != run_status.FINALIZING:  # else adopted there
            # Recorded before PostProcessing, so that a driver adopting the run from here knows it.
            self.store.update_run(self.run_id, exit_code=exit_code)
            self._advance(run_status.FINALIZING)
        with self._stage_of("PostProcessing", resumed=resumed) as outcome:
            outcome["detail"] = self._post_process()
        return self._finish(exit_code)

    def _wait_for_nodes(self, target):
        """Wait at the queue until the target gives this run its nodes; return them, and seconds
        waited. A run freeing nodes of the target wakes the wait (queue_wake.py); the poll
        interval bounds it when no wake comes (a driver that died frees nothing itself)."""
        started = time.monotonic()
        shown = None
        next_sweep = started
        poll_s = queue_poll_s()
        # Opened before the first look at the queue, so that a release in between still wakes us.
        with QueueWaiter(self.store.home, target.name) as waiter:
            while True:
                nodes = self.compute.try_allocate(self.run_id)
                if nodes:
                    return nodes, time.monotonic() - started
                if self._cancel_requested():
                    raise _CancelRequested()
                detail = self.compute.waiting_detail(self.run_id)
                if detail != shown:  # what `runs show` and get_detailed_status() report meanwhile
                    self.store.set_stage_detail(self.run_id, "Scaling", detail)
                    shown = detail
                if time.monotonic() >= next_sweep:
                    # Nodes held by a run whose driver died are freed: they do not block the queue.
                    reconcile_blockers(self.store, target.name)
                    next_sweep = time.monotonic() + 2
                waiter.wait(poll_s)

    def _run_script(self, prepared, resources):
        (self.run_dir / DRIVER_LOG).touch()  # every run that ran has a driver log, as on Azure
        from amlocal.backends.local.run_endpoint import RunEndpoint, in_run_sdk  # only for runs

        self.endpoint = RunEndpoint(self.store.home, self.run) if in_run_sdk() else None
        self.job = self.executor.start(self.run, RUNTIME_DIR, prepared, self._emit_driver_line,
                                       resources, endpoint=self.endpoint)
        self.store.update_run(self.run_id, **self.job.identity())
        from amlocal.backends.local.system_metrics import SystemMetrics

        if isinstance(resources, tuple):  # a distributed run's nodes: sampled together
            resources = combine_node_resources(list(resources), host=self.compute.host)
        self.system_metrics = SystemMetrics(self.store, self.run_id, self.job, resources).start()
        return self._follow_script(time.time())

    def _follow_script(self, started_at):
        """Wait for the job to end (its output copied), ingesting telemetry and acting on cancel
        requests, the time limit and preemption meanwhile; return the script's exit code."""
        limit = self.run.spec.max_run_duration_seconds
        while not self.job.wait(POLL_INTERVAL_S):
            self._check_output(ended=False)
            ingest_telemetry(self.store, self.run_id)
            if self._cancel_requested():
                self._stop_job()
                raise _CancelRequested()
            if limit and time.time() - started_at > limit:
                self.store.try_set_status(self.run_id, run_status.CANCEL_REQUESTED)
                self._stop_job()
                raise _CancelRequested(f"Run exceeded max_run_duration_seconds ({limit} s) and "
                                       "was canceled")
            if "preempted" in self.compute.node_states(self.run_id):
                self._stop_job()
                raise _Preempted()
        self._check_output(ended=True)
        ingest_telemetry(self.store, self.run_id)
        if self.job.vanished:
            raise AmlocalError(f"the script is gone without a trace: {self.job.vanished}")
        if self.job.infrastructure_error:
            raise AmlocalError(f"infrastructure failure: lost the {self.executor.name} engine while "
                               f"the script ran ({self.job.infrastructure_error})")
        # Asked even after exit code 0: the executor may know the script was cut short.
        reason = self.job.termination_reason()
        if reason:
            raise AmlocalError(reason)
        return self.job.exit_code

    def _check_output(self, ended):
        """A full disk stops the run; any other loss of the script's output is said at the end
        of the log, once the script has ended."""
        error = self.job.output.error
        if (error is not None and _is_disk_full(error)) or self._disk_full():
            raise self._disk_full_error("the script ran")
        if error is not None and ended:
            with open(self.run_dir / DRIVER_LOG, "a", encoding="utf-8") as log:
                log.write(f"\n[amlocal] this driver log is incomplete: the script's output could "
                          f"not be copied ({type(error).__name__}: {error})\n")

    def _stop_job(self):
        self.job.stop(0 if self._killed else stop_grace_s())

    def _requeue_after_preemption(self):
        preemptions = self.store.get_run(self.run_id)["preemptions"] + 1
        self._release_job()
        self._remove_scratch()
        self.compute.release(self.run_id)
        allowed = max_preemptions()
        if preemptions > allowed:
            raise AmlocalError(f"the run's low-priority node was preempted {preemptions} times "
                               f"(AMLOCAL_MAX_PREEMPTIONS is {allowed})")
        self.store.update_run(self.run_id, preemptions=preemptions)
        # Into the script's output, so that the driver log (its copy) has the line in its place.
        append_note(self.run_dir, f"[amlocal] the run's low-priority node was preempted "
                                  f"(preemption {preemptions}); the run is queued again and "
                                  "restarts from the beginning, ./outputs kept")
        self.compute.requeue_first(self.run_id)

    def _post_process(self):
        self._release_job()
        if self._disk_full():
            raise self._disk_full_error("its outputs were collected")
        ingest_telemetry(self.store, self.run_id)
        recorded, skipped = self.store.record_files(self.run_id)
        outputs = [size for _run, name, size, _sha in recorded if name.startswith("outputs/")]
        return (f"{len(outputs)} file(s), {sum(outputs) / 2**20:.2f} MB in ./outputs kept in run "
                f"history{not_run_files(skipped)}")

    def _finish(self, exit_code):
        record = self.store.get_run(self.run_id)
        if exit_code != 0:
            if self._failed_rank is not None:  # a distributed run: the rank that failed it
                rank, rank_code = self._failed_rank
                error = failure_message(self.run.spec, rank, rank_code,
                                        self._log_tail(rank_log(rank)))
            else:
                error, tail = f"{self.run.spec.script} exited with code {exit_code}", self._log_tail()
                error = f"{error}; last lines of its log:\n{tail}" if tail else error
            self._advance(run_status.FAILED, exit_code=exit_code, error=error)
            return run_status.FAILED
        if record["error"]:  # the script called Run.fail()
            self._advance(run_status.FAILED, exit_code=exit_code)
            return run_status.FAILED
        self._advance(run_status.COMPLETED, exit_code=exit_code)
        return run_status.COMPLETED

    def _finish_canceled(self, reason):
        self._release_job()
        ingest_telemetry(self.store, self.run_id)
        # A reason given with the cancel request (a sweep's policy, say) is kept.
        requested = self.store.get_run(self.run_id)["error"]
        self.store.set_status(self.run_id, run_status.CANCELED, error=requested or reason)
        self._emit(StatusChanged(self.run_id, run_status.CANCELED))
        return run_status.CANCELED

    def _fail(self, message):
        exit_code = self.job.exit_code if self.job is not None else None
        self._release_job()
        current = self.store.get_status(self.run_id)
        target = run_status.CANCELED if current == run_status.CANCEL_REQUESTED else run_status.FAILED
        if self._open_stage is not None:
            self.store.finish_stage(self.run_id, self._open_stage, run_status.STAGE_FAILED)
            self._open_stage = None
        if not run_status.is_terminal(current):
            self.store.set_status(self.run_id, target, error=message, exit_code=exit_code)
            self._emit(StatusChanged(self.run_id, target))

    def _release_job(self):
        if self.system_metrics is not None:  # before the container that it reads goes
            self.system_metrics.stop()
            self.system_metrics = None
        if self.job is not None:
            if not self.job.wait(0):
                self._stop_job()
                self.job.wait()  # stopped: what it wrote until then is copied to the log
            self.job.cleanup()
            self.job = None
        if self.endpoint is not None:  # the script has ended: nobody is left to serve
            self.endpoint.stop()
            self.endpoint = None

    def _remove_scratch(self):
        shutil.rmtree(self.run_dir / "wd", ignore_errors=True)


def _is_disk_full(error):
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return "full" in str(error)  # SQLite: "database or disk is full"
