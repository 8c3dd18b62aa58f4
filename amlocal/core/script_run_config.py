"""Mirrors `azureml.core.script_run_config`."""

from amlocal.script_run_config import ScriptRunConfig

__all__ = ["ScriptRunConfig"]
