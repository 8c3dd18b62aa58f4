"""Mirrors `azureml.core.conda_dependencies`."""

from amlocal.environment import CondaDependencies

__all__ = ["CondaDependencies"]
