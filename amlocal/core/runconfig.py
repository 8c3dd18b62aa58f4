"""Mirrors `azureml.core.runconfig`."""

from amlocal.script_run_config import DockerConfiguration, RunConfiguration

__all__ = ["DockerConfiguration", "RunConfiguration"]
