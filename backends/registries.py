"""The two registries a Backend may keep beside its runs, as the Run interface declares them:
models (Backend.models()) and compute targets (Backend.compute_targets()). The CLI and the SDK's
Model and ComputeTarget use nothing else of them."""

import abc

# The rules and errors of the registries that their callers above backends/ need, re-exported
# from where the implementations define them, so that those callers import only this module.
from amlocal.backends.history import models as _history_models
from amlocal.backends.history.models import (
    FRAMEWORK_VERSION_WITHOUT_FRAMEWORK, MODEL_NAME_RULE, ModelNotFoundError,
    ModelPathNotFoundError, collect_local_files, is_valid_model_name, parse_model_id)
from amlocal.backends.history.store import iso_time
from amlocal.backends.history.compute_targets import (
    DEFAULT_IDLE_SECONDS, LOCAL_TARGET, PRIORITIES, ComputeTargetError)


class ModelRegistry(abc.ABC):
    """A backend's registered models: named, versioned copies of files (Backend.models()).

    A model's record: {id (NAME:VERSION), name, version, created_at (unix time), description,
    framework, framework_version, tags, properties, run_id, run_path, experiment_name (None for
    local files), path (where its copy is), files: [{path, size}], size_bytes}; list() may give
    a damaged one as {name, version, corrupted}.
    """

    @property
    @abc.abstractmethod
    def home(self):
        """The folder of the run history whose models these are."""

    @abc.abstractmethod
    def register(self, name, source_paths, **metadata):
        """Register local files ([(name in the model, host path)], see collect_local_files) as
        the next version of model `name`; return its record {name, version, id, files, ...}."""

    @abc.abstractmethod
    def register_from_run(self, run_id, model_name, model_path=None, **metadata):
        """Register a run's file or folder as the next version of `model_name`; its record."""

    @abc.abstractmethod
    def get(self, name, version=None):
        """The record of a model's version (default: the latest); ModelNotFoundError if none."""

    @abc.abstractmethod
    def list(self, name=None, tags=None, properties=None, run_id=None, latest=False, **filters):
        """Records of the models that match, newest first."""

    @abc.abstractmethod
    def verified_path(self, name, version=None):
        """The path of the registry's own copy of a model (default: the latest version), after
        checking it against what was registered (RunRecordCorruptedError if it differs)."""

    @abc.abstractmethod
    def download(self, name, version, target_dir, exist_ok=False):
        """Copy a model's files into target_dir (checked first); return the path written."""

    @abc.abstractmethod
    def update(self, name, version, **changes):
        """Change a version's tags, properties or description; return its record."""

    @abc.abstractmethod
    def delete(self, name, version):
        """Delete one version of a model."""


class ComputeTargetRegistry(abc.ABC):
    """A backend's compute targets (Backend.compute_targets()), AmlCompute-like clusters.

    A target's settings are a TargetSpec-like object with name, vm_size, vm_priority, min_nodes,
    max_nodes, idle_seconds_before_scaledown, allow_overcommit and emulate_gpus.
    """

    @abc.abstractmethod
    def create_target(self, name, vm_size, max_nodes, **settings):
        """Create a target (settings: min_nodes, idle_seconds_before_scaledown, vm_priority,
        allow_overcommit, emulate_gpus); return its settings; UserInputError if it is invalid,
        ComputeTargetError if the name is taken."""

    @abc.abstractmethod
    def get(self, name):
        """A target's settings; ComputeTargetError (an AmlocalError) if there is none."""

    @abc.abstractmethod
    def names(self):
        """The targets' names, the built-in `local` first."""

    @abc.abstractmethod
    def delete(self, name):
        """Delete a target no run uses or waits for."""

    @abc.abstractmethod
    def status(self, name):
        """AmlComputeStatus.serialize()'s shape: nodes by state, scale settings, ..."""

    @abc.abstractmethod
    def describe(self, name):
        """A JSON-ready view of one target: its settings, node size, nodes, queue and status."""

    @abc.abstractmethod
    def preempt(self, name, run_id=None):
        """Take the nodes of a low-priority target's running runs away; the runs preempted."""

    @abc.abstractmethod
    def vm_sizes(self):
        """{VM size name: its per-node cores, memory_gib, gpus, gpu_model}."""

    @abc.abstractmethod
    def fitting_flags(self, vm_size, nodes, **settings):
        """The fewest of ('allow_overcommit', 'emulate_gpus') that make a target of `nodes`
        nodes of vm_size valid on this host, beside its other `settings` (name and those
        create_target takes): () if it is valid as it is, None if no flags make it valid."""

    @abc.abstractmethod
    def host_summary(self):
        """{'cores', 'memory_gib', 'gpus', 'text'}: what the targets' nodes are slots of."""


class HistoryModelRegistry(_history_models.ModelRegistry, ModelRegistry):
    """The models of a run history (backends/history/models.py), which both backends keep."""

    @property
    def home(self):
        return self.store.home


__all__ = ["HistoryModelRegistry", "ComputeTargetRegistry", "ModelRegistry",
           "DEFAULT_IDLE_SECONDS", "LOCAL_TARGET", "PRIORITIES", "ComputeTargetError",
           "FRAMEWORK_VERSION_WITHOUT_FRAMEWORK",
           "MODEL_NAME_RULE", "ModelNotFoundError", "ModelPathNotFoundError",
           "collect_local_files", "is_valid_model_name", "iso_time", "parse_model_id"]
