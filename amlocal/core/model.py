"""Mirrors `azureml.core.model`."""

from amlocal.model import Model

__all__ = ["Model"]
