"""Mirrors `azureml.core.workspace`."""

from amlocal.workspace import Workspace

__all__ = ["Workspace"]
