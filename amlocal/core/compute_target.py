"""Mirrors `azureml.core.compute_target`."""

from amlocal.compute import ComputeTargetException

__all__ = ["ComputeTargetException"]
