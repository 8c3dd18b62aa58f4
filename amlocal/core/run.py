"""Mirrors `azureml.core.run`."""

from amlocal.run import Run

__all__ = ["Run"]
