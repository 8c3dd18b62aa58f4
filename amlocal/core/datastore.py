"""Mirrors `azureml.core.datastore`."""

from amlocal.datastore import Datastore

__all__ = ["Datastore"]
