"""Mirrors `azureml.core.runconfig` (which also offers CondaDependencies)."""

from amlocal.environment import CondaDependencies
from amlocal.script_run_config import (DockerConfiguration, MpiConfiguration, PyTorchConfiguration,
                                       RunConfiguration, TensorflowConfiguration)

__all__ = ["CondaDependencies", "DockerConfiguration", "MpiConfiguration", "PyTorchConfiguration",
           "RunConfiguration", "TensorflowConfiguration"]
