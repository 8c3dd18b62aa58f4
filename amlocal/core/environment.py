"""Mirrors `azureml.core.environment`."""

from amlocal.environment import Environment

__all__ = ["Environment"]
