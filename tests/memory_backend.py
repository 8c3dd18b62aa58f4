"""A backend that keeps its runs in memory, written for the tests: it proves that the command
line needs nothing of a backend but the Run interface (backends/base.py) and its factory seam
(cli/backends.py). A submitted run "runs" at once: it prints the script's name, logs one metric
per argument and ends Completed."""

import itertools

from amlocal.backends.base import Backend, LogLine, RunHandle, ignore_event
from amlocal.cli.backends import Backends
from amlocal.errors import RunNotFoundError


class MemoryRunHandle(RunHandle):
    def __init__(self, record):
        self.record = record
        self.id = record["id"]

    def get_status(self):
        return self.record["status"]

    def get_details(self):
        return dict(self.record)

    def get_detailed_status(self):
        return {"status": self.record["status"], "details": ""}

    def wait(self, on_event=ignore_event, timeout=None):
        for line in self.record["log"]:
            on_event(LogLine(self.id, "driver", line))
        return self.get_details()

    def stream_logs(self, follow=False):
        yield from self.record["log"]

    def cancel(self, force=False, reason=None):
        self.record["status"] = "Canceled"

    def get_metrics(self):
        return {name: [value] for name, value in self.record["metrics"].items()}

    def get_metric_records(self):
        return [{"name": name, "type": "scalar", "value": value, "step": None, "description": ""}
                for name, value in self.record["metrics"].items()]

    def get_file_names(self):
        return []

    def download_file(self, name, output_file_path=None):
        raise RunNotFoundError(f"run {self.id} has no file {name}")

    def download_files(self, prefix=None, output_directory=None):
        return []

    def get_children(self):
        return []

    def set_tags(self, tags, remove=()):
        self.record["tags"].update(tags)
        return self.record["tags"]

    def add_properties(self, properties):
        self.record["properties"].update(properties)
        return self.record["properties"]


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self):
        self.runs = {}
        self._numbers = itertools.count(1)

    def submit(self, spec, on_event=ignore_event, detach=False):
        number = next(self._numbers)
        run_id = f"{spec.experiment}_memory_{number}"
        self.runs[run_id] = {
            "id": run_id, "number": number, "experiment": spec.experiment, "status": "Completed",
            "backend": self.name, "executor": spec.executor, "compute": spec.compute,
            "script": spec.script, "arguments": list(spec.arguments), "inputs": {},
            "created_at": "2026-12-01T00:00:00.000Z", "duration_s": 0.5, "exit_code": 0,
            "error": None, "stages": [], "tags": dict(spec.tags), "properties": {},
            "sweep": None, "log": [f"ran {spec.script}"],
            "metrics": {f"argument_{index}": index for index, _ in enumerate(spec.arguments)},
        }
        handle = self.get_run(run_id)
        if not detach:
            handle.wait(on_event)
        return handle

    def get_run(self, run_id):
        if run_id not in self.runs:
            raise RunNotFoundError(f"no run with id {run_id}")
        return MemoryRunHandle(self.runs[run_id])

    def list_runs(self, experiment=None, limit=None):
        records = [handle.get_details() for handle in map(self.get_run, reversed(self.runs))
                   if experiment in (None, handle.record["experiment"])]
        return records[:limit]


class MemoryBackends(Backends):
    """The factory seam, giving one MemoryBackend for every backend name."""

    def __init__(self):
        self.backend = MemoryBackend()
        self.asked_for = []

    def get(self, name="local", workspace_config=None):
        self.asked_for.append(name)
        return self.backend

    def open_run(self, run_id):
        return self.backend.get_run(run_id)
