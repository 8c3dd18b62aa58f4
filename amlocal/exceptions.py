"""Mirrors `azureml.exceptions`: the error classes SDK v1 code catches."""

from amlocal.compute import ComputeTargetException
from amlocal.model import (ModelNotFoundException, ModelPathNotFoundException, UserErrorException,
                           WebserviceException)
from amlocal.run import ActivityFailedException, ExperimentExecutionException
from amlocal.workspace import WorkspaceException

__all__ = ["ActivityFailedException", "ComputeTargetException", "ExperimentExecutionException",
           "ModelNotFoundException", "ModelPathNotFoundException", "UserErrorException",
           "WebserviceException", "WorkspaceException"]
