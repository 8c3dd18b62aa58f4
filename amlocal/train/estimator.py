"""`Estimator`: azureml-train-core's (deprecated) way of describing a training run.

An estimator becomes the same RunSpec a ScriptRunConfig does. script_params become arguments
({'--epochs': 10} -> ['--epochs', '10']; a value '' gives the flag alone; a DataReference value
becomes a named input whose in-run path is passed). node_count with distributed_training
(Mpi(), Gloo(), Nccl(), an MpiConfiguration) or distributed_backend='mpi' gives the spec's
distribution, under azureml-train-core's rules for which estimator takes which.
"""

import logging

from amlocal.backends.base import DistributionSpec, EnvironmentSpec, RunSpec
from amlocal.datastore import DataReference, collect_inputs
from amlocal.errors import UserInputError
from amlocal.script_run_config import MpiConfiguration, target_name
from amlocal.train.distributed_training import (DistributedTraining, ParameterServer,
                                                TrainingException)

logger = logging.getLogger("amlocal")


def estimator_distribution(estimator, node_count, process_count_per_node, distributed_backend,
                           distributed_training):
    """The DistributionSpec an estimator's distributed arguments ask for (None: not
    distributed), with the TrainingException azureml-train-core raises for each it refuses."""
    if node_count < 1:
        raise TrainingException("Node count should be at least 1.")
    if process_count_per_node < 1:
        raise TrainingException("Process count per node should be at least 1.")
    supported = estimator._supported_backends
    if distributed_backend:
        if str(distributed_backend).lower() not in supported:
            raise TrainingException(f"Unsupported distributed backend value: "
                                    f"{distributed_backend}. Supported backend(s): {list(supported)}.")
        if (supported == ("mpi",) and distributed_training
                and not isinstance(distributed_training, MpiConfiguration)):
            # (azureml-train-core's wording, for Mpi() beside distributed_backend='mpi'.)
            raise TrainingException(f"Unsupported distributed backend value: "
                                    f"{distributed_backend}. Supported backend: mpi.")
    if isinstance(distributed_training, DistributedTraining):
        distributed_training.validate(type(estimator).__name__.lower())
    if not distributed_backend and not distributed_training and (node_count > 1
                                                                 or process_count_per_node > 1):
        raise TrainingException("'distributed_backend' or 'distributed_training' must be "
                                "specified when node_count > 1 or process_count_per_node > 1.")
    if distributed_training is not None:
        if isinstance(distributed_training, ParameterServer):
            raise TrainingException("ParameterServer (TensorFlow's parameter servers) is not "
                                    "emulated by amlocal: use Mpi()")
        if isinstance(distributed_training, MpiConfiguration):
            return DistributionSpec(kind="mpi",
                                    process_count_per_node=distributed_training.process_count_per_node)
        if isinstance(distributed_training, DistributedTraining):
            return distributed_training._distribution()
        # (azureml-train-core ignores anything else here; a silent single-process run would
        # hide the mistake.)
        raise TrainingException(f"distributed_training must be Mpi(), Gloo(), Nccl() or an "
                                f"MpiConfiguration, got {distributed_training!r}")
    if distributed_backend:
        return DistributionSpec(kind="mpi", process_count_per_node=process_count_per_node)
    return None


def script_params_to_arguments(script_params, inputs):
    arguments = []
    for key, value in (script_params or {}).items():
        arguments.append(str(key))
        if value is not None and value != "":
            arguments.extend(collect_inputs([value], inputs))
    return arguments


class Estimator:
    """A training script with its parameters, compute target and packages."""

    _recipe = "python"
    _supported_backends = ("mpi",)  # azureml-train-core's _SUPPORTED_BACKENDS

    def __init__(self, source_directory, *, compute_target=None, vm_size=None, vm_priority=None,
                 entry_script=None, script_params=None, node_count=1, process_count_per_node=1,
                 distributed_backend=None, distributed_training=None, use_gpu=False,
                 use_docker=True, custom_docker_base_image=None, custom_docker_image=None,
                 image_registry_details=None, user_managed=False, conda_packages=None,
                 pip_packages=None, conda_dependencies_file_path=None,
                 pip_requirements_file_path=None, conda_dependencies_file=None,
                 pip_requirements_file=None, environment_variables=None,
                 environment_definition=None, inputs=None, source_directory_data_store=None,
                 shm_size=None, resume_from=None, max_run_duration_seconds=None, **_ignored):
        if entry_script is None:
            raise UserInputError("entry_script is required")
        if vm_size and compute_target is None:
            raise UserInputError("vm_size without a compute_target is not emulated: create a "
                                 "target of that size (amlocal compute create) and pass it")
        self.distribution = estimator_distribution(self, node_count, process_count_per_node,
                                                   distributed_backend, distributed_training)
        if conda_packages or conda_dependencies_file_path or conda_dependencies_file:
            raise UserInputError("conda packages are not supported by amlocal (its images have no "
                                 "conda): list them in pip_packages")
        if environment_definition is not None:
            self._environment = environment_definition._to_spec()
        else:
            packages = list(pip_packages or [])
            requirements = pip_requirements_file_path or pip_requirements_file
            if requirements:
                with open(requirements, encoding="utf-8") as handle:
                    packages += [line.split("#", 1)[0].strip() for line in handle
                                 if line.split("#", 1)[0].strip()]
            self._environment = EnvironmentSpec(
                recipe=self._recipe, pip_packages=tuple(packages),
                base_image=custom_docker_image or custom_docker_base_image)
        self.source_directory = source_directory
        self.entry_script = entry_script
        self.script_params = dict(script_params or {})
        self.compute_target = compute_target
        self.node_count = node_count
        self.use_gpu = use_gpu
        self.use_docker = use_docker
        self.environment_variables = dict(environment_variables or {})
        self.inputs = list(inputs or [])
        self.max_run_duration_seconds = max_run_duration_seconds

    def _to_spec(self, experiment_name, tags=None):
        inputs = {}
        arguments = script_params_to_arguments(self.script_params, inputs)
        for reference in self.inputs:
            if isinstance(reference, DataReference):
                inputs[reference.data_reference_name] = reference.host_path
        return RunSpec(
            source_dir=self.source_directory, script=self.entry_script,
            arguments=tuple(arguments), experiment=experiment_name, inputs=inputs,
            environment=self._environment, executor=None if self.use_docker else "process",
            compute=target_name(self.compute_target), node_count=self.node_count,
            distribution=self.distribution,
            max_run_duration_seconds=self.max_run_duration_seconds, tags=dict(tags or {}),
            environment_variables=self.environment_variables, use_gpu=self.use_gpu)
