"""The Azure backend: runs submitted to Azure ML with azureml-core (SDK v1), the `azure` extra.

Importing this package imports no azureml module; the translation (translate_v1.py) and the
seam to Azure (session.py) import azureml-core when they are first used.
"""

from amlocal.backends.azure.backend import AzureBackend
from amlocal.backends.azure.run_handle import AzureRunHandle

__all__ = ["AzureBackend", "AzureRunHandle"]
