"""Mirrors `azureml.train._distributed_training`: the estimators' (deprecated) distributed_training
values, `Mpi`, `Gloo`, `Nccl` and `ParameterServer`, importable from amlocal.train.dnn as from
azureml.train.dnn. Each names the estimators that take it, as azureml-train-core's do."""

import logging

from amlocal.backends.base import DistributionSpec
from amlocal.model_errors import UserErrorException

logger = logging.getLogger("amlocal")

# The estimator classes' names (lower case) as azureml-train-core lists them.
_PYTORCH, _TENSORFLOW, _CHAINER, _GENERIC, _LIGHTGBM = (
    "pytorch", "tensorflow", "chainer", "estimator", "lightgbm")


class TrainingException(UserErrorException):
    """azureml.exceptions.TrainingException: an estimator azureml-train-core refuses."""


class DistributedTraining:
    """What each distributed_training value shares: which estimators take it."""

    _supported_frameworks = ()

    def validate(self, estimator_name):
        if estimator_name.lower() not in self._supported_frameworks:
            raise TrainingException(f"Unsupported framework for {type(self).__name__} distributed "
                                    f"training type. Supported frameworks are: "
                                    f"{list(self._supported_frameworks)}")


class Mpi(DistributedTraining):
    """An MPI job of process_count_per_node ranks on each node (DEPRECATED in azureml: use
    MpiConfiguration with ScriptRunConfig)."""

    _supported_frameworks = (_PYTORCH, _TENSORFLOW, _CHAINER, _GENERIC, _LIGHTGBM)

    def __init__(self, process_count_per_node=1):
        logger.warning("'Mpi' is deprecated. Please use 'azureml.core.runconfig.MpiConfiguration' "
                       "with 'ScriptRunConfig' from 'azureml.core.runconfig'.")
        self.process_count_per_node = process_count_per_node

    def _distribution(self):
        return DistributionSpec(kind="mpi", process_count_per_node=self.process_count_per_node)

    def __str__(self):
        return "mpi"


class _PyTorchBackend(DistributedTraining):
    """Gloo and Nccl: a PyTorch job of one process per node meeting through that backend."""

    _supported_frameworks = (_PYTORCH, _GENERIC)

    def __init__(self):
        logger.warning(f"'{type(self).__name__}' is deprecated. Please use "
                       "'azureml.core.runconfig.PyTorchConfiguration' with 'ScriptRunConfig' from "
                       "'azureml.core.runconfig, and set the 'PyTorchConfiguration' "
                       f"'communication_backend' parameter to '{type(self).__name__}'.")

    def _distribution(self):
        return DistributionSpec(kind="pytorch", communication_backend=type(self).__name__)

    def __str__(self):
        return type(self).__name__.lower()


class Gloo(_PyTorchBackend):
    """PyTorch's Gloo backend (CPU)."""


class Nccl(_PyTorchBackend):
    """PyTorch's NCCL backend (GPU)."""


class ParameterServer(DistributedTraining):
    """TensorFlow's parameter servers: accepted by the TensorFlow and generic estimators in
    azureml, refused by amlocal (not emulated) when an estimator is given it."""

    _supported_frameworks = (_TENSORFLOW, _GENERIC)

    def __init__(self, worker_count=1, parameter_server_count=1):
        logger.warning("'ParameterServer' is deprecated. Use the "
                       ":class:`azureml.core.runconfig.TensorflowConfiguration` class.")
        self.worker_count = worker_count
        self.parameter_server_count = parameter_server_count

    def __str__(self):
        return "ps"
