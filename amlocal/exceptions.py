"""Mirrors `azureml.exceptions`: the error classes SDK v1 code catches."""

from amlocal.compute import ComputeTargetException
from amlocal.model import (ModelNotFoundException, ModelPathNotFoundException, UserErrorException,
                           WebserviceException)
from amlocal.run import ActivityFailedException, ExperimentExecutionException
from amlocal.script_run_config import RunConfigurationException
from amlocal.train.distributed_training import TrainingException
from amlocal.workspace import WorkspaceException

__all__ = ["ActivityFailedException", "ComputeTargetException", "ExperimentExecutionException",
           "ModelNotFoundException", "ModelPathNotFoundException", "RunConfigurationException",
           "TrainingException", "UserErrorException", "WebserviceException", "WorkspaceException"]
