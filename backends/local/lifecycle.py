"""Driving one local run through Azure ML's stages, whichever executor runs the script.

    Preparing       status Preparing   the executor finds or builds the environment
    Scaling         status Queued      a node of the compute target is allocated
    Running         status Running     the script runs; output and metrics stream into history
    PostProcessing  status Finalizing  ./outputs collected, the last metrics read, scratch removed

Then Completed (exit code 0, no Run.fail()), Failed (with exit code and the log's tail) or, after a
cancel request from any process, Canceled. Cancel requests are seen through the run history, so
`amlocal runs cancel` in another terminal stops a run this process drives.
"""

import shutil
from contextlib import contextmanager
from pathlib import Path

from amlocal.backends import status as run_status
from amlocal.backends.base import LogLine, StageFinished, StageStarted, StatusChanged, ignore_event
from amlocal.backends.local.store import BUILD_LOG, DRIVER_LOG
from amlocal.errors import AmlocalError, IllegalTransitionError

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
POLL_INTERVAL_S = 0.2
STOP_GRACE_S = 10
LOG_TAIL_LINES = 20


class _LogWriter:
    """Appends lines to a run log (opened on the first line, so unused logs never appear)."""

    def __init__(self, path, on_line):
        self.path = path
        self.on_line = on_line
        self._handle = None

    def __call__(self, line):
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8", buffering=1)
        self._handle.write(line + "\n")
        self.on_line(line)

    def close(self):
        if self._handle is not None:
            self._handle.close()


class _CancelRequested(Exception):
    """The run was asked to stop (by any process) while this one drove it."""


class RunDriver:
    """Drives one run that is in NotStarted to a terminal status. Use once: `drive()`."""

    def __init__(self, store, run_id, executor, on_event=ignore_event):
        self.store = store
        self.run_id = run_id
        self.executor = executor
        self.on_event = on_event
        self.run_dir = store.run_dir(run_id)
        self.job = None

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
    def _stage_of(self, name, detail=""):
        """Record a stage's start and end; its end status follows how the block ended."""
        self.store.start_stage(self.run_id, name, detail)
        self._emit(StageStarted(self.run_id, name, detail))
        outcome = {"status": "Completed", "detail": None}
        try:
            yield outcome
        except BaseException as error:
            canceled = isinstance(error, _CancelRequested) or self._cancel_requested()
            outcome["status"] = "Canceled" if canceled else "Failed"
            raise
        finally:
            duration = self.store.finish_stage(self.run_id, name, outcome["status"], outcome["detail"])
            self._emit(StageFinished(self.run_id, name, outcome["status"], duration,
                                     outcome["detail"] or detail))

    def _log_writer(self, relative_path, source):
        return _LogWriter(self.run_dir / relative_path, lambda line: self._emit(
            LogLine(self.run_id, source, line)))

    def _log_tail(self):
        path = self.run_dir / DRIVER_LOG
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])

    # -- the stages -----------------------------------------------------------------------------

    def drive(self):
        """Run every stage; return the terminal status. Never raises for a run that failed."""
        build_log = self._log_writer(BUILD_LOG, "build")
        driver_log = self._log_writer(DRIVER_LOG, "driver")
        exit_code = None
        try:
            record = self.store.get_run(self.run_id)
            self._advance(run_status.PREPARING)
            with self._stage_of("Preparing") as outcome:
                prepared = self.executor.prepare(record, build_log, self._cancel_requested)
                outcome["detail"] = prepared.detail
            self.store.update_run(self.run_id, image=prepared.image)

            self._advance(run_status.QUEUED)
            with self._stage_of("Scaling") as outcome:
                outcome["detail"] = f"1 node(s) requested, 1 allocated on {record['compute']}"

            self._advance(run_status.RUNNING)
            running = f"{record['spec']['script']} on {self.executor.name}"
            with self._stage_of("Running", running) as outcome:
                exit_code = self._run_script(record, prepared, driver_log)
                outcome["detail"] = f"{running}: exit code {exit_code}"
                if exit_code != 0:
                    outcome["status"] = "Failed"

            self._advance(run_status.FINALIZING)
            with self._stage_of("PostProcessing") as outcome:
                outcome["detail"] = self._post_process()
            return self._finish(exit_code)
        except _CancelRequested:
            return self._finish_canceled()
        except AmlocalError as error:
            self._fail(str(error), exit_code)
            return run_status.FAILED
        except BaseException as error:
            self._fail(f"amlocal failed while driving the run: {type(error).__name__}: {error}",
                       exit_code)
            raise
        finally:
            build_log.close()
            driver_log.close()
            self._remove_scratch()

    def _run_script(self, record, prepared, driver_log):
        self.job = self.executor.start(record, self.run_dir, RUNTIME_DIR, prepared, driver_log)
        self.store.update_run(self.run_id, **self.job.identity())
        while True:
            exit_code = self.job.wait(POLL_INTERVAL_S)
            self.store.ingest_telemetry(self.run_id)
            if exit_code is not None:
                return exit_code
            if self._cancel_requested():
                self.job.stop(STOP_GRACE_S)
                raise _CancelRequested()

    def _post_process(self):
        self._release_job()
        self.store.ingest_telemetry(self.run_id)
        outputs = [path for path in (self.run_dir / "outputs").rglob("*") if path.is_file()]
        size = sum(path.stat().st_size for path in outputs)
        return f"{len(outputs)} file(s), {size / 2**20:.2f} MB in ./outputs kept in run history"

    def _finish(self, exit_code):
        record = self.store.get_run(self.run_id)
        script = record["spec"]["script"]
        if exit_code != 0:
            error = f"{script} exited with code {exit_code}"
            tail = self._log_tail()
            self._advance(run_status.FAILED, exit_code=exit_code,
                          error=f"{error}; last lines of its log:\n{tail}" if tail else error)
            return run_status.FAILED
        if record["error"]:  # the script called Run.fail()
            self._advance(run_status.FAILED, exit_code=exit_code)
            return run_status.FAILED
        self._advance(run_status.COMPLETED, exit_code=exit_code)
        return run_status.COMPLETED

    def _finish_canceled(self):
        self._release_job()
        self.store.ingest_telemetry(self.run_id)
        self.store.set_status(self.run_id, run_status.CANCELED, error="Canceled by request")
        self._emit(StatusChanged(self.run_id, run_status.CANCELED))
        return run_status.CANCELED

    def _fail(self, message, exit_code):
        self._release_job()
        current = self.store.get_status(self.run_id)
        target = run_status.CANCELED if current == run_status.CANCEL_REQUESTED else run_status.FAILED
        if not run_status.is_terminal(current):
            self.store.set_status(self.run_id, target, error=message, exit_code=exit_code)
            self._emit(StatusChanged(self.run_id, target))

    def _release_job(self):
        if self.job is not None:
            if self.job.wait(0) is None:
                self.job.stop(STOP_GRACE_S)
            self.job.cleanup()
            self.job = None

    def _remove_scratch(self):
        shutil.rmtree(self.run_dir / "wd", ignore_errors=True)
