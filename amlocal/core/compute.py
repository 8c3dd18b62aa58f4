"""Mirrors `azureml.core.compute`."""

from amlocal.compute import AmlCompute, ComputeTarget

__all__ = ["AmlCompute", "ComputeTarget"]
