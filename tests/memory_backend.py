"""A backend that keeps its runs in memory, written for the tests: it proves that the command
line and the SDK classes need nothing of a backend but the Run interface (backends/base.py,
backends/registries.py) and its factory seam (cli/backends.py).

A submitted run "runs" when it is driven: it prints the script's name, logs one metric per
argument, writes outputs/arguments.txt and ends Completed. Submitted with detach=False it is
driven at once; detached, it stays Running until it is waited for (or canceled). Tests change a
run's record (`backend.runs[id]`) to give it the files, log or metrics a script would leave.
"""

import io
import itertools
import time
from pathlib import Path

from amlocal.backends import status as run_status
from amlocal.backends.base import (Backend, LogLine, RunHandle, StatusChanged, download_target,
                                   downloads_under, ignore_event)
from amlocal.backends.registries import ModelRegistry
from amlocal.cli.backends import Backends
from amlocal.errors import RunNotFoundError, UserInputError

DRIVER_LOG = "azureml-logs/70_driver_log.txt"


class MemoryRunHandle(RunHandle):
    backend_name = "memory"

    def __init__(self, backend, record):
        self.backend = backend
        self.record = record
        self.id = record["id"]

    def _set_status(self, status):
        self.record["status"] = status
        self.record["status_history"].append((status, time.time()))

    def _drive(self):
        """What running the script does, once: its log, metrics and files; then Completed."""
        if run_status.is_terminal(self.record["status"]):
            return
        if self.record["status"] == run_status.CANCEL_REQUESTED:
            self._set_status(run_status.CANCELED)
            return
        self.record["log"].append(f"ran {self.record['script']}")
        self.record["exit_code"] = 0
        self._set_status(run_status.COMPLETED)

    def get_status(self):
        return self.record["status"]

    def get_details(self, refresh=True):
        return {key: value for key, value in self.record.items()
                if key not in ("log", "metrics", "files", "status_history")}

    def get_detailed_status(self):
        return {"status": self.record["status"], "details": ""}

    def get_status_history(self):
        return list(self.record["status_history"])

    def wait(self, on_event=ignore_event, timeout=None):
        for event in self.follow():
            on_event(event)
        return self.get_details()

    def follow(self, deadline=None):
        self._drive()
        for line in self.record["log"]:
            yield LogLine(self.id, "driver", line)
        yield StatusChanged(self.id, self.record["status"])

    def stream_logs(self, follow=False):
        if follow:
            self._drive()
        yield from self.record["log"]

    def cancel(self, force=False, reason=None):
        if run_status.is_terminal(self.record["status"]):
            return
        if reason:
            self.record["error"] = reason
        self._set_status(run_status.CANCEL_REQUESTED)
        self._set_status(run_status.CANCELED)

    def get_metrics(self):
        return {name: list(values) for name, values in self.record["metrics"].items()}

    def get_metric_records(self):
        return [{"name": name, "position": position, "type": "scalar", "value": value,
                 "step": None, "description": "", "logged_at": None, "damaged": False}
                for name, values in self.record["metrics"].items()
                for position, value in enumerate(values)]

    def get_file_names(self):
        return sorted(self.record["files"])

    def get_file_sizes(self):
        return {name: len(data) for name, data in sorted(self.record["files"].items())}

    def open_file(self, name):
        if name not in self.record["files"]:
            raise UserInputError(f"run {self.id} has no file {name}")
        return io.BytesIO(self.record["files"][name])

    def download_file(self, name, output_file_path=None):
        target = download_target(name, output_file_path)
        with self.open_file(name) as source:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
        return target

    def download_files(self, prefix=None, output_directory=None, append_prefix=True):
        root = Path(output_directory) if output_directory else Path.cwd()
        return [self.download_file(name, root / relative) for name, relative
                in downloads_under(self.get_file_names(), prefix, append_prefix)]

    def get_children(self):
        return [self.backend.get_run(child) for child in self.record["children"]]

    def set_tags(self, tags, remove=()):
        self.record["tags"].update(tags)
        for key in remove:
            self.record["tags"].pop(key, None)
        return dict(self.record["tags"])

    def add_properties(self, properties):
        for key, value in properties.items():
            if self.record["properties"].get(key, value) != value:
                raise UserInputError(f"property {key!r} of run {self.id} is already set")
        self.record["properties"].update(properties)
        return dict(self.record["properties"])

    def register_model(self, model_name, model_path=None, **metadata):
        prefix = (model_path or model_name).rstrip("/")
        parent = prefix.rpartition("/")[0]
        # The model keeps the path's last part, as the local registry does.
        files = {name[len(parent):].lstrip("/"): data
                 for name, data in self.record["files"].items()
                 if name == prefix or name.startswith(prefix + "/")}
        if not files:
            raise UserInputError(f"run {self.id} has no file or folder {prefix}")
        return self.backend.models().add(model_name, files, run_id=self.id, run_path=prefix,
                                         experiment_name=self.record["experiment"], **metadata)


