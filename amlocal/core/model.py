"""Mirrors `azureml.core.model`."""

from amlocal.inference_config import InferenceConfig
from amlocal.model import Model

__all__ = ["InferenceConfig", "Model"]
