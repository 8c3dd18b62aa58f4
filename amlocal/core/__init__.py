"""Mirrors `azureml.core`, so that SDK v1 code runs here with `azureml` changed to `amlocal`
in its import lines: `from amlocal.core import Workspace, Experiment, ScriptRunConfig, ...`."""

from amlocal import __version__
from amlocal.compute import ComputeTarget
from amlocal.datastore import Datastore
from amlocal.environment import Environment
from amlocal.experiment import Experiment
from amlocal.model import Model
from amlocal.run import Run
from amlocal.script_run_config import RunConfiguration, ScriptRunConfig
from amlocal.workspace import Workspace

VERSION = __version__

__all__ = ["ComputeTarget", "Datastore", "Environment", "Experiment", "Model", "Run",
           "RunConfiguration", "ScriptRunConfig", "VERSION", "Workspace"]