class MemoryModels(ModelRegistry):
    """Models as {name: {version: record}}; a record's files are {name: bytes}."""

    def __init__(self, backend):
        self.backend = backend
        self.models = {}

    @property
    def home(self):
        return self.backend.home

    def add(self, name, files, run_id=None, experiment_name=None, run_path=None, tags=None,
            properties=None, description=None, framework=None, framework_version=None):
        """Keep `files` ({name in the model: bytes}) as the next version of model `name`."""
        versions = self.models.setdefault(name, {})
        version = max(versions, default=0) + 1
        versions[version] = {
            "name": name, "version": version, "id": f"{name}:{version}", "created_at": time.time(),
            "description": description, "framework": framework or "Custom",
            "framework_version": framework_version, "tags": dict(tags or {}),
            "properties": dict(properties or {}), "run_id": run_id, "run_path": run_path,
            "experiment_name": experiment_name, "path": f"memory:{name}/{version}",
            "files": [{"path": path, "size": len(data)} for path, data in sorted(files.items())],
            "size_bytes": sum(map(len, files.values())), "contents": dict(files)}
        return self.get(name, version)

    def register(self, name, source_paths, **metadata):
        files = {str(model_name): Path(path).read_bytes() for path, model_name in source_paths}
        return self.add(name, files, **metadata)

    def register_from_run(self, run_id, model_name, model_path=None, **metadata):
        return self.backend.get_run(run_id).register_model(model_name, model_path, **metadata)

    def get(self, name, version=None):
        from amlocal.backends.registries import ModelNotFoundError

        versions = self.models.get(name, {})
        version = max(versions, default=None) if version is None else int(version)
        if version not in versions:
            raise ModelNotFoundError(f"Model with name {name} version {version} not found")
        return {key: value for key, value in versions[version].items() if key != "contents"}

    def list(self, name=None, tags=None, properties=None, run_id=None, latest=False, **filters):
        records = [self.get(record["name"], record["version"]) for versions in self.models.values()
                   for record in versions.values() if name in (None, record["name"])]
        return sorted(records, key=lambda record: record["created_at"], reverse=True)

    def verified_path(self, name, version=None):
        raise UserInputError("models in memory have no path")

    def download(self, name, version, target_dir, exist_ok=False):
        contents = self.models[name][self.get(name, version)["version"]]["contents"]
        for file_name, data in contents.items():
            target = Path(target_dir) / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return Path(target_dir) / next(iter(contents)).split("/")[0]

    def update(self, name, version, tags=None, description=None, add_tags=None,
               remove_tags=None, add_properties=None):
        record = self.models[name][self.get(name, version)["version"]]
        record["tags"].update(add_tags or {})
        for key in remove_tags or ():
            record["tags"].pop(key, None)
        record["properties"].update(add_properties or {})
        if description is not None:
            record["description"] = description
        return dict(record)

    def delete(self, name, version):
        del self.models[name][self.get(name, version)["version"]]


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self, home="memory"):
        self.runs = {}
        self._numbers = itertools.count(1)
        self._home = home
        self._models = MemoryModels(self)

    @property
    def home(self):
        return self._home

    def models(self):
        return self._models

    def submit(self, spec, on_event=ignore_event, detach=False):
        spec = spec.validated()
        number = next(self._numbers)
        run_id = f"{spec.experiment}_memory_{number}"
        now = time.time()
        self.runs[run_id] = {
            "id": run_id, "number": number, "experiment": spec.experiment,
            "status": run_status.RUNNING, "backend": self.name, "executor": spec.executor,
            "compute": spec.compute, "script": spec.script, "arguments": list(spec.arguments),
            "inputs": {}, "created_at": "2026-12-01T00:00:00.000Z", "started_at": None,
            "ended_at": None, "duration_s": 0.5, "exit_code": None, "error": None,
            "stages": [], "tags": dict(spec.tags), "properties": {}, "sweep": None,
            "parent_id": None, "children": [], "node_count": spec.node_count, "nodes": [],
            "preemptions": 0, "image": None, "source_dir": str(spec.source_dir),
            "environment": {"recipe": spec.environment.recipe}, "run_dir": f"memory:{run_id}",
            "log": [], "status_history": [(run_status.NOT_STARTED, now),
                                          (run_status.RUNNING, now)],
            "metrics": {f"argument_{index}": [index] for index, _ in enumerate(spec.arguments)},
            "files": {"outputs/arguments.txt": " ".join(spec.arguments).encode()},
        }
        handle = self.get_run(run_id)
        if not detach:
            handle.wait(on_event)
        return handle

    def get_run(self, run_id):
        if run_id not in self.runs:
            raise RunNotFoundError(f"no run with id {run_id}")
        return MemoryRunHandle(self, self.runs[run_id])

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
